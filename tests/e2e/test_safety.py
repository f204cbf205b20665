"""Never half-deployed: static files, rollback, backups, locks, ordering, dropped connections (zero downtime under load: test_zero_downtime.py)."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    APP_DIRS,
    PORTS,
    ROOT,
    STAGING_A,
    STAGING_B,
    compose,
    get,
    history_lines,
    inv,
    psql,
    served_version,
    server_env_file,
    tool_env,
    wait_for_version,
)
from tests.e2e.deployed import ensure, web_containers
from tests.e2e.proxy_config import changed_staging_config

pytestmark = pytest.mark.e2e


def last_record(env: str) -> dict:
    return json.loads(history_lines(env)[-1])


def release_css(env: str) -> str:
    return re.search(r'href="(/static/notes/release\.[0-9a-f]{12}\.css)"', get(env, "/")[1]).group(1)


def test_recent_releases_keep_their_static_files_and_older_ones_are_pruned(server):
    urls = {}
    for tag in (STAGING_A, STAGING_B, "c3c3c3c", "d4d4d4d"):
        ensure("staging", tag)
        urls[tag] = release_css("staging")
    assert len(set(urls.values())) == 4  # each release has its own asset
    # static_keep is 3: the last three releases' files stay, the oldest is gone
    assert [get("staging", url)[0] for url in urls.values()] == [404, 200, 200, 200]
    assert "pixel release c3c3c3c" in get("staging", urls["c3c3c3c"])[1]


def test_a_failed_migration_leaves_the_database_and_the_site_unchanged(server):
    ensure("production", "1.1.0")
    env_before = server_env_file("production")
    result = inv("deploy.production", "--tag", "1.3.0-badmigration", "--force")
    assert result.returncode == 1
    assert "FAILED migrate" in result.stdout
    assert served_version("production") == "1.1.0"
    assert server_env_file("production") == env_before
    assert psql("production", "select to_regclass('notes_broken_probe') is null") == "t"  # transactional DDL
    assert psql("production", "select count(*) from django_migrations where name = '0002_broken'") == "0"
    assert last_record("production")["failed_step"] == "migrate"


def test_older_release_is_refused_and_rollback_goes_back(server):
    ensure("production", "1.0.0")
    ensure("production", "1.1.0")
    refused = inv("deploy.production", "--tag", "1.0.0")
    assert refused.returncode == 65
    assert (
        "older than the deployed 1.1.0" in refused.stdout + refused.stderr
        and "deploy.rollback" in refused.stdout + refused.stderr
    )
    assert served_version("production") == "1.1.0"

    back = inv("deploy.rollback", "--env", "production")
    assert back.returncode == 0, back.stdout
    assert wait_for_version("production", "1.0.0") == "1.0.0"
    record = last_record("production")
    assert (record["kind"], record["version"], record["previous"], record["outcome"]) == (
        "rollback",
        "1.0.0",
        "1.1.0",
        "ok",
    )

    forward = inv("deploy.rollback", "--env", "production", "--to", "1.1.0")
    assert forward.returncode == 0
    assert wait_for_version("production", "1.1.0") == "1.1.0"


def test_production_deploy_takes_a_backup_that_restores(server):
    ensure("production", "1.1.0")
    get("production", "/")  # a visit row
    assert inv("deploy.production", "--tag", "1.1.0", "--force").returncode == 0
    steps = [s["name"] for s in last_record("production")["steps"]]
    assert steps.index("backup") < steps.index("migrate")
    listing = inv("db.backups", "--env", "production")
    assert listing.returncode == 0
    dump = re.findall(r"(/var/lib/pushdeploy/production/backups/\S+\.dump)", listing.stdout)[0]
    assert Path(dump).stat().st_mode & 0o077 == 0  # root only

    visits = psql("production", "select count(*) from notes_visit")
    psql("production", "delete from notes_visit")
    assert psql("production", "select count(*) from notes_visit") == "0"
    # The restore procedure from the README, as the admin runs it on the server.
    with open(dump, "rb") as stream:
        restore = subprocess.run(
            [
                "docker",
                "compose",
                "-p",
                "pixel-production",
                "exec",
                "-T",
                "db",
                "sh",
                "-c",
                'pg_restore --clean --if-exists -U "$POSTGRES_USER" -d "$POSTGRES_DB"',
            ],
            cwd=APP_DIRS["production"],
            env=tool_env(),
            stdin=stream,
            capture_output=True,
            timeout=120,
        )
    assert restore.returncode == 0, restore.stderr
    assert psql("production", "select count(*) from notes_visit") == visits != "0"


def test_a_failed_backup_stops_the_deploy_before_anything_changes(server):
    ensure("production", "1.1.0")
    backups = Path("/var/lib/pushdeploy/production/backups")
    aside = backups.with_name("backups.aside")
    if backups.exists():
        backups.rename(aside)
    backups.write_text("not a directory: the backup cannot be written\n")
    try:
        env_before = server_env_file("production")
        result = inv("deploy.production", "--tag", "1.1.0", "--force")
        assert result.returncode == 1
        assert "FAILED backup" in result.stdout
        steps = [s["name"] for s in last_record("production")["steps"]]
        assert "migrate" not in steps and "start" not in steps
        assert server_env_file("production") == env_before
        assert served_version("production") == "1.1.0"
    finally:
        backups.unlink()
        if aside.exists():
            aside.rename(backups)


def test_maintenance_mode_answers_503_without_stopping_anything(server):
    ensure("staging", STAGING_A)
    containers = compose("staging", "ps", "-q").stdout.split()
    assert inv("deploy.maintenance", "--env", "staging", "--on").returncode == 0
    try:
        status, body = get("staging", "/")
        assert status == 503 and "being updated" in body
        request = urllib.request.Request(
            f"http://127.0.0.1:{PORTS['staging']}/api/x", headers={"Accept": "application/json"}
        )
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(request, timeout=5)
        assert error.value.code == 503 and json.loads(error.value.read())["status"] == "maintenance"
        assert compose("staging", "ps", "-q").stdout.split() == containers
    finally:
        assert inv("deploy.maintenance", "--env", "staging", "--off").returncode == 0
    assert get("staging", "/")[0] == 200


def test_deploy_with_maintenance_wraps_the_migrations(server):
    ensure("staging", STAGING_A)
    result = inv("deploy.staging", "--tag", STAGING_B, "--force", "--maintenance")
    assert result.returncode == 0
    steps = [s["name"] for s in last_record("staging")["steps"]]
    assert (
        steps.index("maintenance-on") < steps.index("migrate") < steps.index("switch") < steps.index("maintenance-off")
    )
    assert get("staging", "/")[0] == 200


def test_five_deploys_at_once_never_interleave(server):
    ensure("staging", STAGING_A)
    before = len(history_lines("staging"))
    tags = [STAGING_B, STAGING_A, STAGING_B, STAGING_A, STAGING_B]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "invoke", "deploy.staging", "--tag", tag, "--force"],
            cwd=ROOT,
            env=tool_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for tag in tags
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    codes = [p.returncode for p in procs]
    assert set(codes) <= {0, 75}, outputs
    assert codes.count(0) >= 1
    for code, output in zip(codes, outputs, strict=True):
        if code == 75:
            assert re.search(r"deploy of \S+ by \S+ in progress since \d{4}-", output)
    records = [json.loads(line) for line in history_lines("staging")[before:]]
    assert len(records) == codes.count(0)
    # one at a time: each deploy started after the previous one ended
    for first, second in itertools.pairwise(records):
        first_end = time.mktime(time.strptime(first["time"], "%Y-%m-%dT%H:%M:%SZ"))
        second_start = time.mktime(time.strptime(second["time"], "%Y-%m-%dT%H:%M:%SZ")) - second["duration"]
        assert second_start >= first_end - 1
    final = records[-1]["version"]
    assert served_version("staging") == final
    assert f"VERSION={final}".encode() in server_env_file("staging").splitlines()
    assert len(web_containers("staging")) == 1


def test_an_older_staging_build_is_refused(server):
    # The client sends each build's commit time; sent raw here to pick the times (in the past:
    # the server refuses an order more than a day ahead of its clock).
    from tests.e2e.conftest import ssh_raw

    assert ssh_raw(f"deploy staging {STAGING_A} --order=1700000000 --force").returncode == 0
    try:
        older = ssh_raw(f"deploy staging {STAGING_B} --order=1699999999")
        assert older.returncode == 65
        assert "older than the deployed build" in older.stderr
        assert served_version("staging") == STAGING_A
        assert ssh_raw(f"deploy staging {STAGING_B} --order=1700000001").returncode == 0
        assert served_version("staging") == STAGING_B
    finally:
        Path("/var/lib/pushdeploy/staging/order").unlink(missing_ok=True)


def test_waiting_deploys_queue_instead_of_failing(server):
    ensure("staging", STAGING_A)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "invoke", "deploy.staging", "--tag", tag, "--force", "--wait", "300"],
            cwd=ROOT,
            env=tool_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for tag in (STAGING_B, STAGING_A)
    ]
    for proc in procs:
        proc.communicate(timeout=600)
    assert [p.returncode for p in procs] == [0, 0]


RUNS = Path("/var/lib/pushdeploy/staging/runs")


def _run_logs() -> set[Path]:
    return set(RUNS.glob("*.log"))


def _follow_server_log(known: set[Path], marker: str, seconds: float = 120) -> None:
    """Wait until a new deploy's server-side log (not one in known) shows a marker line."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for log in _run_logs() - known:
            if marker in log.read_text():
                return
        time.sleep(0.05)
    raise AssertionError(f"{marker!r} never appeared in the deploy log")


