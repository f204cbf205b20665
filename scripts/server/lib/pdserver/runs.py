"""Detached runs: a deploy runs in its own session, logging to a file, so a dropped SSH
connection or a cancelled CI job cannot stop it half way. The caller follows the log;
calling again with the same --id reattaches instead of deploying twice.

A run's files, RUNS/ID.*: request (what to deploy, KEY=value lines), log, pid, token
(only the worker this module starts knows it), steps (name, seconds, ok), status
(its exit status, once it ended). The worker holds the environment's lock (fd 9)
from start to end; lock.info names it.
"""

from __future__ import annotations

import os
import sys
import time

from . import env as envs
from . import facts, marks, plan, restoredb, run
from .lock import Lock, now_iso
from .request import Refused, Request
from .result import Result

LOCK_FD = 9  # the worker holds the lock open here (its own commands do not inherit it)


def run_file(env: envs.Env, run_id: str, kind: str) -> str:
    return os.path.join(env.runs_dir, f"{run_id}.{kind}")


def deploy(request: Request) -> Result:
    env = envs.load_checked(request)
    version = request.words[0]
    plan.check_version(env, version)
    return start(env, request, "deploy", version)


def rollback(request: Request) -> Result:
    """The version that served before the current one took over, past releases marked bad
    (or --to=VERSION). The release it undoes is marked bad, unless --keep-good. With
    --restore-db the database goes back to the backup taken before the deploy that replaced
    it (restoredb.py; a later batch, --skip-migrate, keeps maintenance on only)."""
    env = envs.load_checked(request)
    target = str(request.option("to") or "")
    why = f"{target}, as asked (--to)"
    if target:
        if not facts.matches(facts.VERSION_RE, target):
            raise Refused(f"invalid version '{target}': a Docker tag is [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}")
        mark = marks.bad(env).get(target)
        if mark:
            print(f"warning: {target} is {marks.described(mark)}; going back to it as asked (--to)", flush=True)
    else:
        target, why = marks.rollback_choice(env, envs.current_version(env))
        if not target:
            raise Refused(f"no earlier successful deploy of {env.name} to go back to; pass --to=VERSION ({why})")
    plan.check_version(env, target)
    restore = None
    if request.option("restore-db") and not request.option("skip-migrate"):
        restore = restoredb.choose(env, target)
    return start(env, request, "rollback", target, why, restore)


def start(env: envs.Env, request: Request, kind: str, version: str, why: str = "", restore=None) -> Result:
    """Start the run (or follow the one with this --id) and follow it: its exit status,
    and its record in the history as data."""
    os.makedirs(env.runs_dir, mode=0o700, exist_ok=True)  # a first deploy: no state yet
    lock = Lock(env.state_dir)
    try:
        run_id = _start(env, request, kind, version, lock, why, restore)
    finally:
        lock.close()  # ours only: a worker started holds its own
    return Result(follow(env, run_id), answer(env, run_id))


def _start(env: envs.Env, request: Request, kind: str, version: str, lock: Lock, why: str = "", restore=None) -> str:
    """The run to follow: the one with this --id (running or done), or one started now."""
    run_id = str(request.option("id", ""))
    holder = lock.take()
    if holder is not None:
        if run_id and holder.startswith(run_id + " "):
            print(f"deploy {run_id} is running; following it", flush=True)
            return run_id
        what = holder.split(" ", 1)[-1]
        wait = int(request.option("wait", 0))
        if wait > 0:
            print(f"waiting up to {wait}s for: {what}", flush=True)
        if not lock.take_within(wait):
            raise Refused(f"busy: {what}; try again later or pass --wait=SECONDS", facts.EXIT_BUSY)
    if run_id and os.path.exists(run_file(env, run_id, "request")):
        lock.close()
        if os.path.exists(run_file(env, run_id, "status")):
            print(f"deploy {run_id} already ran; its log:", flush=True)
            return run_id
        raise Refused(
            f"deploy {run_id} stopped without a result (the server restarted?): see `inv deploy.logs --env {env.name}` and deploy again",
            1,
        )
    if kind == "deploy":
        refused = plan.deploy_refusal(env, version, request.option("order"), bool(request.option("force")))
        if refused:
            raise Refused(refused, facts.EXIT_OLDER)
    run_id = run_id or f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}"
    by = str(request.option("by", ""))
    lock.name(run_id, f"deploy of {version}", by, now_iso())
    envs.write_text(run_file(env, run_id, "request"), request_text(request, kind, version, why, restore))
    envs.write_text(run_file(env, run_id, "log"), "")
    # Only a worker started here knows the token: the deploy account, even through
    # sudo, cannot read it, so it cannot start a worker (__run) itself.
    token = os.urandom(16).hex()
    envs.write_text(run_file(env, run_id, "token"), token + "\n")
    pid = spawn(env, run_id, token, lock)
    envs.write_text(run_file(env, run_id, "pid"), f"{pid}\n")
    lock.close()
    return run_id


