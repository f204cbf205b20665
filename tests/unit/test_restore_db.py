"""A rollback with --restore-db (issue 18, part 2): which backup it restores, what it says
it loses before it starts, its steps, its refusals (nothing changed), and the client's
requests and plan lines."""

from __future__ import annotations

import json
import os

import pytest

from pushdeploy import preview, requests
from tests.unit.test_marks import tool
from tests.unit.test_server_runs import ask, worker  # noqa: F401  (the fixture)

from pdserver import facts
from pdserver.request import Refused, parse


def record(kind, version, time, backup="", outcome="ok"):
    found = {"kind": kind, "version": version, "outcome": outcome, "time": time}
    return {**found, "backup": backup} if backup else found


HISTORY = [
    record("deploy", "1.0.0", "2026-12-01T10:00:00Z"),
    record("deploy", "1.1.0", "2026-12-02T10:00:05Z", "20261202T100000Z-1.0.0.dump"),
    record("deploy", "1.2.0", "2026-12-03T10:00:05Z", "20261203T100000Z-1.1.0.dump"),
    record("deploy", "1.3.0", "2026-12-04T10:00:05Z", outcome="failed"),
]


@pytest.mark.parametrize(
    ("target", "after", "since"),
    [
        ("1.1.0", "1.2.0", "2026-12-02T10:00:05Z"),  # the deploy that replaced it took the backup
        ("1.0.0", "1.1.0", "2026-12-01T10:00:00Z"),  # further back: writes since 1.1.0's deploy are lost
        ("1.2.0", None, "2026-12-03T10:00:05Z"),  # it serves (a failed deploy replaced nothing)
        ("0.9.0", None, ""),  # never served here
    ],
)
def test_the_backup_to_restore_is_the_one_the_replacing_deploy_took(target, after, since):
    found, started = tool().restore_point(HISTORY, target)
    assert (found and found["version"], started) == (after, since)


def test_a_later_rollback_to_it_restores_the_same_backup():
    records = [*HISTORY[:3], record("rollback", "1.1.0", "2026-12-03T11:00:00Z", "20261203T105959Z-1.2.0.dump")]
    records.append(record("deploy", "1.2.1", "2026-12-03T12:00:05Z", "20261203T120000Z-1.1.0.dump"))
    assert tool().restore_point(records, "1.1.0")[0]["backup"] == "20261203T120000Z-1.1.0.dump"


@pytest.fixture
def history(worker):  # noqa: F811
    state = worker.parent
    (state / "backups").mkdir()
    (state / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in HISTORY[:3]))
    return state


def test_a_rollback_with_restore_db_names_the_backup_in_its_request(history, capsys):
    (history / "backups/20261203T100000Z-1.1.0.dump").write_bytes(b"PGDMP")
    assert ask(capsys, "rollback staging --to=1.1.0 --restore-db --id=r1")[0] == 0
    request = (history / "runs/r1.request").read_text()
    assert "MAINTENANCE=1\n" in request  # maintenance throughout, asked or not
    assert f"RESTORE={history}/backups/20261203T100000Z-1.1.0.dump\n" in request
    assert "LOST_SINCE=2026-12-03T10:00:00Z\nRESTORE_FOR=1.2.0\n" in request


def test_a_later_batch_keeps_maintenance_on_and_restores_nothing(history, capsys):
    assert ask(capsys, "rollback staging --to=1.1.0 --restore-db --skip-migrate --id=r2")[0] == 0
    request = (history / "runs/r2.request").read_text()
    assert "MAINTENANCE=1\n" in request and "RESTORE=" not in request


def test_a_backup_recorded_before_backup_names_were_found_by_its_name_and_time(history, capsys):
    lines = [{k: v for k, v in r.items() if k != "backup"} for r in HISTORY[:3]]
    (history / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    for name in ("20261202T090000Z-1.1.0.dump", "20261203T100001Z-1.1.0.dump", "20261203T100001Z-1.0.0.dump"):
        (history / "backups" / name).write_bytes(b"PGDMP")
    assert ask(capsys, "rollback staging --to=1.1.0 --restore-db --id=r3")[0] == 0
    assert "backups/20261203T100001Z-1.1.0.dump\n" in (history / "runs/r3.request").read_text()


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("rollback staging --to=1.1.0 --restore-db --id=x", "is no longer kept (backup_keep: 10 keeps the newest)"),
        ("rollback staging --to=1.2.0 --restore-db --id=x", "1.2.0 has not served staging since a deploy replaced it"),
        ("rollback staging --to=0.9.0 --restore-db --id=x", "0.9.0 has not served staging since a deploy replaced it"),
    ],
)
def test_nothing_to_restore_is_refused_before_anything_changes(history, capsys, line, problem):
    with pytest.raises(Refused) as refused:
        ask(capsys, line)
    assert refused.value.code == facts.EXIT_OLDER and problem in str(refused.value)
    assert not os.path.exists(history / "runs/x.request")


