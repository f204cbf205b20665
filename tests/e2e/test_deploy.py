"""Deploys through the real stack: sshd, forced command, sudo, dockerd, compose, registry, Django, PostgreSQL, nginx."""

from __future__ import annotations

import json
import re

import pytest

from tests.e2e.conftest import (
    STAGING_A,
    STAGING_B,
    get,
    history_lines,
    inv,
    psql,
    served_version,
    server_env_file,
    wait_for_version,
)

pytestmark = pytest.mark.e2e


def deployed(env: str, *args: str):
    task = "deploy.staging" if env == "staging" else "deploy.production"
    return inv(task, *args)


def test_server_setup_twice_changes_nothing_the_second_time(server):
    again = inv("server.setup", "--env", "staging")
    assert again.returncode == 0
    assert "nothing changed" in again.stdout
    assert not re.search(r"\| changed ", again.stdout)
    assert re.search(r"\| unchanged /opt/pushdeploy/bin/deploy$", again.stdout, re.M)


def test_staging_deploy_serves_the_new_build(server):
    template = server_env_file("staging")
    result = deployed("staging", "--tag", STAGING_A)
    assert result.returncode == 0, result.stdout + result.stderr
    assert wait_for_version("staging", STAGING_A) == STAGING_A
    # progress is shown step by step, prefixed with the environment and host, with timings
    for step in ("pull", "database", "migrate", "start", "health", "admit", "switch", "retire", "prune-static"):
        assert re.search(rf"^staging 127\.0\.0\.1:2222 \| +ok {step} \([0-9.]+s\)$", result.stdout, re.M), step
    assert re.search(r"^staging 127\.0\.0\.1:2222 \| ok in [0-9.]+s: deployed a1a1a1a", result.stdout, re.M)

    # .env: only VERSION changed
    after = server_env_file("staging")
    assert [line for line in after.splitlines() if not line.startswith(b"VERSION=")] == [
        line for line in template.splitlines() if not line.startswith(b"VERSION=")
    ]
    assert b"VERSION=" + STAGING_A.encode() in after.splitlines()

    # the migration is applied in PostgreSQL, and the app's health check agrees
    assert (
        psql("staging", "select count(*) from django_migrations where app = 'notes' and name = '0001_initial'") == "1"
    )
    assert get("staging", "/health")[0] == 200

    # nginx serves the collected (hashed) static file the page links to
    _, page = get("staging", "/")
    css = re.search(r'href="(/static/notes/site\.[0-9a-f]+\.css)"', page).group(1)
    status, body = get("staging", css)
    assert status == 200 and "pixel-static-ok" in body


def test_staging_deploy_without_tag_uses_the_ci_commit(server):
    result = inv(
        "deploy.staging",
        CIRCLE_SHA1=STAGING_B,
        CIRCLECI="true",
        CIRCLE_USERNAME="jane",
        CIRCLE_BUILD_URL="https://circleci.com/gh/o/pixel/77",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert wait_for_version("staging", STAGING_B) == STAGING_B
    record = json.loads(history_lines("staging")[-1])
    assert (record["by"], record["url"], record["outcome"]) == (
        "circleci:jane",
        "https://circleci.com/gh/o/pixel/77",
        "ok",
    )


def test_production_deploys_change_the_version_and_history_records_both(server):
    before = len(history_lines("production"))
    assert (
        deployed("production", "--tag", "1.0.0", "--force").returncode == 0
    )  # --force: reruns may find 1.1.0 deployed
    assert wait_for_version("production", "1.0.0") == "1.0.0"
    assert deployed("production", "--tag", "1.1.0").returncode == 0
    assert wait_for_version("production", "1.1.0") == "1.1.0"

    records = [json.loads(line) for line in history_lines("production")[before:]]
    assert [(r["version"], r["outcome"]) for r in records] == [("1.0.0", "ok"), ("1.1.0", "ok")]
    assert records[1]["previous"] == "1.0.0"
    assert [s["name"] for s in records[1]["steps"]] == [
        "preflight",
        "pull",
        "database",
        "backup",
        "migrate",
        "start",
        "health",
        "admit",
        "switch",
        "retire",
        "prune-static",
    ]

    table = inv("deploy.history", "--env", "production")
    assert table.returncode == 0
    assert re.search(r"\| .*deploy +1\.1\.0 +1\.0\.0 +ok", table.stdout)


def test_a_tag_missing_from_the_registry_fails_at_pull_and_changes_nothing(server):
    assert deployed("production", "--tag", "1.1.0").returncode == 0
    env_before = server_env_file("production")
    result = deployed("production", "--tag", "9.9.9")
    assert result.returncode == 1
    assert "FAILED pull" in result.stdout
    assert served_version("production") == "1.1.0"
    assert server_env_file("production") == env_before
    record = json.loads(history_lines("production")[-1])
    assert (record["version"], record["outcome"], record["failed_step"]) == ("9.9.9", "failed", "pull")


def test_status_shows_the_deployed_version_and_services(server):
    assert deployed("production", "--tag", "1.1.0").returncode == 0
    result = inv("deploy.status", "--env", "production")
    assert result.returncode == 0
    assert "production 127.0.0.1:2222 | version: 1.1.0" in result.stdout
    assert re.search(r"\| last deploy: \S+Z deploy of 1\.1\.0 \(was \S+\): ok, by local:", result.stdout)
    assert re.search(r"\|\s+\S*web\S*\s.*(Up|running)", result.stdout)


def test_bad_input_is_refused_before_connecting(server):
    history_before = history_lines("production")
    for args in (("--tag", "1/;e${IFS}id>x;#"), ("--tag", "latest"), ()):
        result = deployed("production", *args)
        assert result.returncode == 2
        assert "error:" in result.stderr
    assert history_lines("production") == history_before


def test_server_check_reports_installed_and_current(server):
    result = inv("server.check", "--env", "production")
    assert result.returncode == 0, result.stdout
    assert "server side: installed, current" in result.stdout
    assert re.search(r"docker: \d+\.", result.stdout)
    assert re.search(r"version: ", result.stdout)


def test_an_out_of_date_server_side_is_refused_until_setup_runs(server):
    conf = "/etc/pushdeploy/staging.conf"
    original = open(conf).read()
    try:
        with open(conf, "a") as stream:
            stream.write("# edited by hand on the server\n")
        before = history_lines("staging")
        result = deployed("staging", "--tag", STAGING_A, "--force")
        assert result.returncode == 78
        assert "inv server.setup --env staging" in result.stdout + result.stderr
        assert history_lines("staging") == before
        assert "OUT OF DATE" in inv("server.check", "--env", "staging").stdout
        assert inv("server.setup", "--env", "staging").returncode == 0
        assert deployed("staging", "--tag", STAGING_A, "--force").returncode == 0
    finally:
        if open(conf).read() != original:
            open(conf, "w").write(original)
