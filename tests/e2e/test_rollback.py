"""Rollback goes back along what served, and releases marked bad stay out (issue 18, parts
3 and 4), on the sandbox's staging: a rollback returns to the version that served before
the current one took over and marks the one it undid bad; a second rollback never goes
to a release that was rolled back; a deploy of a bad release is refused (65) and changes
nothing until it is marked good or forced; plan, history and status say so."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import STAGING_A, STAGING_B, inv, served_version
from tests.e2e.deployed import ensure

pytestmark = pytest.mark.e2e

A, B, C = STAGING_A, STAGING_B, "c3c3c3c"


def ok(*args: str) -> str:
    result = inv(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_a_rollback_goes_back_along_what_served_and_marks_what_it_undid(server):
    ensure("staging", A)
    for version in (B, C):  # whatever earlier tests left marked
        ok("deploy.mark-good", version, "--env", "staging")
    try:
        ok("deploy.staging", "--tag", B)
        planned = ok("deploy.plan", "--env", "staging", "--rollback")
        assert f"would go back to {A} (now {B})" in planned and f"{A} served before {B} took over" in planned

        rolled = ok("deploy.rollback", "--env", "staging")
        assert f"going back: {A} served before {B} took over" in rolled
        assert served_version("staging") == A

        # B is marked bad by the rollback: a deploy of it is refused before anything changes.
        again = inv("deploy.staging", "--tag", B)
        assert again.returncode == 65, again.stdout + again.stderr
        assert f"{B} is marked bad by " in again.stdout + again.stderr
        assert f"rolled back to {A}" in again.stdout + again.stderr
        assert served_version("staging") == A
        history = ok("deploy.history", "--env", "staging", "--limit", "5")
        assert "BAD: marked bad by " in history

        # The case: 1.0.1 rolled back, 1.0.2 deployed and rolled back: 1.0.0 again, not 1.0.1.
        ok("deploy.staging", "--tag", C)
        rolled = ok("deploy.rollback", "--env", "staging")
        assert f"going back: {A} served before {C} took over" in rolled
        assert served_version("staging") == A
        further = inv("deploy.plan", "--env", "staging", "--rollback")
        assert f"-> {B}" not in further.stdout and f"-> {C}" not in further.stdout  # never a rolled-back release

        status = ok("deploy.status", "--env", "staging")
        assert f"marked bad: {B}" in status and f"marked bad: {C}" in status

        # By hand, with a reason; --force deploys a bad release anyway; mark-good lets it back.
        ok("deploy.mark-bad", A, "--env", "staging", "--reason", "500s on checkout")
        status = ok("deploy.status", "--env", "staging")
        assert f"marked bad: {A} (SERVING NOW: inv deploy.rollback goes back)" in status
        assert ": 500s on checkout" in status
        ok("deploy.mark-good", A, "--env", "staging")
        ok("deploy.staging", "--tag", B, "--force")
        assert served_version("staging") == B
        ok("deploy.mark-good", C, "--env", "staging")
        ok("deploy.staging", "--tag", C)
        assert served_version("staging") == C
    finally:
        for version in (A, B, C):
            inv("deploy.mark-good", version, "--env", "staging")


def nothing_lost(load, seconds: float, rate: int = 50) -> None:
    """The open-loop load's verdict: no request failed, none took over 1 s, and it ran on schedule."""
    summary = load.summary(budget=1.0)
    print(summary.line())
    assert summary.failed == 0, summary.failures
    assert summary.slow == 0
    assert summary.sent >= rate * seconds * 0.9


def steps_of_last_run(env: str) -> list[str]:
    import json

    from tests.e2e.conftest import history_lines

    last = json.loads(history_lines(env)[-1])
    return [step["name"] for step in last["steps"]]


