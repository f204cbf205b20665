"""deploy.plan: the server's plan answer read and shown, and the steps it lists."""

import json
import subprocess

import pytest

from pushdeploy import preview, protocol
from tests.unit.conftest import server_python

from pdserver import env as server_envs
from pdserver import plan as server_plan

BIN = protocol.SERVER_DIR / "bin"

ANSWER = """current=1.0.0
target=1.3.0-badmigration
server_side=current
busy=no
order=ok (semver)
steps=preflight pull database backup migrate hooks-before start health admit switch retire prune-static
hooks_before=check --deploy --fail-level ERROR
hooks_after=
estimate=14.26 3
migrations=planned
migration=Planned operations:
migration=notes.0002_broken
migration=    Raw SQL operation -> CREATE TABLE notes_broken_probe (id integer PRIMARY KEY)
migration=    Raw SQL operation -> SELECT no_such_column FROM notes_broken_probe""".splitlines()


def with_facts(**changes):
    lines = [line for line in ANSWER if line.split("=", 1)[0] not in changes]
    return preview.parse([f"{k}={v}" for k, v in changes.items()] + lines)


def test_the_answer_is_read_into_facts_hooks_and_migrations():
    plan = preview.parse(ANSWER)
    assert (plan.get("current"), plan.get("target")) == ("1.0.0", "1.3.0-badmigration")
    assert plan.migrations == ("notes.0002_broken",)
    assert plan.hooks_before == ("check --deploy --fail-level ERROR",) and plan.hooks_after == ()
    assert plan.steps[:4] == ("preflight", "pull", "database", "backup")
    assert plan.estimate() == (14.26, 3)


def test_a_plan_is_shown_as_a_few_readable_lines():
    assert preview.show(preview.parse(ANSWER)) == [
        "version:     1.0.0 -> 1.3.0-badmigration",
        "order check: ok (semver)",
        "server side: current",
        "running now: no deploy",
        "steps:       preflight > pull > database > backup > migrate > hooks-before > start > health > admit > switch > retire > prune-static",
        "hooks:       before_switch: check --deploy --fail-level ERROR   after_switch: -",
        "migrations:  1 to apply: notes.0002_broken",
        "  notes.0002_broken",
        "      Raw SQL operation -> CREATE TABLE notes_broken_probe (id integer PRIMARY KEY)",
        "      Raw SQL operation -> SELECT no_such_column FROM notes_broken_probe",
        "estimate:    about 14s (median of the last 3 successful deploy(s) here)",
        "verdict:     would deploy 1.3.0-badmigration (now 1.0.0)",
    ]


@pytest.mark.parametrize(
    ("changes", "code", "shown"),
    [
        ({}, 0, "verdict:     would deploy"),
        (
            {"order": "refused: 1.0.0 is older than the deployed 1.1.0: use ..."},
            protocol.EXIT_OLDER,
            "order check: WOULD REFUSE: 1.0.0 is older than the deployed 1.1.0: use ...",
        ),
        (
            {"server_side": "outdated: the server side here (x) differs from your project's (y): run ..."},
            protocol.EXIT_OUTDATED,
            "server side: OUT OF DATE: the server side here (x)",
        ),
        (
            {"busy": "deploy of 1.2.0 by ci in progress since t"},
            protocol.EXIT_BUSY,
            "running now: deploy of 1.2.0 by ci",
        ),
        (
            {"migrations": "unknown (migrate --plan failed with exit 1; is the database up?)"},
            0,
            "migrations:  unknown (migrate --plan failed",
        ),
        (
            {"migrations": "skipped (a later batch: the first host migrates the shared database)"},
            0,
            "migrations:  skipped (a later batch",
        ),
        ({"estimate": "none"}, 0, "estimate:    none (no successful deploy here yet)"),
        (
            {"tls": "certificate /etc/ssl/f.pem, ends 2027-03-01 (85 days)"},
            0,
            "https:       certificate /etc/ssl/f.pem, ends 2027-03-01 (85 days)",
        ),
        (
            {"tls": "refused: the key /etc/ssl/k.pem is readable by others than its owner: chmod 600 /etc/ssl/k.pem"},
            1,
            "https:       WOULD FAIL: the key /etc/ssl/k.pem is readable",
        ),
    ],
)
def test_the_verdict_is_the_code_the_deploy_would_stop_with(changes, code, shown):
    plan = with_facts(**changes)
    assert preview.verdict(plan)[0] == code
    assert any(line.startswith(shown) for line in preview.show(plan)), preview.show(plan)


