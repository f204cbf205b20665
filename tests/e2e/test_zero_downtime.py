"""Zero downtime as users see it: open-loop load (50 requests/s, a new connection each,
a 1 s budget per request) through nginx while deploys, failed deploys, rollbacks and
faults happen. Not one request may fail or take longer than a second."""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    PORTS,
    ROOT,
    STAGING_A,
    STAGING_B,
    compose,
    history_lines,
    inv,
    psql,
    served_version,
    server_env_file,
    tool_env,
)
from tests.e2e.deployed import ensure, web_containers
from tests.e2e.proxy_config import changed_staging_config
from tests.openload import OpenLoad

# Two reruns at most: this 2-core machine is shared and noisy; a real regression fails every run.
pytestmark = [pytest.mark.e2e, pytest.mark.flaky(reruns=2)]

RATE = 50  # requests a second, sent on schedule whatever earlier requests did
BUDGET = 1.0  # seconds: a slower answer counts against the deploy


def assert_nothing_lost(load: OpenLoad, seconds: float) -> None:
    summary = load.summary(budget=BUDGET)
    print(summary.line())
    assert summary.failed == 0, summary.failures
    slow = [(round(s.scheduled, 2), round(s.latency, 3)) for s in load.samples if s.finished and s.latency > BUDGET]
    assert summary.slow == 0, slow[:10]
    assert summary.sent >= RATE * seconds * 0.9  # the load really ran, on schedule, the whole time


def under_load(
    env: str, *args: str, path: str = "/", **load_options
) -> tuple[subprocess.CompletedProcess, OpenLoad, float]:
    """Run `inv ARGS` while the open-loop load runs, from 1 s before to 1.5 s after it."""
    with OpenLoad(f"http://127.0.0.1:{PORTS[env]}{path}", rate=RATE, seconds=300, **load_options) as load:
        time.sleep(1)
        result = inv(*args)
        time.sleep(1.5)
        seconds = load.now()
    return result, load, seconds


def test_a_good_release_loses_no_request_and_none_is_slow(server):
    ensure("staging", STAGING_A)
    proxy = compose("staging", "ps", "-q", "proxy").stdout.split()
    result, load, seconds = under_load("staging", "deploy.staging", "--tag", STAGING_B, "--force")
    assert result.returncode == 0, result.stdout
    assert_nothing_lost(load, seconds)
    assert load.summary().versions == (STAGING_A, STAGING_B)
    assert {s.version for s in load.samples if s.scheduled > seconds - 1} == {STAGING_B}  # all traffic moved
    assert len(web_containers("staging")) == 1  # the old container is gone
    assert compose("staging", "ps", "-q", "proxy").stdout.split() == proxy  # never restarted
    assert "reloaded proxy" not in result.stdout  # its configuration did not change


def test_a_deploy_beside_a_busy_neighbour_loses_no_request_and_none_is_slow(server):
    """Another job on the server keeps one of its two cores busy the whole time (a
    shell loop at normal priority): the site and the deploy share what is left."""
    ensure("staging", STAGING_A)
    neighbour = subprocess.Popen(["sh", "-c", "while :; do :; done"])
    try:
        result, load, seconds = under_load("staging", "deploy.staging", "--tag", STAGING_B, "--force")
    finally:
        neighbour.kill()
        neighbour.wait()
    assert result.returncode == 0, result.stdout
    assert_nothing_lost(load, seconds)
    assert {s.version for s in load.samples if s.scheduled > seconds - 1} == {STAGING_B}


