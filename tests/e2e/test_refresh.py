"""Staging refreshed from production on the sandbox (`inv db.refresh`, over the admin
connection): production's rows arrive in staging, scrubbed, staging serves again, and
the refresh is in staging's history; a dump cut short changes nothing."""

from __future__ import annotations

import json
import secrets
import subprocess

from tests.e2e.conftest import APP_DIRS, STAGING_A, get, history_lines, inv, psql
from tests.e2e.deployed import ensure


def test_refresh_copies_production_rows_into_staging_and_scrubs_them(server):
    for env, version in (("production", "1.0.0"), ("staging", STAGING_A)):
        if get(env)[0] != 200:  # any version will do, as long as it serves with its database
            ensure(env, version)
    token = secrets.token_hex(4)
    psql(
        "production",
        f"INSERT INTO notes_visit (created_at, path) VALUES (now(), 'secret-{token}-a@example.org'), (now(), 'secret-{token}-b@example.org')",
    )
    psql("staging", f"INSERT INTO notes_visit (created_at, path) VALUES (now(), 'staging-only-{token}')")
    production_ids = psql("production", "SELECT string_agg(id::text, ',' ORDER BY id) FROM notes_visit")

    result = inv("db.refresh", "--from", "production", "--to", "staging", "--fresh")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "checksum ok" in result.stdout and "refreshed staging from production" in result.stdout

    assert psql("staging", "SELECT string_agg(id::text, ',' ORDER BY id) FROM notes_visit") == production_ids
    assert (
        psql("staging", f"SELECT count(*) FROM notes_visit WHERE path LIKE '%{token}%'") == "0"
    )  # scrubbed, and staging's own row gone
    assert psql("staging", "SELECT count(*) FROM notes_visit WHERE path NOT LIKE 'scrubbed-%'") == "0"
    assert (
        psql("production", f"SELECT count(*) FROM notes_visit WHERE path LIKE 'secret-{token}-%'") == "2"
    )  # the source is untouched
    assert not (APP_DIRS["staging"] / "maintenance/on").exists()
    assert get("staging")[0] == 200

    record = json.loads(history_lines("staging")[-1])
    assert record["kind"] == "refresh" and record["source"] == "production" and record["outcome"] == "ok"
    assert [s["name"] for s in record["steps"]] == [
        "receive",
        "maintenance-on",
        "database",
        "restore",
        "migrate",
        "scrub",
        "maintenance-off",
    ]


def test_a_target_without_a_scrub_step_is_refused_before_anything_is_read(server):
    result = inv("db.refresh", "--from", "staging", "--to", "production")
    assert result.returncode == 2
    assert "production has no scrub step" in result.stderr


def test_a_dump_cut_short_changes_nothing(server):
    before = psql("staging", "SELECT count(*) FROM notes_visit")
    records = len(history_lines("staging"))
    # What a dropped transfer looks like to the server: bytes, but no checksum trailer.
    result = subprocess.run(
        ["/opt/pushdeploy/bin/deploy", "db-restore", "staging", "--from=production"],
        input=b"PGDMP" + b"x" * 500,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert b"without its checksum trailer" in result.stdout
    assert psql("staging", "SELECT count(*) FROM notes_visit") == before
    assert not (APP_DIRS["staging"] / "maintenance/on").exists()
    assert json.loads(history_lines("staging")[records])["outcome"] == "failed"
