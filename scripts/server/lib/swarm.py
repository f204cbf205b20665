"""pushdeploy server side, engine swarm: what the Docker JSON says, as plain lines for lib/swarm.sh.

Run as `python3 -I swarm.py COMMAND ...` with Docker's JSON on stdin. No Docker
calls here: bash asks Docker, this file only reads what came back, so every rule
is covered by table tests (tests/unit/test_swarm.py).

  problems VERSION           stdin: `docker compose config --format json` rendered with
                             VERSION; prints what stops a safe rolling deploy, one a line
  release WEB ENVFILE        stdin: the same; writes WEB's environment to ENVFILE and prints
                             image=, network=, network_attachable=, mount= lines for the
                             one-off container that migrates
  watch PHASE SINCE          stdin: {"services": [...], "tasks": [...], "nodes": [...]} from
                             `docker inspect`; prints STATE<TAB>SERVICE<TAB>DETAIL lines
                             (STATE: converged, updating or failed) and down<TAB>NODE lines
"""

from __future__ import annotations

import json
import sys
from datetime import datetime

FAILED_UPDATE = ("paused", "rollback_paused")
MOVING_UPDATE = ("updating", "rollback_started")


def updated_services(config: dict, version: str) -> list[str]:
    """The services a deploy of VERSION changes: those whose image is tagged with it."""
    return sorted(
        name
        for name, service in (config.get("services") or {}).items()
        if str(service.get("image", "")).endswith(":" + version)
    )


def _network_names(config: dict, service: dict) -> list[str]:
    networks = service.get("networks") or {"default": None}
    return list(networks) if isinstance(networks, dict) else list(networks)


def problems(config: dict, version: str, roles: dict | None = None) -> list[str]:
    """What in the stack file would make a rolling deploy unsafe or impossible, said as what to do.
    ROLES: service name -> worker or scheduler (`roles:`); a scheduler is one task, replaced
    stop-first (never two at once), a worker needs no health check."""
    found = []
    roles = roles or {}
    services = updated_services(config, version)
    if not services:
        found.append(
            "no service's image is tagged with ${VERSION}: a deploy would change nothing (image: registry/app:${VERSION})"
        )
    for name in sorted(set(roles) - set(config.get("services") or {})):
        found.append(f"role {name}: the stack file has no service {name}: add it, or remove it from `roles:`")
    for name in services:
        service = config["services"][name]
        deploy = service.get("deploy") or {}
        update = deploy.get("update_config") or {}
        if roles.get(name) == "scheduler":
            if str(deploy.get("replicas", 1)) != "1" or deploy.get("mode", "replicated") != "replicated":
                found.append(f"role {name} (scheduler): set `deploy.replicas: 1`: exactly one runs")
            if update.get("order", "stop-first") != "stop-first":
                found.append(
                    f"role {name} (scheduler): set `deploy.update_config.order: stop-first`: the old one "
                    "stops before its successor starts"
                )
            continue
        if update.get("order") != "start-first":
            found.append(
                f"service {name}: deploy.update_config.order is {update.get('order') or 'stop-first (the default)'}: "
                "set `order: start-first` so a new task serves beside the old one until it is healthy"
            )
        if update.get("failure_action", "pause") == "continue":
            found.append(
                f"service {name}: deploy.update_config.failure_action is continue: set pause or rollback, "
                "so a failing task stops the update"
            )
        health = service.get("healthcheck") or {}
        if name not in roles and (not health.get("test") or health.get("disable")):
            found.append(
                f"service {name}: no healthcheck: in the compose file: give it one, so swarm starts "
                "replacing old tasks only once a new one answers (a HEALTHCHECK in the image is not checked here)"
            )
        for network in _network_names(config, service):
            spec = (config.get("networks") or {}).get(network) or {}
            if spec.get("external"):
                continue
            if spec.get("driver", "overlay") != "overlay" or not spec.get("attachable"):
                found.append(
                    f"network {network} (of {name}): set `driver: overlay` and `attachable: true`: "
                    "migrations run in a one-off container of the new image on the stack's network"
                )
    return found


def release(config: dict, web: str, env_file: str) -> list[str]:
    """The one-off container's settings, as lines; WEB's environment goes to env_file."""
    service = (config.get("services") or {}).get(web)
    if not service:
        raise SystemExit(f"the stack has no service {web!r} (web_service)")
    lines = [f"image={service['image']}"]
    networks = _network_names(config, service)
    spec = (config.get("networks") or {}).get(networks[0]) or {}
    lines.append(f"network={spec.get('name') or networks[0]}")
    lines.append(f"network_attachable={'yes' if spec.get('attachable') or spec.get('external') else 'no'}")
    volumes = config.get("volumes") or {}
    for mount in service.get("volumes") or []:
        source, kind = mount.get("source", ""), mount.get("type", "volume")
        if kind == "volume" and source:
            source = (volumes.get(source) or {}).get("name") or source
        elif kind != "bind":
            continue
        lines.append(f"mount={source}:{mount['target']}{':ro' if mount.get('read_only') else ''}")
    environment = service.get("environment") or {}
    with open(env_file, "w") as out:
        for key, value in sorted(environment.items()):
            value = "" if value is None else str(value)
            if "\n" in value:
                raise SystemExit(f"{web}: the value of {key} spans lines: a one-off container cannot take it")
            out.write(f"{key}={value}\n")
    return lines