def test_a_release_failing_its_health_check_is_rolled_back_unseen(server):
    ensure("production", "1.1.0")
    env_before = server_env_file("production")
    containers_before = web_containers("production")
    result, load, seconds = under_load("production", "deploy.production", "--tag", "1.2.0-badhealth", "--force")
    assert result.returncode == 1
    assert "FAILED health" in result.stdout
    assert_nothing_lost(load, seconds)
    assert load.summary().versions == ("1.1.0",)  # no request ever reached the broken release
    assert server_env_file("production") == env_before
    assert web_containers("production") == containers_before
    record = json.loads(history_lines("production")[-1])
    assert (record["outcome"], record["failed_step"], record["previous"]) == ("failed", "health", "1.1.0")
    assert "unhealthy" in record["log_tail"] or "health check" in record["log_tail"]


def test_a_rollback_loses_no_request(server):
    ensure("production", "1.0.0")
    ensure("production", "1.1.0")
    result, load, seconds = under_load("production", "deploy.rollback", "--env", "production")
    assert result.returncode == 0, result.stdout
    assert_nothing_lost(load, seconds)
    assert load.summary().versions == ("1.0.0", "1.1.0")
    assert served_version("production") == "1.0.0"
    record = json.loads(history_lines("production")[-1])
    assert (record["kind"], record["version"], record["outcome"]) == ("rollback", "1.0.0", "ok")


def test_a_deploy_that_changes_the_proxy_configuration_loses_no_request(server, tmp_path):
    ensure("staging", STAGING_A)
    config = changed_staging_config(
        tmp_path, lambda text: text.replace("gzip on;", "gzip on;\n    add_header X-Pixel-Config changed always;")
    )
    proxy = compose("staging", "ps", "-q", "proxy").stdout.split()
    try:
        assert inv("-f", str(config), "server.setup", "--env", "staging").returncode == 0
        result, load, seconds = under_load(
            "staging", "-f", str(config), "deploy.staging", "--tag", STAGING_B, "--force"
        )
        assert result.returncode == 0, result.stdout
        assert "reloaded proxy (its configuration changed)" in result.stdout
        assert_nothing_lost(load, seconds)
        with urllib.request.urlopen(f"http://127.0.0.1:{PORTS['staging']}/", timeout=5) as response:
            assert response.headers["X-Pixel-Config"] == "changed"
        assert compose("staging", "ps", "-q", "proxy").stdout.split() == proxy  # reloaded, never restarted
    finally:
        assert inv("server.setup", "--env", "staging").returncode == 0


RUNS = Path("/var/lib/pushdeploy/staging/runs")