def _wait_unlocked(seconds: float = 180) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = inv("deploy.status", "--env", "staging")
        if "deploy in progress: no" in status.stdout:
            return status.stdout
        time.sleep(1)
    raise AssertionError("the deploy never finished on the server")


@pytest.mark.parametrize("moment", ["==> pull", "==> migrate", "==> health", "==> switch"])
def test_a_killed_client_does_not_stop_the_deploy(server, moment):
    ensure("staging", STAGING_A)
    before, known = len(history_lines("staging")), _run_logs()
    client = subprocess.Popen(
        [sys.executable, "-m", "invoke", "deploy.staging", "--tag", STAGING_B, "--force"],
        cwd=ROOT,
        env=tool_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    _follow_server_log(known, moment)
    os.killpg(client.pid, signal.SIGKILL)  # the CI job is cancelled
    client.wait()
    status = _wait_unlocked()
    assert "version: " + STAGING_B in status
    records = [json.loads(line) for line in history_lines("staging")[before:]]
    assert [(r["version"], r["outcome"]) for r in records] == [(STAGING_B, "ok")]
    assert served_version("staging") == STAGING_B
    logs = inv("deploy.logs", "--env", "staging")
    assert f"deployed {STAGING_B} to staging" in logs.stdout


def test_a_dropped_connection_reattaches_to_the_running_deploy(server):
    ensure("staging", STAGING_A)
    before, known = len(history_lines("staging")), _run_logs()
    client = subprocess.Popen(
        [sys.executable, "-m", "invoke", "deploy.staging", "--tag", STAGING_B, "--force"],
        cwd=ROOT,
        env=tool_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _follow_server_log(known, "==> migrate")
    # Cut the SSH session on the server side, as a network failure would.
    subprocess.run(["pkill", "-f", "^sshd: pd-deploy"], check=False)
    output, _ = client.communicate(timeout=300)
    assert client.returncode == 0, output
    assert "reattaching" in output
    assert f"deployed {STAGING_B} to staging" in output
    assert len(history_lines("staging")) == before + 1  # one deploy, not two


def test_the_proxy_reloads_only_when_its_configuration_changed(server, tmp_path):
    ensure("staging", STAGING_A)
    config = changed_staging_config(tmp_path, lambda text: text + "# changed by a test\n")
    proxy = compose("staging", "ps", "-q", "proxy").stdout.split()
    try:
        assert inv("-f", str(config), "server.setup", "--env", "staging").returncode == 0
        first = inv("-f", str(config), "deploy.staging", "--tag", STAGING_B, "--force")
        second = inv("-f", str(config), "deploy.staging", "--tag", STAGING_A, "--force")
        assert first.returncode == second.returncode == 0
        assert "reloaded proxy (its configuration changed)" in first.stdout
        assert "reloaded proxy" not in second.stdout
        assert compose("staging", "ps", "-q", "proxy").stdout.split() == proxy  # reloaded, never restarted
    finally:
        assert inv("server.setup", "--env", "staging").returncode == 0
