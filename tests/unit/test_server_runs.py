"""Starting and following a detached run (pdserver/runs.py), with a stand-in worker:
a bin/deploy that proves it was started as the real one is (its token, the lock
on fd 9, a session of its own), writes its log and its status."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time

import pytest

from pdserver import env as envs
from pdserver import facts, run, runs, verbs
from pdserver.lock import Lock
from pdserver.request import Refused, parse

WORKER = """#!/bin/bash
# __run ENV ID
[[ $1 == __run && $PD_RUN_ID == "$3" && $PD_RUN_TOKEN == "$(cat "$RUNS/$3.token")" ]] || { echo "bad start: $*"; exit 2; }
[[ $(readlink /proc/$$/fd/9) == */staging/lock ]] || { echo "the lock is not on fd 9"; exit 2; }
flock -n "$RUNS/../lock" true && { echo "the lock is not held"; exit 2; }
[[ $(ps -o sid= -p $$) -eq $$ ]] || { echo "not in a session of its own"; exit 2; }
echo "worker $3 of $(sed -n 's/^VERSION=//p' "$RUNS/$3.request")"
sleep "${WORKER_SLEEP:-0}"
echo "done"
echo "${WORKER_STATUS:-0}" >"$RUNS/$3.status"
"""


@pytest.fixture
def worker(server, monkeypatch):
    lib, bin_dir = server / "lib", server / "bin"
    lib.mkdir()
    bin_dir.mkdir()
    (lib / "worker.sh").write_text(WORKER)
    (bin_dir / "deploy").write_text(
        f"import os, sys\nos.execv('/bin/bash', ['bash', {str(lib / 'worker.sh')!r}, *sys.argv[1:]])\n"
    )
    shutil.copy(os.path.join(run.LIB, "history.py"), lib)
    monkeypatch.setattr(run, "LIB", str(lib))
    monkeypatch.setenv("RUNS", str(server / "state/staging/runs"))
    return server / "state/staging/runs"


RESULTS = []  # the result lines the answers ended with, as data


def ask(capsys, line: str):
    """(exit status, output) of a request; its result (data) goes to RESULTS."""
    result = verbs.HANDLERS[line.split()[0]](parse(line.split(), time.time()))
    RESULTS.append(result.data)
    return result.code, capsys.readouterr().out


def test_a_deploy_starts_the_worker_and_follows_it_to_its_status(worker, capsys, monkeypatch):
    monkeypatch.setenv("WORKER_STATUS", "1")
    answer, out = ask(capsys, "deploy staging 1.5.0 --id=r1 --by=ci --order=12 --maintenance")
    assert (answer, out) == (1, "worker r1 of 1.5.0\ndone\n")
    assert (worker / "r1.request").read_text() == (
        "KIND=deploy\nVERSION=1.5.0\nBY=ci\nURL=\nORDER=12\nMAINTENANCE=1\nSKIP_MIGRATE=0\n"
    )
    assert os.stat(worker / "r1.request").st_mode & 0o777 == 0o600
    assert RESULTS[-1] == {  # no history line (the stand-in worker writes none): outcome unknown
        "outcome": "",
        "kind": "",
        "version": "",
        "previous": "",
        "failed_step": "",
        "serving": "1.4.0",
        "run": "r1",
    }
    assert (worker / "r1.pid").read_text().strip().isdigit()
    assert Lock(str(worker.parent)).busy() is None, "the worker's hold ended with it"


def test_while_it_runs_the_lock_names_it_and_the_same_id_follows_it(worker, capsys, monkeypatch):
    monkeypatch.setenv("WORKER_SLEEP", "1.5")
    answers = {}
    thread = threading.Thread(target=lambda: answers.setdefault("first", runs.start(*_start_args("r2")).code))
    thread.start()
    deadline = time.monotonic() + 5
    while not (worker / "r2.pid").exists():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    holder = Lock(str(worker.parent)).busy()
    assert holder.startswith("r2 deploy of 1.5.0 by ci in progress since ")
    with pytest.raises(
        Refused, match=r"^busy: deploy of 1.5.0 by ci in progress since .*; try again later or pass --wait=SECONDS$"
    ) as caught:
        runs.start(*_start_args("other"))
    assert caught.value.code == facts.EXIT_BUSY and not (worker / "other.request").exists()
    capsys.readouterr()
    assert runs.start(*_start_args("r2")).code == 0
    assert capsys.readouterr().out.startswith("deploy r2 is running; following it\nworker r2 of 1.5.0\n")
    thread.join()
    assert answers["first"] == 0


def _start_args(run_id: str):
    request = parse(["deploy", "staging", "1.5.0", f"--id={run_id}", "--by=ci"], time.time())
    return envs.load("staging"), request, "deploy", "1.5.0"


def test_wait_takes_the_lock_once_the_holder_gives_it_back(worker, capsys):
    state = worker.parent
    holder = subprocess.Popen(
        [
            "flock",
            str(state / "lock"),
            "sh",
            "-c",
            f"echo 'h deploy of 1 by a in progress since T' >{state / 'lock.info'}; sleep 0.8; : >{state / 'lock.info'}",
        ]
    )
    time.sleep(0.3)
    answer, out = ask(capsys, "deploy staging 1.5.0 --id=r3 --wait=10")
    holder.wait()
    assert answer == 0
    assert out == "waiting up to 10s for: deploy of 1 by a in progress since T\nworker r3 of 1.5.0\ndone\n"


def test_an_id_that_ran_answers_its_log_and_one_that_died_says_so(worker, capsys):
    (worker / "r4.request").write_text("KIND=deploy\nVERSION=1.5.0\n")
    (worker / "r4.log").write_text("deployed 1.5.0\n")
    (worker / "r4.status").write_text("0\n")
    record = {"run": "r4", "outcome": "ok", "kind": "deploy", "version": "1.5.0", "previous": "1.3.0"}
    (worker.parent / "history.jsonl").write_text(json.dumps({**record, "steps": []}) + "\n")
    assert ask(capsys, "deploy staging 1.5.0 --id=r4") == (0, "deploy r4 already ran; its log:\ndeployed 1.5.0\n")
    assert RESULTS[-1] == {**record, "failed_step": "", "serving": "1.4.0"}  # the record, and what .env names now
    (worker / "r4.status").unlink()
    with pytest.raises(Refused, match="deploy r4 stopped without a result") as caught:
        ask(capsys, "deploy staging 1.5.0 --id=r4")
    assert caught.value.code == 1
    assert Lock(str(worker.parent)).busy() is None


def test_an_older_version_is_refused_before_anything_is_written(worker, capsys, server):
    with open(server / "etc/staging.conf", "a") as conf:
        conf.write("ORDERING=semver\n")
    with pytest.raises(Refused, match="1.3.0 is older than the deployed 1.4.0") as caught:
        ask(capsys, "deploy staging 1.3.0 --id=r5")
    assert caught.value.code == facts.EXIT_OLDER
    assert not (worker / "r5.request").exists() and Lock(str(worker.parent)).busy() is None
    assert ask(capsys, "deploy staging 1.3.0 --id=r5 --force")[0] == 0


def test_a_rollback_goes_to_the_release_before_the_running_one(worker, capsys, server):
    with pytest.raises(Refused, match="no earlier successful deploy of staging to go back to; pass --to=VERSION"):
        ask(capsys, "rollback staging")
    history = worker.parent / "history.jsonl"
    history.write_text(
        "".join(
            json.dumps({"kind": "deploy", "version": version, "outcome": "ok"}) + "\n"
            for version in ("1.2.0", "1.3.0", "1.4.0")
        )
    )
    assert ask(capsys, "rollback staging --id=r6") == (0, "worker r6 of 1.3.0\ndone\n")
    assert (worker / "r6.request").read_text().startswith("KIND=rollback\nVERSION=1.3.0\n")
    with pytest.raises(Refused, match="invalid version 'x@y'"):
        ask(capsys, "rollback staging --to=x@y")
