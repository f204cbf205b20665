"""A server-side deploy stopped half way (the worker, pdserver/worker.py) always ends
recorded: cleaned up, one history line, a status for the caller, the lock named free.

The stress test sends real signals at random moments to a worker busy in its deploy
(PD_STOPS of them); the others take the paths one at a time: a stop before or after
the switch, while it settles an earlier run, after it recorded its outcome, and an
exit from deep inside. A real Python worker process, real files; the deploy steps
and the strategy are stubs."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from pushdeploy import protocol

WORKER = """
import os, sys, time
sys.path.insert(0, os.path.join(os.environ["PD_ROOT"], "scripts/server/lib"))
from pdserver import env as envs, pipeline, worker

state = os.environ["STATE_DIR"]
envs.Env.state_dir = property(lambda self: state)
envs.Env.runs_dir = property(lambda self: os.environ["RUNS_DIR"])
env = envs.Env("staging", os.path.join(state, "staging.conf"), dict(envs.DEFAULTS, APP_DIR=state))
envs.load = lambda name: env
envs.current_version = lambda env: "1.0.0"
pipeline.notify = lambda run, event: None

def record(run, outcome, took):
    with open(os.path.join(state, "history"), "a") as file:
        file.write(outcome + "\\n")
    run.recorded = outcome

pipeline.record = record

def undone(what):
    with open(os.path.join(state, "undone"), "a") as file:
        file.write(what + "\\n")

class Strategy:
    def interrupted(self, run):
        undone("retire" if run.switched else "discard")

pipeline.strategy_for = lambda env: Strategy()

def started(word="started"):
    with open(os.path.join(state, "started"), "w") as file:
        file.write(word)

def busy():
    x = "".join(str(i) for i in range(50))
    return x

def deploy(run, strategy):
    run.started = time.time()
    run.switched = os.environ["SWITCHED"] == "1"
    started()
    stub = os.environ["STUB"]
    if stub == "exit2":
        busy()
        sys.exit(2)
    if stub == "recorded":
        pipeline.record(run, "ok", "1.0")
        started("recorded")
    while True:
        busy()

pipeline.deploy = deploy
if os.environ["STUB"] == "settling":
    # Stopped while it settles an earlier run, before the run started: nothing to undo.
    def settling(run, strategy):
        started()
        while True:
            busy()

    worker.settle_dead_runs = settling
run_id = os.environ["PD_RUN_ID"]
with open(os.path.join(os.environ["RUNS_DIR"], run_id + ".token"), "w") as file:
    file.write(os.environ["PD_RUN_TOKEN"] + "\\n")
with open(os.path.join(os.environ["RUNS_DIR"], run_id + ".request"), "w") as file:
    file.write("KIND=deploy\\nVERSION=1.1.0\\n")
with open(os.path.join(state, "lock.info"), "w") as file:
    file.write(run_id + " deploy of 1.1.0\\n")
sys.exit(worker.main(["staging", run_id]))
"""


def start(tmp_path, stub: str, switched: str = "0") -> subprocess.Popen:
    for name in ("started", "history", "undone", "lock.info", "run1.status"):
        (tmp_path / name).unlink(missing_ok=True)
    env = {
        **os.environ,
        "PD_ROOT": str(protocol.PROJECT_ROOT),
        "STATE_DIR": str(tmp_path),
        "RUNS_DIR": str(tmp_path),
        "SWITCHED": switched,
        "STUB": stub,
        "PD_RUN_ID": "run1",
        "PD_RUN_TOKEN": "t0k3n",
    }
    return subprocess.Popen(
        [sys.executable, "-c", WORKER], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def wait_started(tmp_path, proc, word="started") -> None:
    deadline = time.monotonic() + 10
    while not ((tmp_path / "started").exists() and (tmp_path / "started").read_text().strip() == word):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.005)


def ended(tmp_path, proc) -> tuple[str, str]:
    output, _ = proc.communicate(timeout=10)
    status = (tmp_path / "run1.status").read_text().strip()
    assert (tmp_path / "lock.info").read_text() == "", output
    return status, output


def lines(path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_a_signal_at_a_random_moment_always_ends_cleaned_up_and_recorded_once(tmp_path):
    rng = random.Random()
    how = set()
    for _ in range(int(os.environ.get("PD_STOPS", "100"))):
        proc = start(tmp_path, "forever")
        wait_started(tmp_path, proc)
        time.sleep(rng.uniform(0, 0.03))
        proc.send_signal(signal.SIGTERM)
        status, output = ended(tmp_path, proc)
        assert (status, lines(tmp_path / "history"), lines(tmp_path / "undone")) == ("1", ["failed"], ["discard"]), (
            output
        )
        how.add("the EXIT trap" if "ended unexpectedly (exit 2)" in output else "the TERM trap")
    print(f"ended through: {sorted(how)}")


def test_a_worker_that_dies_half_way_undoes_records_and_answers(tmp_path):
    proc = start(tmp_path, "exit2")
    status, output = ended(tmp_path, proc)
    assert "deploy ended unexpectedly (exit 2)" in output
    assert (status, lines(tmp_path / "history"), lines(tmp_path / "undone")) == ("1", ["failed"], ["discard"])


@pytest.mark.parametrize(
    "switched, undone, recorded, status", [("0", ["discard"], ["failed"], "1"), ("1", ["retire"], ["ok"], "0")]
)
def test_a_signal_before_or_after_the_switch(tmp_path, switched, undone, recorded, status):
    proc = start(tmp_path, "forever", switched)
    wait_started(tmp_path, proc)
    proc.send_signal(signal.SIGTERM)
    got, output = ended(tmp_path, proc)
    assert "deploy interrupted (signal)" in output or "deploy ended unexpectedly" in output
    assert (got, lines(tmp_path / "history"), lines(tmp_path / "undone")) == (status, recorded, undone), output


def test_a_signal_before_the_run_started_undoes_nothing_and_records_it(tmp_path):
    proc = start(tmp_path, "settling")
    wait_started(tmp_path, proc)
    proc.send_signal(signal.SIGTERM)
    status, output = ended(tmp_path, proc)
    assert (status, lines(tmp_path / "history"), lines(tmp_path / "undone")) == ("1", ["failed"], []), output


def test_a_signal_after_the_outcome_is_recorded_keeps_it(tmp_path):
    proc = start(tmp_path, "recorded")
    wait_started(tmp_path, proc, "recorded")
    proc.send_signal(signal.SIGTERM)
    status, output = ended(tmp_path, proc)
    assert (status, lines(tmp_path / "history"), lines(tmp_path / "undone")) == ("0", ["ok"], []), output


# ------------------------------------------------------------------ a run killed outright

SETTLE = """
import os, sys
sys.path.insert(0, os.path.join(os.environ["PD_ROOT"], "scripts/server/lib"))
from pdserver import env as envs, pipeline, worker