def wait_for_step(known: set[Path], marker: str, seconds: float = 120) -> Path:
    """The new deploy's server-side log, once it shows a marker line."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for log in set(RUNS.glob("*.log")) - known:
            if marker in log.read_text():
                return log
        time.sleep(0.02)
    raise AssertionError(f"{marker!r} never appeared in the deploy log")


def test_a_slow_request_in_flight_when_the_old_version_retires_is_answered(server):
    ensure("staging", STAGING_A)
    known = set(RUNS.glob("*.log"))
    answer: dict = {}

    def slow_request():
        started = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{PORTS['staging']}/slow?seconds=5", timeout=30) as response:
            answer.update(status=response.status, body=json.loads(response.read()), seconds=time.monotonic() - started)

    with OpenLoad(f"http://127.0.0.1:{PORTS['staging']}/", rate=RATE, seconds=300) as load:
        client = subprocess.Popen(
            [sys.executable, "-m", "invoke", "deploy.staging", "--tag", STAGING_B, "--force"],
            cwd=ROOT,
            env=tool_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        log = wait_for_step(known, "==> admit")  # the old version still serves: the slow request goes there
        slow = threading.Thread(target=slow_request)
        slow.start()
        output, _ = client.communicate(timeout=300)
        slow.join()
        time.sleep(1)
        seconds = load.now()
    assert client.returncode == 0, output
    assert answer["status"] == 200 and answer["body"]["version"] == STAGING_A, answer
    assert answer["seconds"] >= 5
    text = log.read_text()
    assert "==> retire" in text and "retired 1 old web container(s)" in text
    retire = next(s for s in json.loads(history_lines("staging")[-1])["steps"] if s["name"] == "retire")
    assert retire["seconds"] >= 2  # the old container waited for the slow request before it stopped
    assert_nothing_lost(load, seconds)


def test_requests_still_queued_at_the_old_version_when_it_retires_are_answered(server):
    """The old version is busy: its 3 gunicorn workers each serve a slow request and
    3 more wait in its listening socket's queue when the drain time is over. Stopping
    it then would reset those 3 (nginx answers 502); the retire step waits until the
    old containers have answered every connection they were sent."""
    ensure("staging", STAGING_A)
    known = set(RUNS.glob("*.log"))
    answers: list = []

    def slow_request():
        started = time.monotonic()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORTS['staging']}/slow?seconds=4", timeout=60) as response:
                answers.append((response.status, json.loads(response.read())["version"], time.monotonic() - started))
        except Exception as error:  # noqa: BLE001 - a reset or a 502 is the failure this test looks for
            answers.append((getattr(error, "code", 0), repr(error), time.monotonic() - started))

    with OpenLoad(f"http://127.0.0.1:{PORTS['staging']}/", rate=RATE, seconds=300) as load:
        client = subprocess.Popen(
            [sys.executable, "-m", "invoke", "deploy.staging", "--tag", STAGING_B, "--force"],
            cwd=ROOT,
            env=tool_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        log = wait_for_step(known, "==> admit")
        slow = [threading.Thread(target=slow_request) for _ in range(6)]
        for thread in slow:
            thread.start()
        output, _ = client.communicate(timeout=300)
        for thread in slow:
            thread.join()
        time.sleep(1)
        seconds = load.now()
    assert client.returncode == 0, output
    assert sorted(a[:2] for a in answers) == [(200, STAGING_A)] * 6, answers
    assert max(a[2] for a in answers) >= 7.5  # three of them waited for a worker
    assert "answered their last requests" in log.read_text()
    # The load's requests that reached the old version behind the slow ones waited
    # for its workers too (slow, by this test's making), and none was reset.
    summary = load.summary(budget=BUDGET)
    assert summary.failed == 0, summary.failures
    assert summary.sent >= RATE * seconds * 0.9


def test_a_post_during_the_switch_is_answered_exactly_once(server):
    ensure("staging", STAGING_A)
    run = secrets.token_hex(4)
    result, load, seconds = under_load(
        "staging",
        "deploy.staging",
        "--tag",
        STAGING_B,
        "--force",
        path="/record",
        method="POST",
        body=lambda i: f"token={run}-{i}".encode(),
    )
    assert result.returncode == 0, result.stdout
    summary = load.summary(budget=BUDGET)
    assert summary.failed == 0, summary.failures
    assert {s.status for s in load.samples} == {201}
    rows = psql(
        "staging",
        f"select path, count(*) from notes_visit where path like 'post:{run}-%' group by path having count(*) > 1",
    )
    assert rows == ""  # no POST was stored twice
    assert psql("staging", f"select count(*) from notes_visit where path like 'post:{run}-%'") == str(len(load.samples))
    assert_nothing_lost(load, seconds)


def fault_moment(salt: int) -> float:
    """A moment 0.3 to 6 s into a deploy, new each day; PD_FAULT_AT=SECONDS replays one a test printed."""
    return float(os.environ.get("PD_FAULT_AT") or random.Random(salt + int(time.time()) // 86400).uniform(0.3, 6.0))


def deploy_signalled(version: str, moment: float, signum: int) -> tuple[str, Path]:
    """Deploy VERSION to staging and send its server-side deploy SIGNUM `moment` seconds
    after its pre-flight began: the client's output, and the server-side log."""
    known = set(RUNS.glob("*.log"))
    time.sleep(0.5)
    client = subprocess.Popen(
        [sys.executable, "-m", "invoke", "deploy.staging", "--tag", version, "--force"],
        cwd=ROOT,
        env=tool_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log = wait_for_step(known, "==> preflight")
    time.sleep(moment)
    try:
        os.kill(int(log.with_suffix(".pid").read_text()), signum)
    except ProcessLookupError:
        pass  # it had finished already
    output, _ = client.communicate(timeout=300)
    return output, log


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_deploy_stopped_at_a_random_moment_leaves_one_version_serving(server, seed):
    """A shutdown (SIGTERM to the server-side deploy) at a random moment: whatever it hit,
    no request fails, and one version serves, the one .env and the history name."""
    ensure("staging", STAGING_A)
    moment = fault_moment(seed * 7919)
    before = len(history_lines("staging"))
    with OpenLoad(f"http://127.0.0.1:{PORTS['staging']}/", rate=RATE, seconds=300) as load:
        output, _ = deploy_signalled(STAGING_B, moment, signal.SIGTERM)
        time.sleep(1.5)
        seconds = load.now()
    print(f"stopped after {moment:.2f}s:\n{output}")
    assert_nothing_lost(load, seconds)
    # The stopped deploy recorded itself (or had finished): one line, and an answer.
    records = [json.loads(line) for line in history_lines("staging")[before:]]
    assert [r["version"] for r in records] == [STAGING_B], output
    assert "ended without a result" not in output
    record = records[-1]
    serving = record["version"] if record["outcome"] == "ok" else record["previous"]
    assert served_version("staging") == serving
    assert f"VERSION={serving}".encode() in server_env_file("staging").splitlines()
    assert len(web_containers("staging")) == 1
    assert {s.version for s in load.samples if s.scheduled > seconds - 1} == {serving}
    assert inv("deploy.staging", "--tag", STAGING_A, "--force").returncode == 0  # and the next deploy works


@pytest.mark.parametrize("seed", [1, 2])
def test_a_deploy_killed_outright_is_recorded_and_cleaned_up_by_the_next(server, seed):
    """SIGKILL to the server-side deploy at a random moment (no trap runs: the OOM killer,
    a power cut): the old or the new version serves on without a failed request, and the
    next deploy records the dead one, removes what it left and ends with one web container
    and .env naming what serves."""
    ensure("staging", STAGING_A)
    moment = fault_moment(seed * 15485863)
    before = len(history_lines("staging"))
    with OpenLoad(f"http://127.0.0.1:{PORTS['staging']}/", rate=RATE, seconds=300) as load:
        killed, log = deploy_signalled(STAGING_B, moment, signal.SIGKILL)
        status = inv("deploy.status", "--env", "staging")
        # Its children (a compose run, a docker stop) may hold the lock a while longer.
        following = inv("deploy.staging", "--tag", STAGING_A, "--force", "--wait", "120")
        time.sleep(1.5)
        seconds = load.now()
    print(f"killed after {moment:.2f}s:\n{killed}\n{status.stdout}\n{following.stdout}")
    assert following.returncode == 0, following.stdout + following.stderr
    assert_nothing_lost(load, seconds)
    records = [json.loads(line) for line in history_lines("staging")[before:]]
    assert [(r["version"], r["outcome"]) for r in records][-1] == (STAGING_A, "ok")
    assert [r["version"] for r in records] == [STAGING_B, STAGING_A], records  # the killed one recorded exactly once
    if records[0]["outcome"] == "failed":  # it died mid-deploy
        assert records[0]["failed_step"].endswith("(its process died)"), records[0]
        assert "ended without a result" in status.stdout + following.stdout
    assert (log.with_suffix(".status")).read_text().strip() in {"0", "1"}  # reattaching to it answers
    assert served_version("staging") == STAGING_A
    assert b"VERSION=" + STAGING_A.encode() in server_env_file("staging").splitlines()
    assert len(web_containers("staging")) == 1  # nothing the killed deploy started is left
    assert {s.version for s in load.samples if s.scheduled > seconds - 1} == {STAGING_A}