def test_a_deploy_that_took_no_backup_cannot_be_restored_from(history, capsys):
    lines = [HISTORY[0], record("deploy", "1.1.0", "2026-12-02T10:00:05Z")]
    (history / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(Refused) as refused:
        ask(capsys, "rollback staging --to=1.0.0 --restore-db --id=x")
    assert "the deploy of 1.1.0 at 2026-12-02T10:00:05Z took no backup (backup: was off)" in str(refused.value)


def test_the_statement_says_what_is_lost_and_since_when():
    import calendar

    from pdserver import restoredb

    point = restoredb.Point("/s/backups/20261203T100000Z-1.1.0.dump", "2026-12-03T10:00:00Z", "1.2.0")
    said = restoredb.statement(point, now=calendar.timegm((2026, 12, 3, 10, 25, 0)))
    assert said.startswith(
        "the database goes back to 20261203T100000Z-1.1.0.dump, taken at 2026-12-03T10:00:00Z (25 min ago) "
        "before 1.2.0 was deployed: everything written since then is LOST"
    )
    assert restoredb.taken_at("20261203T100000Z-1.1.0.dump") == "2026-12-03T10:00:00Z"
    assert restoredb.taken_at("junk.dump") == ""


def test_the_steps_turn_maintenance_on_then_save_then_restore_in_place_of_unmigrate(server):
    from pdserver import env as envs
    from pdserver import plan

    env = envs.load("staging")
    env.values["BACKUP"] = "yes"
    steps = plan.deploy_steps(env, False, False, "rollback", "1.1.0", restore="/s/backups/x.dump")
    assert steps[steps.index("database") + 1 :][:4] == ["maintenance-on", "backup", "restore", "migrate"]
    assert "unmigrate" not in steps and steps[-1] == "maintenance-off"
    plain = plan.deploy_steps(env, False, False, "deploy", "1.1.0")
    assert plain[plain.index("database") + 1 :][:2] == ["backup", "migrate"]


def test_the_request_travels_and_the_server_reads_it():
    line = requests.rollback("production", run_id="r", by="ci", expect="h", restore_db=True)
    assert line == "rollback production --restore-db --id=r --by=ci --expect=h"
    assert parse(line.split(), 0).option("restore-db") is True
    planned = requests.plan("production", "", expect="h", rollback=True, restore_db=True)
    assert parse(planned.split(), 0).option("restore-db") is True
    with pytest.raises(Refused):
        parse("deploy production 1.0 --restore-db".split(), 0)


def test_the_plan_says_what_a_restore_loses_or_why_it_cannot():
    base = ["current=1.2.0", "target=1.1.0", "rollback=r", "order=ok", "unapply=none"]
    restoring = preview.parse(
        [*base, "restore=/s/b/x.dump", "lost_since=2026-12-03T10:00:00Z", "restore_loses=the database goes back"]
    )
    assert preview.verdict(restoring) == (
        0,
        "would go back to 1.1.0 (now 1.2.0) and restore the database: writes since 2026-12-03T10:00:00Z are LOST",
    )
    assert "restore:     the database goes back" in preview.show(restoring)
    refused = preview.parse([*base, "restore=refused: --restore-db: x is no longer kept"])
    assert preview.verdict(refused) == (65, "would be refused: no backup to restore (see restore)")
    assert "restore:     WOULD REFUSE: --restore-db: x is no longer kept" in preview.show(refused)


def test_a_backup_beside_web_gets_only_the_variables_that_name_the_database():
    from pdserver import containers

    environ = ["PATH=/usr/local/bin", "POSTGRES_HOST=db.internal", "POSTGRES_PASSWORD=s3cret", "SECRET_KEY=x"]
    environ += ["DATABASE_URL=postgres://u:p@h/d", "PGPORT=5433", "HOME=/app", "POSTGRES_DB=a\nb"]
    assert containers.database_environment(environ) == (
        "POSTGRES_HOST=db.internal\nPOSTGRES_PASSWORD=s3cret\nDATABASE_URL=postgres://u:p@h/d\nPGPORT=5433\n"
    )


def test_compose_without_a_db_service_backs_up_through_a_backup_image():
    from pushdeploy.settings import ConfigError, from_config

    def env(**settings):
        deploy = {"environments": {"production": {"hosts": "h", "db_service": "", **settings}}}
        return from_config(deploy, {}, environ={}).environment("production")

    assert env(backup=True, backup_image="postgres:16").backup_image == "postgres:16"
    with pytest.raises(ConfigError, match="backups need db_service .* or backup_image"):
        env(backup=True)