def test_no_pending_migration_is_said_plainly():
    plan = preview.parse(
        [line for line in ANSWER if not line.startswith("migration=")]
        + ["migration=Planned operations:", "migration=  No planned migration operations."]
    )
    assert plan.migrations == ()
    assert "migrations:  none to apply" in preview.show(plan)


def test_an_answer_without_a_plan_is_not_a_plan():
    plan = preview.parse(["pushdeploy: something went wrong"])
    assert preview.verdict(plan) == (1, "no plan: pushdeploy: something went wrong")


def steps_for(**conf) -> list[str]:
    defaults = {
        "ENGINE": "compose",
        "BACKUP": "no",
        "SKIP_MIGRATE": "0",
        "MAINTENANCE": "0",
        "SWITCH": "slots",
        "HOOKS_BEFORE": "()",
        "HOOKS_AFTER": "()",
    }
    conf = {**defaults, **conf}
    hooks = {key: [] if conf[key] == "()" else [conf[key].strip("()'")] for key in ("HOOKS_BEFORE", "HOOKS_AFTER")}
    values = {key: conf[key] for key in ("ENGINE", "BACKUP", "SWITCH")}
    values.update(HOOK_BEFORE_SWITCH=hooks["HOOKS_BEFORE"], HOOK_AFTER_SWITCH=hooks["HOOKS_AFTER"], APP_DIR="/srv/x")
    env = server_envs.Env("test", "/nonexistent/test.conf", {**server_envs.DEFAULTS, **values})
    return server_plan.deploy_steps(env, conf["MAINTENANCE"] == "1", conf["SKIP_MIGRATE"] == "1")


SLOTS = ["start", "health", "admit", "switch", "retire", "prune-static"]


@pytest.mark.parametrize(
    ("conf", "steps"),
    [
        ({}, ["preflight", "pull", "database", "migrate", *SLOTS]),
        ({"BACKUP": "yes"}, ["preflight", "pull", "database", "backup", "migrate", *SLOTS]),
        ({"BACKUP": "yes", "SKIP_MIGRATE": "1"}, ["preflight", "pull", "database", "static", *SLOTS]),
        (
            {"MAINTENANCE": "1"},
            ["preflight", "pull", "database", "maintenance-on", "migrate", *SLOTS, "maintenance-off"],
        ),
        (
            {"HOOKS_BEFORE": "('check --deploy')", "HOOKS_AFTER": "(clearsessions)"},
            ["preflight", "pull", "database", "migrate", "hooks-before", *SLOTS, "hooks-after"],
        ),
        ({"SWITCH": "recreate"}, ["preflight", "pull", "database", "migrate", "recreate", "up", "prune-static"]),
        ({"ENGINE": "swarm"}, ["preflight", "pull", "migrate", "proxy", "deploy", "converge"]),
        (
            {"ENGINE": "swarm", "BACKUP": "yes", "MAINTENANCE": "1"},
            [
                "preflight",
                "pull",
                "backup",
                "maintenance-on",
                "migrate",
                "proxy",
                "deploy",
                "converge",
                "maintenance-off",
            ],
        ),
        (
            {"ENGINE": "swarm", "BACKUP": "yes", "SKIP_MIGRATE": "1"},
            ["preflight", "pull", "static", "proxy", "deploy", "converge"],
        ),
    ],
)
def test_the_plan_lists_the_steps_run_deploy_would_run(conf, steps):
    assert steps_for(**conf) == steps