def test_an_instant_rollback_starts_the_kept_version_again_under_load(server):
    """After a deploy the previous version's containers are kept, stopped; a rollback in
    warm_rollback starts them again, checks their health and flips, without pulling or
    migrating: under open-loop load, no request fails and none takes over 1 s."""
    import json
    import time

    from tests.e2e.conftest import PORTS, history_lines
    from tests.openload import OpenLoad

    ensure("staging", A)
    ok("deploy.mark-good", B, "--env", "staging")
    try:
        ok("deploy.staging", "--tag", B)
        status = ok("deploy.status", "--env", "staging")
        assert f"kept ready: {A} (1 container(s), stopped: holding no memory) for " in status
        assert "a rollback to it is instant" in status
        with OpenLoad(f"http://127.0.0.1:{PORTS['staging']}/", rate=50, seconds=120) as load:
            time.sleep(1)
            started = load.now()
            rolled = inv("deploy.rollback", "--env", "staging")
            ended = load.now()
            time.sleep(1.5)
            seconds = load.now()
        assert rolled.returncode == 0, rolled.stdout + rolled.stderr
        nothing_lost(load, seconds)
        assert served_version("staging") == A
        assert steps_of_last_run("staging") == ["wake", "health", "admit", "switch", "retire"]
        record = json.loads(history_lines("staging")[-1])
        first_old = min((s.scheduled for s in load.samples if s.version == A and s.scheduled > started), default=None)
        print(
            f"instant rollback: {record['duration']}s on the server, client {ended - started:.2f}s, "
            f"{A} answered {first_old - started:.2f}s after the command"
            if first_old
            else "no answer of A seen"
        )
        assert "kept ready" not in ok("deploy.status", "--env", "staging")  # used: a next rollback is a full one
    finally:
        inv("deploy.mark-good", B, "--env", "staging")


def kept_containers(env: str, ids: list | None = None) -> dict:
    """The containers kept ready (or IDS): running?, CPU weight, network aliases."""
    import json
    import subprocess

    from tests.e2e.conftest import tool_env

    ids = ids or json.loads(open(f"/var/lib/pushdeploy/{env}/warm.json").read())["containers"]
    fmt = "{{.Id}} {{.State.Running}} {{.HostConfig.CpuShares}}{{range .NetworkSettings.Networks}}{{range .Aliases}} {{.}}{{end}}{{end}}"
    out = subprocess.run(
        ["docker", "inspect", "-f", fmt, *ids], env=tool_env(), capture_output=True, text=True, check=True
    )
    found = {}
    for line in out.stdout.splitlines():
        cid, running, shares, *aliases = line.split()
        found[cid] = {"running": running == "true", "shares": int(shares), "aliases": set(aliases)}
    return found


def test_kept_running_an_instant_rollback_starts_nothing_under_load(server, tmp_path):
    """warm_rollback_keep: running: the previous version's containers stay running, idle, out
    of the service's name, at the lowest CPU weight, and status says what they hold; a rollback
    gives them their weight and name back and flips, starting nothing: under open-loop load, no
    request fails and none takes over 1 s (the timings themselves: scripts/bench --only rollback)."""
    import json
    import subprocess
    import time
    from pathlib import Path

    from tests.e2e.conftest import PORTS, history_lines, tool_env
    from tests.openload import OpenLoad

    config = tmp_path / "running.yaml"
    config.write_text("deploy:\n  environments:\n    staging:\n      warm_rollback_keep: running\n")
    ensure("staging", A)
    ok("deploy.mark-good", B, "--env", "staging")
    assert inv("-f", str(config), "server.setup", "--env", "staging").returncode == 0
    try:
        ok("-f", str(config), "deploy.staging", "--tag", B)
        status = ok("-f", str(config), "deploy.status", "--env", "staging")
        assert f"kept ready: {A} (1 container(s), running idle, holding " in status and " MiB" in status
        assert "a rollback to it is instant" in status
        kept = kept_containers("staging")
        for facts in kept.values():  # running, named only in its slot, at the lowest CPU weight
            assert facts["running"] and facts["shares"] == 2
            assert "web" not in facts["aliases"] and facts["aliases"] & {"web-blue", "web-green"}
        with OpenLoad(f"http://127.0.0.1:{PORTS['staging']}/", rate=50, seconds=120) as load:
            time.sleep(1)
            started = load.now()
            rolled = inv("-f", str(config), "deploy.rollback", "--env", "staging")
            time.sleep(1.5)
            seconds = load.now()
        assert rolled.returncode == 0, rolled.stdout + rolled.stderr
        assert f"instant rollback: {A} is kept ready (running idle for " in rolled.stdout
        nothing_lost(load, seconds)
        assert served_version("staging") == A
        assert steps_of_last_run("staging") == ["wake", "health", "admit", "switch", "retire"]
        woken = kept_containers("staging", list(kept))
        assert all(facts["shares"] in (0, 1024) and "web" in facts["aliases"] for facts in woken.values()), woken
        record = json.loads(history_lines("staging")[-1])
        to_switch = sum(step["seconds"] for step in record["steps"][:4])
        first_old = min(s.scheduled for s in load.samples if s.version == A and s.scheduled > started)
        print(
            f"kept running: switched {to_switch:.1f}s into the run; {A} answered {first_old - started:.2f}s after the command"
        )

        # When the window ends, what was kept running goes on its own (bin/deploy warm-expire).
        short = tmp_path / "short.yaml"
        short.write_text(
            "deploy:\n  environments:\n    staging:\n      warm_rollback_keep: running\n      warm_rollback: 2\n"
        )
        assert inv("-f", str(short), "server.setup", "--env", "staging").returncode == 0
        ok("-f", str(short), "deploy.staging", "--tag", B, "--force")  # --force: the rollback marked it bad
        record = Path("/var/lib/pushdeploy/staging/warm.json")
        kept = list(kept_containers("staging"))
        deadline = time.monotonic() + 30

        def still_there() -> bool:
            inspect = subprocess.run(["docker", "inspect", *kept], env=tool_env(), capture_output=True, text=True)
            return record.exists() or inspect.returncode == 0

        while still_there() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not record.exists(), "warm-expire did not take what was kept"
        assert not still_there(), "warm-expire did not remove the kept container"
        assert "kept ready" not in ok("-f", str(short), "deploy.status", "--env", "staging")
    finally:
        inv("deploy.mark-good", B, "--env", "staging")
        assert inv("server.setup", "--env", "staging").returncode == 0


