"""The detached run's worker, `bin/deploy __run ENV ID`: started by runs.spawn only
(it alone knows the run's token), holding the environment's lock on fd 9.

It settles runs whose process died, runs the deploy (pipeline.py) with the
environment's strategy, and always ends recorded: a TERM or INT (a shutdown) lets
the command in hand finish, then undoes what the run started (or, once the new
version serves, finishes it), records the outcome and answers; so does an error of
this program itself.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
import traceback

from . import env as envs
from . import pipeline, runs, status
from . import run as runner
from .lock import Lock, now_iso
from .request import Refused

KEEP_RUNS = 30


def main(words) -> int:
    if len(words) != 2:
        raise Refused("not a deploy started by this script")
    env = envs.load(words[0])
    run_id = words[1]
    token_file = runs.run_file(env, run_id, "token")
    if not (
        os.environ.get("PD_RUN_ID") == run_id
        and os.path.isfile(token_file)
        and os.environ.get("PD_RUN_TOKEN") == envs.read_text(token_file)
    ):
        raise Refused("not a deploy started by this script")
    os.unlink(token_file)
    sys.stdout.reconfigure(line_buffering=True)  # the log, in order with what commands write to it
    run = pipeline.Run(env, run_id, pipeline.read_request(runs.run_file(env, run_id, "request")))
    open(run.file("steps"), "w").close()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    rc = execute(run, pipeline.strategy_for(env))
    with open(run.file("status"), "w") as file:
        file.write(f"{rc}\n")
    Lock(env.state_dir).clear()
    prune_runs(env.runs_dir)
    return rc


def execute(run: pipeline.Run, strategy) -> int:
    """Settle dead runs, then deploy; a stop (TERM, INT) or an error half way ends the run
    recorded all the same (end_unfinished). Its status: 0 when the new version serves."""
    runner.stop_on(signal.SIGTERM, signal.SIGINT)
    try:
        settle_dead_runs(run, strategy)
        rc = pipeline.deploy(run, strategy)
        runner.ignore_stops()  # from here on only the answer is left
    except runner.Stopped:
        runner.ignore_stops()
        print("deploy interrupted (signal)", flush=True)
        rc = end_unfinished(run, strategy)
    except SystemExit as error:  # sys.exit deep inside: still a stop half way
        runner.ignore_stops()
        print(f"deploy ended unexpectedly (exit {error.code})", flush=True)
        rc = end_unfinished(run, strategy)
    except Exception as error:  # noqa: BLE001 (a bug here must still end the run recorded)
        runner.ignore_stops()
        traceback.print_exc(file=sys.stdout)
        print(f"deploy ended unexpectedly ({type(error).__name__}: {error})", flush=True)
        rc = end_unfinished(run, strategy)
    return rc


def end_unfinished(run: pipeline.Run, strategy) -> int:
    """Clean up after a run stopped half way, record it; its status (0: the new version serves)."""
    outcome = "failed"
    if run.recorded:
        outcome = run.recorded  # stopped after it recorded its outcome: only the answer is missing
    elif run.started is None:
        pass  # stopped before this run changed anything (while it settled an earlier run)
    else:
        if run.switched:
            outcome = "ok"  # the new version serves already: finish (retire the old), do not undo
        else:
            run.failed_step = run.failed_step or "interrupted"
        try:
            strategy.interrupted(run)
        except Exception:  # noqa: BLE001 (recorded and answered all the same)
            traceback.print_exc(file=sys.stdout)
    if not run.recorded:
        run.previous = run.previous or envs.current_version(run.env)
        pipeline.record(run, outcome, pipeline.elapsed(run.started or time.time()))
        pipeline.notify(run, "finished")
    return 0 if outcome == "ok" else 1


# ---------------------------------------------------------------------- dead runs


def settle_dead_runs(run: pipeline.Run, strategy) -> None:
    """A run whose process died without a result (SIGKILL, the OOM killer, a power cut)
    ran no handler: no status, no history line. The next run, holding the lock (so no
    other run lives), records it, marks it ended for anyone following it, and puts .env
    back in line with what serves; its start removes the containers the dead one left."""
    env = run.env
    dead = status.dead_runs(env.runs_dir, own=run.id)
    for run_id in dead:
        recorded = _recorded(env.history, run_id)
        if recorded is not None:
            print(
                f"deploy {run_id} ended before it answered (its process was killed, or the server stopped); its outcome is in the history",
                flush=True,
            )
            outcome = recorded
        else:
            outcome = dead_run_outcome(runs.run_file(env, run_id, "steps"))
            print(
                f"deploy {run_id} ended without a result (its process was killed, or the server stopped): recording it as {outcome}",
                flush=True,
            )
            try:
                record_dead_run(env, run_id, outcome)
            except Exception:  # noqa: BLE001
                print(f"warning: could not record deploy {run_id} in the history", flush=True)
        with open(runs.run_file(env, run_id, "status"), "w") as file:
            file.write("0\n" if outcome == "ok" else "1\n")
        with open(runs.run_file(env, run_id, "log"), "a") as log:
            log.write(
                f"{now_iso()} the process of this deploy died before it answered; the next run recorded it ({outcome}) and cleaned up after it\n"
            )
    if dead and hasattr(strategy, "env_names_live_slot") and not strategy.env_names_live_slot():
        print(f"warning: could not set VERSION in {env.app_dir}/.env to what serves", flush=True)


def _recorded(history: str, run_id: str):
    """The outcome the history has for RUN_ID ('ok' or 'failed'), or None."""
    outcome = None
    try:
        with open(history, errors="replace") as file:
            for line in file:
                if f'"run": "{run_id}"' in line:
                    outcome = "ok" if '"outcome": "ok"' in line else "failed"
    except FileNotFoundError:
        pass
    return outcome


def dead_run_outcome(steps_path: str) -> str:
    """A run that died after its new version took over (slots: switch; recreate: up;
    swarm: converge) deployed it: only retiring the old was left, which the next run's
    start does. One that died before changed nothing that serves."""
    try:
        with open(steps_path) as file:
            for line in file:
                name, _, rest = line.rstrip("\n").partition("\t")
                if name in ("switch", "up", "converge") and rest.endswith("\t1"):
                    return "ok"
    except FileNotFoundError:
        pass
    return "failed"


_START_LINE = re.compile(r"^\S* [a-z]* of \S* to \S* \((?:swarm stack [^,]*, )?running: ([^)]*)\) by ")


def record_dead_run(env: envs.Env, run_id: str, outcome: str) -> None:
    dead = pipeline.Run(env, run_id, pipeline.read_request(runs.run_file(env, run_id, "request")))
    log_path = dead.file("log")
    for kind in ("log", "steps"):
        if not os.path.exists(dead.file(kind)):
            open(dead.file(kind), "w").close()
    log = envs.read_text(log_path).splitlines()
    previous = next((m.group(1) for m in map(_START_LINE.match, log) if m), "")
    dead.previous = previous or "unknown"
    if outcome == "ok":
        if dead.order:
            with open(os.path.join(env.state_dir, "order"), "w") as file:
                file.write(f"{dead.order}\n")
    else:
        steps = [line[4:] for line in log if re.match(r"^==> [a-z-]*$", line)]
        dead.failed_step = f"{steps[-1] if steps else 'start'} (its process died)"
    took = int(os.stat(log_path).st_mtime) - int(os.stat(dead.file("request")).st_mtime)
    pipeline.record(dead, outcome, str(took))


def prune_runs(runs_dir: str) -> None:
    """The files of all but the newest KEEP_RUNS runs go."""
    logs = sorted(
        (name for name in os.listdir(runs_dir) if name.endswith(".log")),
        key=lambda name: os.stat(os.path.join(runs_dir, name)).st_mtime,
        reverse=True,
    )
    old = {name[: -len(".log")] for name in logs[KEEP_RUNS:]}
    for name in os.listdir(runs_dir):
        if name.rsplit(".", 1)[0] in old:
            os.unlink(os.path.join(runs_dir, name))
