"""Cron jobs (issue 17, part 3) on the sandbox's staging: management commands of the allowlist
on a schedule, in a one-off container of the deployed version, run as root by the server.

The sandbox has no systemd as PID 1, so server.setup installs the jobs as one cron entry; no
cron daemon runs here, so the tests run each line's command themselves, exactly as cron would
(`sh -c` with it). A run is recorded and shown by `inv cron.status`; `forbid` skips a run while
the previous one runs, `replace` stops it; a failed run reaches the webhooks; a job waits for a
deploy in progress and runs on the version it deployed. The timer units and the schedule in
systemd's words are unit-tested (tests/unit/test_cron.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, STAGING_A, STAGING_B, inv, server_env_file, ssh_raw, tool_env
from tests.e2e.deployed import ensure
from tests.e2e.test_notify import Receiver

pytestmark = pytest.mark.e2e

CRON_FILE = Path("/etc/cron.d/pushdeploy-cron-staging")
CRON_DIR = Path("/var/lib/pushdeploy/staging/cron")
CONFIG = """deploy:
  environments:
    staging:
      manage_commands: {check: [], pixel_job: ['--seconds=[0-9]+', '--exit=[0-9]']}
      cron:
        tidy: {schedule: '*/15 * * * *', command: check}
        long: {schedule: '* * * * *', command: 'pixel_job --seconds=12'}
        swap: {schedule: '*/2 * * * *', command: 'pixel_job --seconds=10', policy: replace}
        broken: {schedule: '0 * * * *', command: 'pixel_job --exit=3'}
"""


@pytest.fixture(scope="module")
def cron(server, tmp_path_factory):
    """staging with four jobs and a webhook (a runtime config over invoke.yaml); none afterwards."""
    config = tmp_path_factory.mktemp("cron") / "cron.yaml"
    config.write_text(CONFIG)
    receiver = Receiver()
    ensure("staging", STAGING_A)
    (CRON_DIR / "runs.jsonl").unlink(missing_ok=True)
    setup = inv("-f", str(config), "server.setup", "--env", "staging", DEPLOY_STAGING_WEBHOOKS=receiver.url("/cron"))
    assert setup.returncode == 0, setup.stdout + setup.stderr
    try:
        yield config, receiver, setup
    finally:
        removed = inv("server.setup", "--env", "staging", DEPLOY_STAGING_WEBHOOKS="")
        assert removed.returncode == 0, removed.stdout + removed.stderr
        assert not CRON_FILE.exists()
        receiver.server.shutdown()


def command_of(job: str) -> str:
    line = next(line for line in CRON_FILE.read_text().splitlines() if f" cron staging {job} " in line)
    return line.split(" root ", 1)[1]


def start(job: str) -> subprocess.Popen:
    """The job's entry, run as cron runs it."""
    return subprocess.Popen(["sh", "-c", command_of(job)], env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


def run(job: str) -> int:
    return start(job).wait(timeout=300)


def runs(job: str) -> list[dict]:
    lines = (CRON_DIR / "runs.jsonl").read_text().splitlines() if (CRON_DIR / "runs.jsonl").exists() else []
    return [entry for entry in map(json.loads, lines) if entry["job"] == job]


def running(job: str) -> bool:
    out = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"name=^pd-cron-pixel-staging-{job}$"],
        env=tool_env(),
        capture_output=True,
        text=True,
    )
    return bool(out.stdout.strip())