state = os.environ["STATE_DIR"]
envs.Env.state_dir = property(lambda self: state)
envs.Env.runs_dir = property(lambda self: os.environ["RUNS_DIR"])
env = envs.Env("staging", os.path.join(state, "staging.conf"), dict(envs.DEFAULTS, APP_DIR=state))

class Strategy:
    def env_names_live_slot(self):
        print("env put in line")
        return True

worker.settle_dead_runs(pipeline.Run(env, "own", {}), Strategy())
"""


def dead_run(
    runs, run_id: str, header: str, steps: list[str], status: str | None = None, version: str = "1.2.0"
) -> None:
    """A run's files as a worker killed in its last step (not finished) leaves them."""
    (runs / f"{run_id}.request").write_text(
        f"KIND=deploy\nVERSION={version}\nBY=ci\nURL=\nORDER=7\nMAINTENANCE=0\nSKIP_MIGRATE=0\n"
    )
    (runs / f"{run_id}.log").write_text(
        header + "\n" + "".join(f"==> {s}\n ok {s} (1.0s)\n" for s in steps[:-1]) + f"==> {steps[-1]}\n"
    )
    (runs / f"{run_id}.steps").write_text("".join(f"{s}\t1.0\t1\n" for s in steps[:-1]))
    if status is not None:
        (runs / f"{run_id}.status").write_text(status)


@pytest.mark.parametrize(
    "header",
    [
        "2026-12-03T07:00:00Z deploy of 1.2.0 to staging (running: 1.1.0) by ci",
        "2026-12-03T07:00:00Z deploy of 1.2.0 to staging (swarm stack pixel-staging, running: 1.1.0) by ci",
    ],
)
def test_the_next_run_records_a_run_killed_outright_and_marks_it_ended(tmp_path, header):
    runs = tmp_path / "runs"
    runs.mkdir()
    dead_run(runs, "dead", header, ["preflight", "pull", "migrate"])
    dead_run(runs, "done", header, ["preflight"], status="0")  # ended: left alone
    dead_run(runs, "own", header, ["preflight"])  # the caller's own run: left alone
    dead_run(runs, "late", header, ["preflight"])  # killed after it wrote its history line
    dead_run(
        runs, "switched", header, ["preflight", "start", "health", "admit", "switch", "retire"], version="1.3.0"
    )  # killed retiring the old
    (runs / "phantom.request").write_text("KIND=deploy\nVERSION=1.4.0\n")  # its start died before its worker started
    (tmp_path / "history.jsonl").write_text(
        '{"version": "1.1.0", "outcome": "ok", "failed_step": "", "previous": "1.0.0", "by": "ci", "run": "late", "steps": []}\n'
    )
    env = {
        **os.environ,
        "PD_ROOT": str(protocol.PROJECT_ROOT),
        "PD_HOME": str(protocol.PROJECT_ROOT / "scripts/server"),
        "STATE_DIR": str(tmp_path),
        "RUNS_DIR": str(runs),
    }
    result = subprocess.run([sys.executable, "-c", SETTLE], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "deploy dead ended without a result" in result.stdout and "env put in line" in result.stdout
    records = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()][1:]
    got = sorted((r["run"], r["version"], r["previous"], r["outcome"], r["failed_step"]) for r in records)
    assert got == [
        ("dead", "1.2.0", "1.1.0", "failed", "migrate (its process died)"),
        ("phantom", "1.4.0", "unknown", "failed", "start (its process died)"),
        ("switched", "1.3.0", "1.1.0", "ok", ""),  # its version serves: a rollback target, its order kept
    ]
    assert [s["name"] for r in records if r["run"] == "dead" for s in r["steps"]] == ["preflight", "pull"]
    assert {i: (runs / f"{i}.status").read_text().strip() for i in ("dead", "late", "switched", "phantom")} == {
        "dead": "1",
        "late": "0",
        "switched": "0",
        "phantom": "1",
    }
    assert (tmp_path / "order").read_text().strip() == "7"
    assert "died before it answered" in (runs / "dead.log").read_text()
    assert not (runs / "own.status").exists()
    # Once settled, the next run finds nothing to do.
    again = subprocess.run([sys.executable, "-c", SETTLE], env=env, capture_output=True, text=True, timeout=30)
    assert again.stdout == "" and len((tmp_path / "history.jsonl").read_text().splitlines()) == 4
