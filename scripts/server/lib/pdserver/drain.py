"""Retiring web containers the proxy no longer routes to, without cutting a request:
after DRAIN_SECONDS, and once each has answered every connection it was sent (read from
its own /proc/net/tcp), stopped gracefully. Used by the slots switch for the old
version, for containers a killed deploy left, and for a new version it undoes."""

from __future__ import annotations

import time

from . import compose
from . import containers as ct
from . import env as envs
from . import run as runner

IDLE_WAIT = 30  # seconds, at most, for retired containers to answer what they were sent


def retire(env: envs.Env, ids: list, what: str, keep: bool = False) -> int:
    """Stop containers the proxy no longer routes to: after DRAIN_SECONDS (requests that
    chose them just before the flip reach them), once they answered everything they were
    sent; each finishes what it serves (docker stop: SIGTERM, then its grace period).
    KEEP: drained only, left running (kept for an instant rollback: warm.py)."""
    web = env["WEB_SERVICE"]
    if not ids:
        print(f"no {what} {web} container to retire", flush=True)
        return 0
    time.sleep(int(env["DRAIN_SECONDS"]))
    wait_idle(env, ids, what)
    if keep:
        kept = "kept stopped" if env["WARM_KEEP"] == "stopped" else "kept running, idle,"
        print(
            f"retired {len(ids)} {what} {web} container(s) after they finished their requests, {kept} for an instant "
            "rollback",
            flush=True,
        )
        return 0
    if (
        runner.output(compose.docker(env, "stop", *ids))[0] == 0
        and runner.output(compose.docker(env, "rm", *ids))[0] == 0
    ):
        print(f"retired {len(ids)} {what} {web} container(s) after they finished their requests", flush=True)
        return 0
    print(f"warning: could not remove the {what} {web} container(s): {' '.join(ids)}", flush=True)
    return 1


def wait_idle(env: envs.Env, ids: list, what: str) -> None:
    """Until the containers answered every request they were sent (none open in 3
    samples in a row, 0.1 s apart), at most IDLE_WAIT seconds. A server slowed down by
    load still holds requests the proxy sent before the switch, queued in its
    listening socket: stopping it then would reset them."""
    started, quiet = time.monotonic(), 0
    while True:
        total = 0
        for container in ids:
            open_now = open_requests(env, container)
            if open_now is None:
                return  # cannot tell: DRAIN_SECONDS alone decides
            total += open_now
        quiet = quiet + 1 if total == 0 else 0
        waited = time.monotonic() - started
        if quiet >= 3:
            break
        if waited >= IDLE_WAIT:
            print(
                f"warning: the {what} {env['WEB_SERVICE']} container(s) still had {total} request(s) open "
                f"after {int(waited)}s: stopping them anyway",
                flush=True,
            )
            return
        time.sleep(0.1)
    if waited >= 0.5:
        print(
            f"the {what} {env['WEB_SERVICE']} container(s) answered their last requests {waited:.1f}s after the drain",
            flush=True,
        )


def open_requests(env: envs.Env, container: str):
    """Connections the container's server still owes an answer on, accepted or queued in its
    listening socket (ESTABLISHED, SYN_RECV or CLOSE_WAIT on a port it listens on), read in
    its network namespace; None if unreadable."""
    rc, pid = ct.docker_out(env, "inspect", "-f", "{{.State.Pid}}", container)
    table = ""
    if rc == 0 and pid.strip().isdigit() and int(pid) > 0:
        for name in ("tcp", "tcp6"):
            try:
                with open(f"/proc/{pid.strip()}/net/{name}") as file:
                    table += file.read()
            except OSError:
                pass
    if not table:
        rc, table = ct.docker_out(env, "exec", container, "cat", "/proc/net/tcp", "/proc/net/tcp6")
        if rc != 0 and not table:
            return None
    rows = [line.split() for line in table.splitlines()]
    rows = [
        (row[1].rsplit(":", 1)[1], row[3])
        for row in rows
        if len(row) > 3 and row[0].endswith(":") and row[0][:-1].isdigit()
    ]
    listening = {port for port, st in rows if st == "0A"}
    return sum(1 for port, st in rows if port in listening and st in ("01", "03", "08"))
