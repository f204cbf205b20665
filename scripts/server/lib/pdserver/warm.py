"""The previous version's web containers, kept ready for an instant rollback (switch: slots).

After a deploy the old containers, once drained, are kept for WARM_ROLLBACK seconds, out of
the service's name (only their slot's name, which the proxy no longer asks for), as WARM_KEEP
says:
  stopped  (the default) no CPU, no memory, gone from `docker ps`; a rollback starts them
           again, so it waits for the app server to start (gunicorn and Django: 0.6-0.8 s);
  running  idle, at Docker's lowest CPU weight, holding their memory; a rollback starts
           nothing (the switch 0.4 s into the run, measured). Their own health checks keep
           running, and they show in `docker ps` until they go.
Not paused: a paused gunicorn thawed after more than its --timeout kills every worker (their
heartbeats look stale) and starts them again, as slow as stopped, measured. What running ones
hold (memory, the CPU their health checks used) is read from their cgroups for `status`.
"""

from __future__ import annotations

import json
import os
import time

from . import compose
from . import containers as ct
from . import env as envs
from . import run as runner

KEPT_CPU_SHARES = 2  # Docker's lowest weight: 1/512 of a serving container's when both want CPU


def path(env: envs.Env) -> str:
    return os.path.join(env.state_dir, "warm.json")


def read(env: envs.Env) -> dict:
    try:
        warm = json.loads(envs.read_text(path(env)) or "{}")
    except ValueError:
        return {}
    return warm if isinstance(warm, dict) and isinstance(warm.get("containers"), list) else {}


def forget(env: envs.Env) -> None:
    try:
        os.unlink(path(env))
    except FileNotFoundError:
        pass


def keep(env: envs.Env, run, slot: str, containers: list, rename) -> bool:
    """CONTAINERS (drained, still running) are named only in SLOT (RENAME(container): a
    reconnection) and stop, stopped first; or, kept running, renamed, then at the lowest CPU
    weight, their removal scheduled for when the window ends. What they are kept for is
    recorded, how, with their weight and CPU time until now."""
    mode = env["WARM_KEEP"]
    code, out = ct.docker_out(env, "inspect", "-f", "{{.Id}} {{.HostConfig.CpuShares}}", *containers)
    shares = {words[0]: int(words[1]) for words in map(str.split, out.splitlines()) if len(words) == 2}
    if code != 0:
        return False
    if mode == "stopped":  # stopped first: never a moment running under a name they no longer own
        if runner.output(compose.docker(env, "stop", *containers))[0] != 0 or not all(map(rename, containers)):
            return False
    elif (
        not all(map(rename, containers))
        or ct.docker_out(env, "update", "--cpu-shares", str(KEPT_CPU_SHARES), *containers)[0] != 0
    ):
        return False
    record = {
        "mode": mode,
        "version": run.previous,
        "for": run.version,
        "slot": slot,
        "containers": containers,
        "since": time.time(),
        "migrations": run.migrations,
        "shares": shares,
        "cpu": usage(env, containers)[1] if mode == "running" else None,
    }
    envs.write_text(path(env), json.dumps(record) + "\n")
    if mode == "running":
        schedule_expiry(env, record["since"])
    return True