def request_text(request: Request, kind: str, version: str, why: str = "", restore=None) -> str:
    """The run's request as the worker reads it (pipeline.read_request)."""
    order = request.option("order")
    maintenance = request.option("maintenance") or request.option("restore-db")
    fields = (
        (
            ("KIND", kind),
            ("VERSION", version),
            ("BY", request.option("by", "")),
            ("URL", request.option("url", "")),
            ("ORDER", "" if order is None else order),
            ("MAINTENANCE", int(bool(maintenance))),
            ("SKIP_MIGRATE", int(bool(request.option("skip-migrate")))),
        )
        + ((("KEEP_GOOD", 1),) if request.option("keep-good") else ())
        + ((("WHY", why),) if why else ())
        + (
            (("RESTORE", restore.path), ("LOST_SINCE", restore.taken), ("RESTORE_FOR", restore.deployed))
            if restore
            else ()
        )
    )
    return "".join(f"{key}={value}\n" for key, value in fields)


def spawn(env: envs.Env, run_id: str, token: str, lock: Lock) -> int:
    """The worker, in a session of its own, holding the lock on fd 9; its pid. With
    PRIORITY=low it runs under nice: docker and compose inherit it, serving comes first."""
    import subprocess

    argv = ["nice", "-n", "10"] if env["PRIORITY"] == "low" else []
    argv += [sys.executable, "-IS", os.path.join(os.path.dirname(run.LIB), "bin", "deploy"), "__run", env.name, run_id]
    sys.stdout.flush()
    with open(run_file(env, run_id, "log"), "ab") as log:
        # Our own files are closed in the worker (Python opens them close-on-exec);
        # what we inherited open, it inherits (the pull agent's lock, fd 8).
        worker = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=False,
            preexec_fn=lambda: os.dup2(lock.fd, LOCK_FD),
            env={**os.environ, "PD_RUN_ID": run_id, "PD_RUN_TOKEN": token},
        )
    return worker.pid


def copy(file) -> None:
    while True:
        chunk = file.read(65536)
        if not chunk:
            break
        sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie, ended but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


# How often a follower looks for new log lines: a line reaches the client within this, so
# a connection cut a moment later has still carried what the run said (and what it began).
FOLLOW_EVERY = 0.02


def follow(env: envs.Env, run_id: str) -> int:
    """The run's log as it grows, until its process ends; its exit status."""
    pid = envs.read_text(run_file(env, run_id, "pid"))
    with open(run_file(env, run_id, "log"), "rb") as file:
        copy(file)
        while pid.isdigit() and _alive(int(pid)):
            time.sleep(FOLLOW_EVERY)
            copy(file)
        copy(file)
        if file.tell():
            file.seek(-1, os.SEEK_END)
            if file.read(1) != b"\n":  # a log cut mid-line (a killed run): the answer's next line starts clean
                sys.stdout.buffer.write(b"\n")
                sys.stdout.buffer.flush()
    status = envs.read_text(run_file(env, run_id, "status"))
    if not status.isdigit():
        raise Refused(f"the deploy process {run_id} ended without a result: see `inv deploy.logs --env {env.name}`", 1)
    return int(status)


def answer(env: envs.Env, run_id: str) -> dict:
    """The run's result as data: its record in the history, what .env names now."""
    record = {}
    for entry in reversed(run.lib_module("history").brief(env.history)):
        if entry.get("run") == run_id:
            record = entry
            break
    fields = ("outcome", "kind", "version", "previous", "failed_step")
    result = {key: record.get(key, "") for key in fields}
    result.update(serving=envs.current_version(env), run=run_id)
    return result