def _epoch(stamp: str | None) -> float:
    if not stamp:
        return 0.0
    whole, _, fraction = stamp.rstrip("Z").partition(".")  # Docker gives nanoseconds: keep microseconds
    try:
        return datetime.fromisoformat(whole + "+00:00").timestamp() + float("0." + (fraction[:6] or "0"))
    except ValueError:
        return 0.0


def _tag(image: str) -> str:
    return image.split("@")[0].rsplit(":", 1)[-1] if ":" in image.split("@")[0].rsplit("/", 1)[-1] else "latest"


def watch(data: dict, phase: str, since: float) -> list[str]:
    """Each service's state after a `stack deploy` at `since` (epoch seconds).

    converged: the update (if one started since) completed and the desired number
    of tasks run the service's current image; failed: swarm paused the update, or
    (while deploying, not while rolling back) rolled it back itself; else updating.
    """
    nodes = {node["ID"]: node for node in data.get("nodes") or []}
    down = {nid for nid, node in nodes.items() if (node.get("Status") or {}).get("State") != "ready"}
    hostname = {nid: (node.get("Description") or {}).get("Hostname") or nid[:12] for nid, node in nodes.items()}
    lines = [f"down\t{hostname[nid]}" for nid in sorted(nodes) if nid in down]
    for service in sorted(data.get("services") or [], key=lambda s: s["Spec"]["Name"]):
        tasks = [t for t in data.get("tasks") or [] if t.get("ServiceID") == service["ID"]]
        lines.append(_service_line(service, tasks, nodes, down, hostname, phase, since))
    return lines


def _service_line(service: dict, tasks: list, nodes: dict, down: set, hostname: dict, phase: str, since: float) -> str:
    """STATE<TAB>SERVICE<TAB>DETAIL for one service of the stack."""
    spec = service["Spec"]
    name, image = spec["Name"], spec["TaskTemplate"]["ContainerSpec"]["Image"]
    mode = spec.get("Mode") or {}
    wanted = [t for t in tasks if t.get("DesiredState") == "running"]
    if "Replicated" in mode:
        replicas = int(mode["Replicated"].get("Replicas", 1))
    else:  # global: one a node that is up
        replicas = len(
            [t for t in wanted if (nodes.get(t.get("NodeID")) or {}).get("Status", {}).get("State") == "ready"]
        )
    current = [t for t in wanted if t["Status"]["State"] == "running" and t["Spec"]["ContainerSpec"]["Image"] == image]
    where = ",".join(sorted({hostname.get(t.get("NodeID"), "?") for t in current})) or "no node"
    detail = f"{len(current)}/{replicas} running {_tag(image)} on {where}" + _failures(tasks, hostname, since)
    update = service.get("UpdateStatus") or {}
    state = update.get("State") if _epoch(update.get("StartedAt")) >= since else None
    if update.get("Message") and state:
        detail += f"; swarm: {update['Message']}"
    # A node that stopped answering keeps swarm's update waiting for its old
    # task to stop, possibly for ever; every task that should run does, elsewhere.
    others = [t for t in wanted if t not in current and t.get("NodeID") not in down]
    # Tasks of another image still running on a node that answers (swarm asked
    # them to stop, or has not yet): until they stop, they are served too.
    strays = [
        t
        for t in tasks
        if t["Status"]["State"] == "running"
        and t["Spec"]["ContainerSpec"]["Image"] != image
        and t.get("NodeID") not in down
    ]
    if strays:
        stray_tags = ",".join(sorted({_tag(t["Spec"]["ContainerSpec"]["Image"]) for t in strays}))
        detail += f"; {len(strays)} task(s) of {stray_tags} still running on {','.join(sorted({hostname.get(t.get('NodeID'), '?') for t in strays}))}"
    waits_for_down = state in MOVING_UPDATE and down and len(current) >= replicas and not others
    # More tasks than replicas run the current image (a task that failed its health check
    # was replaced while the update replaced it too): swarm stops the extra one soon.
    surplus = len([t for t in current if t.get("NodeID") not in down]) - replicas if "Replicated" in mode else 0
    if surplus > 0:
        detail += f"; {surplus} more than the {replicas} wanted, swarm stops them"
    if waits_for_down:
        detail += f"; swarm's update still waits for {','.join(sorted(hostname[n] for n in down))} (down)"
    if state in FAILED_UPDATE or (state == "rollback_completed" and phase == "deploy"):
        return f"failed\t{name}\t{detail}"
    if surplus > 0 or (not waits_for_down and (state in MOVING_UPDATE or len(current) < replicas or strays)):
        return f"updating\t{name}\t{detail}"
    return f"converged\t{name}\t{detail}"


def _failures(tasks: list, hostname: dict, since: float) -> str:
    """'; N task(s) failed, last on HOST: WHY' for tasks that failed since the deploy, or ''."""
    failures = [
        t
        for t in tasks
        if t["Status"]["State"] in ("failed", "rejected") and _epoch(t["Status"].get("Timestamp")) >= since
    ]
    if not failures:
        return ""
    last = max(failures, key=lambda t: t["Status"].get("Timestamp", ""))
    message = last["Status"].get("Err") or last["Status"].get("Message") or last["Status"]["State"]
    return f"; {len(failures)} task(s) failed, last on {hostname.get(last.get('NodeID'), '?')}: {message}"


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    data = json.load(sys.stdin)
    if command == "problems":
        out = problems(data, args[0], dict(word.split(":", 1) for word in args[1:]))
    elif command == "release":
        out = release(data, args[0], args[1])
    elif command == "watch":
        out = watch(data, args[0], float(args[1]))
    else:
        print(f"unknown command {command!r}", file=sys.stderr)
        return 64
    for line in out:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