def test_a_rollback_to_another_version_or_after_the_window_is_a_full_one(server, tmp_path):
    ensure("staging", A)
    ok("deploy.mark-good", B, "--env", "staging")
    ok("deploy.mark-good", C, "--env", "staging")
    try:
        ok("deploy.staging", "--tag", B)
        ok("deploy.staging", "--tag", C)  # B is kept ready; A is not
        rolled = ok("deploy.rollback", "--env", "staging", "--to", A)
        assert f"full rollback: the version kept ready is {B}, not {A}" in rolled
        assert "pull" in steps_of_last_run("staging") and served_version("staging") == A

        config = tmp_path / "short.yaml"
        config.write_text("deploy:\n  environments:\n    staging:\n      warm_rollback: 1\n")
        assert inv("-f", str(config), "server.setup", "--env", "staging").returncode == 0
        try:
            ok("-f", str(config), "deploy.staging", "--tag", B, "--force")
            import time

            time.sleep(2)
            rolled = inv("-f", str(config), "deploy.rollback", "--env", "staging")
            assert rolled.returncode == 0, rolled.stdout + rolled.stderr
            assert "full rollback: it was kept for warm_rollback (1s), and that has passed" in rolled.stdout
            assert served_version("staging") == A
        finally:
            assert inv("server.setup", "--env", "staging").returncode == 0
    finally:
        for version in (B, C):
            inv("deploy.mark-good", version, "--env", "staging")


def test_a_rollback_past_a_migration_unapplies_it_first_under_load(server):
    """1.4.0-column adds a NOT NULL column (with a database default) and fills it; a
    rollback to 1.1.0 unapplies both migrations with 1.4.0-column's image while it still
    serves, then switches: under open-loop load nothing fails, the column is gone, 1.1.0
    reads and writes its table, and the rows written before are all there."""
    import json
    import time

    from tests.e2e.conftest import PORTS, history_lines, psql
    from tests.openload import OpenLoad

    column = (
        "select count(*) from information_schema.columns where table_name = 'notes_visit' and column_name = 'agent'"
    )
    ensure("production", "1.1.0")
    ok("deploy.production", "--tag", "1.4.0-column", "--force")
    assert psql("production", column) == "1"
    rows = int(psql("production", "select count(*) from notes_visit"))
    planned = ok("deploy.plan", "--env", "production", "--rollback")
    assert "unapplied first: notes.0002_visit_agent" in planned and "would go back to 1.1.0" in planned
    with OpenLoad(f"http://127.0.0.1:{PORTS['production']}/", rate=50, seconds=120) as load:
        time.sleep(1)
        back = inv("deploy.rollback", "--env", "production")
        time.sleep(1.5)
        seconds = load.now()
    assert back.returncode == 0, back.stdout + back.stderr
    nothing_lost(load, seconds)
    assert "full rollback: 1.4.0-column applied migrations (notes.0002_visit_agent)" in back.stdout
    assert "--- migrations to unapply: notes.0002_visit_agent" in back.stdout
    assert served_version("production") == "1.1.0"
    assert psql("production", column) == "0"
    assert int(psql("production", "select count(*) from notes_visit")) > rows  # its visits, written by 1.1.0 too
    record = json.loads(history_lines("production")[-1])
    assert (record["kind"], record["outcome"], record["unapplied"]) == ("rollback", "ok", "notes.0002_visit_agent")
    assert [s["name"] for s in record["steps"]].index("unmigrate") < [s["name"] for s in record["steps"]].index(
        "switch"
    )