def wait_until(predicate, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_setup_installs_the_jobs_as_a_cron_entry_and_a_run_is_recorded_and_shown(cron):
    config, _, setup = cron
    assert (
        "| cron      cron jobs of staging on this host: broken (0 * * * *), long (* * * * *), "
        "swap (*/2 * * * *), tidy (*/15 * * * *): cron (/etc/cron.d/pushdeploy-cron-staging"
    ) in setup.stdout
    assert CRON_FILE.stat().st_mode & 0o777 == 0o644 and CRON_FILE.stat().st_uid == 0
    assert "*/15 * * * * root /opt/pushdeploy/bin/deploy cron staging tidy >>" in CRON_FILE.read_text()
    assert run("tidy") == 0
    last = runs("tidy")[-1]
    deployed = re.search(rb"^VERSION=(\S+)$", server_env_file("staging"), re.M).group(1).decode()
    assert (last["result"], last["exit"], last["version"], last["command"]) == ("ok", 0, deployed, "check")
    status = inv("-f", str(config), "cron.status", "--env", "staging")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "tidy: */15 * * * *  manage.py check  (forbid, runs here)" in status.stdout
    assert re.search(rf"last run: \S+Z ok, exit 0 in [0-9.]+s on {re.escape(deployed)}$", status.stdout, re.M)
    assert "4 job(s), running here: broken long swap tidy" in status.stdout
    # Only root's cron runs a job: the deploy account cannot, with or without sudo.
    refused = ssh_raw("cron staging tidy")
    assert refused.returncode == 64 and "unknown command 'cron'" in refused.stderr
    sudo = subprocess.run(
        ["sudo", "-u", "pd-deploy", "sudo", "-n", "/opt/pushdeploy/bin/deploy", "cron", "staging", "tidy"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert sudo.returncode == 64 and "cron runs as root from the environment's cron entry" in sudo.stderr


def test_forbid_skips_a_run_while_the_last_one_runs_and_replace_stops_it(cron):
    first = start("long")
    wait_until(lambda: running("long"))
    began = time.monotonic()
    assert run("long") == 0
    assert time.monotonic() - began < 5  # skipped at once, not queued
    assert first.wait(timeout=120) == 0
    assert [(r["result"], r["message"]) for r in runs("long")[-2:]] == [
        ("skipped", "the previous run still runs (policy forbid)"),
        ("ok", ""),
    ]
    assert runs("long")[-1]["duration"] >= 12

    old = start("swap")
    wait_until(lambda: running("swap"))
    assert run("swap") == 0  # stops the one in hand, then does the work itself
    assert old.wait(timeout=60) == 0
    replaced, done = runs("swap")[-2:]
    assert (replaced["result"], done["result"]) == ("replaced", "ok")
    assert replaced["duration"] < 10 <= done["duration"]
    assert not running("swap")


def test_a_failed_run_is_recorded_shown_and_sent_to_the_webhooks(cron):
    config, receiver, _ = cron
    assert run("broken") == 1
    last = runs("broken")[-1]
    assert (last["result"], last["exit"]) == ("failed", 3)
    body = receiver.wait("/cron", lambda b: b.get("job") == "broken")[-1]
    assert (body["event"], body["kind"], body["exit"], body["env"]) == ("failed", "cron", 3, "staging")
    assert "cron job broken (manage.py pixel_job --exit=3) FAILED on pixel-staging" in body["text"]
    status = inv("-f", str(config), "cron.status", "--env", "staging")
    assert "last run FAILED: broken" in status.stdout and re.search(r"last run: \S+Z failed, exit 3", status.stdout)


def test_a_job_waits_for_a_deploy_in_progress_and_runs_on_the_version_it_deployed(cron):
    config, _, _ = cron
    ensure("staging", STAGING_A)
    deploy = subprocess.Popen(
        [sys.executable, "-m", "invoke", "-f", str(config), "deploy.staging", "--tag", STAGING_B, "--force"],
        cwd=ROOT,
        env=tool_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert deploy.stdout is not None
    for line in deploy.stdout:
        if "==> pull" in line:
            break
    log = CRON_DIR / "tidy.log"
    before = log.stat().st_size
    assert run("tidy") == 0
    said = log.read_bytes()[before:].decode()
    assert "tidy: waiting for " in said and "deploy" in said
    deploy.stdout.read()
    assert deploy.wait(timeout=300) == 0
    assert runs("tidy")[-1]["version"] == STAGING_B