def schedule_expiry(env: envs.Env, since: float) -> None:
    """A process of its own (its own session, none of the run's files, so not its lock) that
    removes what was kept running when the window ends: `bin/deploy warm-expire ENV SINCE`."""
    import subprocess
    import sys

    deploy = os.path.join(os.path.dirname(runner.LIB), "bin", "deploy")
    subprocess.Popen(
        [sys.executable, "-IS", deploy, "warm-expire", env.name, repr(since)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
        # root's own word: not the deploy account's sudo session it was started from (main.roots)
        env={name: value for name, value in os.environ.items() if not name.startswith("SUDO_")},
    )


def expire(env: envs.Env, since: str, sleep=time.sleep) -> str:
    """`bin/deploy warm-expire ENV SINCE` (root, started by keep): once WARM_ROLLBACK has
    passed since SINCE, what was kept running then goes, under the environment's lock; if a
    deploy or rollback holds it, that run decides (a deploy removes them, a rollback uses them)."""
    from .lock import Lock, now_iso

    sleep(max(0.0, float(since) + int(env["WARM_ROLLBACK"]) - time.time()))
    lock = Lock(env.state_dir)
    if lock.take() is not None:
        return "busy: the run holding the environment decides"
    try:  # held only to take the record: a deploy starting now must not find the lock taken
        lock.name(f"warm-expire-{os.getpid()}", "removing what was kept for a rollback", "warm-expire", now_iso())
        kept = read(env)
        if not running(kept) or abs(float(kept.get("since", 0)) - float(since)) > 1e-6:
            return "nothing to remove: what was kept then is gone or used"
        forget(env)  # from here no rollback uses them, and a deploy's start retires them if still there
    finally:
        lock.release()
    runner.output(compose.docker(env, "rm", "-f", *kept["containers"]))
    return f"removed {len(kept['containers'])} container(s) of {kept.get('version')}: warm_rollback has passed"


def running(warm: dict) -> bool:
    return warm.get("mode") == "running"


def left(env: envs.Env, warm: dict) -> float:
    """Seconds of WARM_ROLLBACK left for what WARM kept (negative once it has passed)."""
    return int(env["WARM_ROLLBACK"]) - (time.time() - float(warm.get("since", 0)))


def why_not(env: envs.Env, warm: dict) -> str:
    """Why the kept containers cannot serve soon ('' when they can): all still there, stopped
    (or running and healthy, if they have a health check), their image still tagged here."""
    rc, out = ct.docker_out(
        env,
        "inspect",
        "-f",
        "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}-{{end}} {{.Config.Image}}",
        *warm["containers"],
    )
    rows = [line.split() for line in out.splitlines() if len(line.split()) == 3]
    if rc != 0 or len(rows) != len(warm["containers"]):
        return "its containers are gone"
    if not running(warm) and {row[0] for row in rows} != {"exited"}:
        return "its containers are gone or running"
    if running(warm) and {row[0] for row in rows} != {"running"}:
        return "its containers are stopped"
    if running(warm) and {row[1] for row in rows} - {"healthy", "-"}:
        return "its containers fail their health check"
    images = sorted({row[2] for row in rows})
    if any(ct.docker_out(env, "image", "inspect", "-f", "{{.Id}}", image)[0] != 0 for image in images):
        # .env will name it: compose must find the image by its tag again (a pull does that)
        return f"the image {' '.join(images)} is no longer tagged here"
    return ""


def wake(env: envs.Env, warm: dict) -> bool:
    """The kept containers start again, or (running) get their own CPU weight back (0 is
    Docker's default, 1024)."""
    if not running(warm):
        return runner.output(compose.docker(env, "start", *warm["containers"]))[0] == 0
    by_weight = {}
    for container in warm["containers"]:
        by_weight.setdefault(warm.get("shares", {}).get(container, 0) or 1024, []).append(container)
    for shares, ids in sorted(by_weight.items()):
        if runner.output(compose.docker(env, "update", "--cpu-shares", str(shares), *ids))[0] != 0:
            print(f"could not give {' '.join(c[:12] for c in ids)} its CPU weight back (docker update)", flush=True)
            return False
    return True


def remove(env: envs.Env) -> None:
    """A deploy starting: what was kept goes (it served nothing since it was drained)."""
    warm = read(env)
    forget(env)
    if not warm:
        return
    gone = ct.docker_out(env, "inspect", "-f", "{{.Id}}", *warm["containers"])[1].split()  # those still there
    if gone and runner.output(compose.docker(env, "rm", "-f", *gone))[0] == 0:
        print(
            f"removed {len(gone)} {env['WEB_SERVICE']} container(s) of {warm.get('version')} kept for a rollback",
            flush=True,
        )


def describe(env: envs.Env, warm: dict) -> tuple:
    """('kept ready: ...' for status, its facts), or ('', {}) when nothing is kept for what serves."""
    if not warm or warm.get("for") != envs.current_version(env):
        return "", {}
    seconds = left(env, warm)
    if seconds <= 0:
        if running(warm) and not why_not(env, warm).startswith("its containers are gone"):
            return (
                f"kept for a rollback: {warm['version']} still runs after its warm_rollback: the next deploy removes it",
                {},
            )
        return "", {}
    memory, cpu = usage(env, warm["containers"]) if running(warm) else (0, None)
    held = f"holding {memory / 2**20:.0f} MiB" if memory is not None else "memory unknown"
    used = f", {cpu - float(warm['cpu']):.1f}s CPU since" if cpu is not None and warm.get("cpu") is not None else ""
    how_kept = f"running idle, {held}{used}" if running(warm) else "stopped: holding no memory"
    how = (
        f"migrations of {warm['for']} stand between: a rollback is a full one"
        if warm.get("migrations")
        else "a rollback to it is instant"
    )
    line = (
        f"kept ready: {warm['version']} ({len(warm['containers'])} container(s), {how_kept}) "
        f"for {seconds:.0f}s more; {how}"
    )
    return line, {"warm": warm["version"], "warm_seconds": int(seconds), "warm_memory": memory or 0}


def usage(env: envs.Env, containers: list) -> tuple:
    """(bytes of memory, seconds of CPU) the containers use, from their cgroups (v1 or v2),
    each None when a cgroup cannot be read."""
    memory, cpu = 0, 0.0
    code, pids = ct.docker_out(env, "inspect", "-f", "{{.State.Pid}}", *containers)
    if code != 0 or len(pids.split()) != len(containers):
        return None, None
    for pid in pids.split():
        try:
            with open(f"/proc/{pid}/cgroup") as lines:
                files = cgroup_files(lines.read())
            memory += int(_read(files["memory"]))
            cpu_text = _read(files["cpu"])
            if files["cpu"].endswith("cpu.stat"):
                cpu_text = dict(line.split() for line in cpu_text.splitlines()).get("usage_usec", "x")
            cpu += int(cpu_text) / files["per_second"]
        except (OSError, ValueError, KeyError):
            return None, None
    return memory, cpu


def cgroup_files(proc_cgroup: str) -> dict:
    """Where a process's memory and CPU use are read, from /proc/PID/cgroup: cgroup v2
    (memory.current, cpu.stat's usage_usec) unless v1 mounts hold the controllers
    (memory.usage_in_bytes, cpuacct.usage in nanoseconds)."""
    v1, v2 = {}, None
    for line in proc_cgroup.splitlines():
        number, _, rest = line.partition(":")
        controllers, _, where = rest.partition(":")
        if number == "0" and not controllers:
            v2 = where
        for controller in controllers.split(","):
            v1[controller] = where
    if "memory" in v1 and "cpuacct" in v1:
        return {
            "memory": f"/sys/fs/cgroup/memory{v1['memory']}/memory.usage_in_bytes",
            "cpu": f"/sys/fs/cgroup/cpuacct{v1['cpuacct']}/cpuacct.usage",
            "per_second": 1e9,
        }
    if v2 is None:
        raise ValueError("no cgroup")
    base = "/sys/fs/cgroup" + ("" if v2 == "/" else v2)
    return {"memory": f"{base}/memory.current", "cpu": f"{base}/cpu.stat", "per_second": 1e6}


def _read(name: str) -> str:
    with open(name) as text:
        return text.read()