def test_a_rollback_past_an_irreversible_migration_is_refused_and_changes_nothing(server):
    from tests.e2e.conftest import psql

    ensure("production", "1.1.0")
    try:
        ok("deploy.production", "--tag", "1.5.0-irreversible", "--force")
        planned = inv("deploy.plan", "--env", "production", "--rollback")
        assert planned.returncode == 65, planned.stdout + planned.stderr
        assert "would be refused: a migration to unapply has no reverse" in planned.stdout
        back = inv("deploy.rollback", "--env", "production")
        assert back.returncode == 1, back.stdout + back.stderr
        assert "--- irreversible: notes.0002_irreversible" in back.stdout
        assert "notes.0002_irreversible cannot be unapplied (no reverse operation)" in back.stdout
        assert "Nothing was changed" in back.stdout
        assert served_version("production") == "1.5.0-irreversible"
        assert psql("production", "select count(*) from django_migrations where name = '0002_irreversible'") == "1"
    finally:  # the next tests' 1.1.0 knows nothing of it
        psql("production", "delete from django_migrations where name = '0002_irreversible'")
        ensure("production", "1.1.0")


def test_a_rollback_with_restore_db_puts_the_backup_back_and_says_what_was_lost(server):
    """Past an irreversible migration, --restore-db: the plan and the run say first what is
    lost and since when; under open-loop load every request is answered (the old version, the
    maintenance page, then the version brought back), none over 1 s; the database is exactly
    the backup the 1.5.0-irreversible deploy took (a row written before it is there, one
    written after is gone, the migration is not applied), the data as it was is saved in a
    new backup, and the history records what was restored and since when writes are lost."""
    import json
    import time
    from pathlib import Path

    from tests.e2e.conftest import PORTS, history_lines, psql
    from tests.openload import OpenLoad

    applied = "select count(*) from django_migrations where name = '0002_irreversible'"
    ensure("production", "1.1.0")
    try:
        psql("production", "insert into notes_visit (created_at, path) values (now(), 'restore:kept')")
        ok("deploy.production", "--tag", "1.5.0-irreversible", "--force")
        psql("production", "insert into notes_visit (created_at, path) values (now(), 'restore:lost')")
        planned = ok("deploy.plan", "--env", "production", "--rollback", "--restore-db")
        assert "restore:     the database goes back to " in planned
        assert "would go back to 1.1.0 (now 1.5.0-irreversible) and restore the database: writes since " in planned
        with OpenLoad(f"http://127.0.0.1:{PORTS['production']}/", rate=20, seconds=180) as load:
            time.sleep(1)
            back = inv("deploy.rollback", "--env", "production", "--restore-db")
            time.sleep(1.5)
        assert back.returncode == 0, back.stdout + back.stderr
        out = back.stdout
        assert out.index("restoring the database: the database goes back to ") < out.index("==> preflight")
        assert "everything written since then is LOST" in out and "full rollback: --restore-db" in out
        assert served_version("production") == "1.1.0"
        assert psql("production", applied) == "0"
        assert psql("production", "select count(*) from notes_visit where path = 'restore:kept'") == "1"
        assert psql("production", "select count(*) from notes_visit where path = 'restore:lost'") == "0"
        record = json.loads(history_lines("production")[-1])
        assert (record["kind"], record["outcome"], record["version"]) == ("rollback", "ok", "1.1.0")
        assert record["restored"].endswith("-1.1.0.dump") and record["lost_since"]
        assert (Path("/var/lib/pushdeploy/production/backups") / record["backup"]).is_file()  # the data as it was
        steps = [s["name"] for s in record["steps"]]
        assert steps.index("maintenance-on") < steps.index("backup") < steps.index("restore") < steps.index("switch")
        assert "unmigrate" not in steps and steps[-1] == "maintenance-off"
        done = [s for s in load.samples if s.finished]
        unanswered = [s for s in done if not (s.ok or s.status == 503)]
        assert not unanswered, [s.error for s in unanswered][:5]
        assert max(s.latency for s in done) < 1.0
        assert {"1.5.0-irreversible", "1.1.0"} <= {s.version for s in done}
        assert any(s.status == 503 for s in done)  # the maintenance page, while the database was replaced
    finally:  # the next tests' 1.1.0 knows nothing of it
        psql("production", "delete from django_migrations where name = '0002_irreversible'")
        psql("production", "delete from notes_visit where path like 'restore:%'")
        ensure("production", "1.1.0")