def test_the_estimate_is_the_median_of_recent_successful_deploys(tmp_path):
    path = tmp_path / "history.jsonl"
    records = [
        ("deploy", "ok", 10.0),
        ("deploy", "failed", 99.0),
        ("rollback", "ok", 50.0),
        ("deploy", "ok", 30.0),
        ("deploy", "ok", 12.0),
        ("deploy", "ok", 14.0),
    ]
    path.write_text("".join(json.dumps({"kind": k, "outcome": o, "duration": d}) + "\n" for k, o, d in records))
    median = subprocess.run(
        ["python3", str(protocol.SERVER_DIR / "lib/history.py"), "median-ok", str(path), "3"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert median.stdout.split() == ["14.0", "3"]  # 30, 12, 14: the last three ok deploys
    empty = subprocess.run(
        ["python3", str(protocol.SERVER_DIR / "lib/history.py"), "median-ok", str(tmp_path / "none.jsonl"), "3"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert empty.stdout.strip() == "none"


def test_the_plan_verb_only_pulls_and_runs_migrate_plan(tmp_path):
    """cmd_plan with docker recorded: it answers in KEY=value lines, pulls the target,
    runs `migrate --plan` in a one-off container, and writes nothing of the app's."""
    app, state = tmp_path / "app", tmp_path / "state"
    app.mkdir()
    state.mkdir()
    (app / ".env").write_text("VERSION=1.0.0\nSECRET=x\n")
    (state / "history.jsonl").write_text('{"kind": "deploy", "outcome": "ok", "duration": 12.5}\n')
    answer = "lambda argv: (0, 'Planned operations:\\nnotes.0002_x\\n    Add field\\n' if 'migrate' in argv else '')"
    script = f"""
        record_commands({answer})
        from pdserver import plan
        stand_in(APP_DIR={str(app)!r}, state={str(state)!r}, PROJECT="pixel-test", MANAGE="python3 manage.py",
                 ORDERING="semver", SWITCH="slots", BACKUP="yes")
        sys.exit(plan.plan(parse(["plan", "test", "1.1.0", "--maintenance"], 0)).code)
        """
    result = server_python(script, calls=tmp_path / "calls")
    assert result.returncode == 0, result.stderr
    plan = preview.parse(result.stdout.splitlines())
    assert (plan.get("current"), plan.get("target"), plan.get("order"), plan.get("server_side")) == (
        "1.0.0",
        "1.1.0",
        "ok (semver)",
        "not checked",
    )
    assert plan.steps == (
        "preflight",
        "pull",
        "database",
        "backup",
        "maintenance-on",
        "migrate",
        *SLOTS,
        "maintenance-off",
    )
    assert plan.migrations == ("notes.0002_x",) and plan.estimate() == (12.5, 1)
    assert (tmp_path / "calls").read_text().splitlines() == [
        "docker compose -p pixel-test -f docker-compose.yml pull -q web",
        "docker compose -p pixel-test -f docker-compose.yml run --rm --no-deps -T -e PYTHONUNBUFFERED=1 web python3 manage.py migrate --plan",
    ]
    assert (app / ".env").read_text() == "VERSION=1.0.0\nSECRET=x\n"
    assert sorted(p.name for p in state.iterdir()) == ["history.jsonl", "lock"]  # the lock file probed, nothing else


def test_the_plan_says_when_the_order_check_would_refuse(tmp_path):
    (tmp_path / ".env").write_text("VERSION=1.2.0\n")
    script = f"""
        record_commands()
        from pdserver import plan
        stand_in(APP_DIR={str(tmp_path)!r}, state={str(tmp_path)!r}, PROJECT="p", MANAGE="python3 manage.py",
                 ORDERING="semver", SWITCH="slots", BACKUP="no")
        sys.exit(plan.plan(parse(["plan", "test", "1.1.0"], 0)).code)
        """
    result = server_python(script, calls=tmp_path / "calls")
    assert result.returncode == 0, result.stderr
    plan = preview.parse(result.stdout.splitlines())
    assert plan.get("order").startswith("refused: 1.1.0 is older than the deployed 1.2.0")
    assert preview.verdict(plan)[0] == protocol.EXIT_OLDER
