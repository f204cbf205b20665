"""The verbs bin/deploy answers in Python (scripts/server/lib/pdserver/verbs.py), on a
temporary /etc/pushdeploy and state directory; the lock against bash's own flock."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from pushdeploy import protocol
from tests.unit.conftest import CONF

from pdserver import env as envs
from pdserver import expect, facts, plan, status, verbs
from pdserver.lock import UNNAMED, Lock
from pdserver.request import Refused, parse


def run(capsys, line):
    result = verbs.HANDLERS[line.split()[0]](parse(line.split(), time.time()))
    return result.code, capsys.readouterr().out


def test_an_environment_is_read_checked(server):
    env = envs.load("staging")
    assert (env.app_dir, env["PROJECT"], env["SWITCH"], env["HOOK_BEFORE_SWITCH"]) == (
        str(server / "app"),
        "pixel-staging",
        "slots",
        ["check --deploy"],
    )
    assert envs.current_version(env) == "1.4.0"
    with pytest.raises(Refused, match="not set up on this server") as caught:
        envs.load("production")
    assert caught.value.code == 64


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("NOPE=1", "unknown key 'NOPE'"),
        ("APP_DIR=relative", "APP_DIR must be an absolute path"),
        ("SWITCH=teleport", "SWITCH is slots or recreate"),
        ("PROJECT=Bad", "invalid PROJECT 'Bad'"),
        ("HOOK_AFTER_SWITCH=shell -c x", "'shell' is not a permitted management command"),
        ("HOOK_AFTER_SWITCH=check --settings=evil", "invalid argument '--settings=evil'"),
        ("MANAGE_COMMAND=dumpdata", "'dumpdata' is not a permitted management command"),
    ],
)
def test_a_conf_not_written_by_setup_is_exit_1(server, line, says):
    (server / "etc/staging.conf").write_text(CONF.format(app=server / "app") + line + "\n")
    with pytest.raises(Refused, match=says) as caught:
        envs.load("staging")
    assert caught.value.code == 1


def test_expect_names_what_differs(server, monkeypatch):
    conf = str(server / "etc/staging.conf")
    monkeypatch.setattr(expect, "server_hash", lambda home=None: "s" * 16)
    good = f"{'s' * 16}.{expect.conf_hash(conf)}"
    expect.check(good, conf, "staging")
    expect.check("", conf, "staging")
    with pytest.raises(
        Refused,
        match=r"the server side here \(s+\) differs from your project's \(old\): run `inv server.setup --env review`",
    ) as caught:
        expect.check("old.x", conf, "review-3", "review")
    assert caught.value.code == 78
    with pytest.raises(Refused, match="the settings installed for 'staging' differ"):
        expect.check(f"{'s' * 16}.other", conf, "staging")


def test_history_is_the_last_lines(server, capsys):
    assert run(capsys, "history staging") == (0, "")
    records = [json.dumps({"version": str(n)}) + "\n" for n in range(30)]
    (server / "state/staging/history.jsonl").write_text("".join(records))
    assert run(capsys, "history staging") == (0, "".join(records[-20:]))
    assert run(capsys, "history staging --limit=3") == (0, "".join(records[-3:]))


def test_backups_newest_first(server, capsys):
    assert run(capsys, "backups staging") == (0, "no backups of staging yet\n")
    folder = server / "state/staging/backups"
    folder.mkdir()
    for n, name in enumerate(("20260101T000000Z-1.0.0.dump", "20260102T000000Z-1.1.0.dump", "notes.txt")):
        (folder / name).write_bytes(b"x" * (n + 1) * 100)
        os.utime(folder / name, (1_700_000_000 + n * 86400,) * 2)
    answer, out = run(capsys, "backups staging")
    stamp = time.strftime("%Y-%m-%dT%H:%M", time.localtime(1_700_000_000 + 86400))
    assert out.splitlines() == [f"{stamp}         200 bytes  {folder}/20260102T000000Z-1.1.0.dump", out.splitlines()[1]]
    assert out.splitlines()[1].endswith("100 bytes  " + str(folder / "20260101T000000Z-1.0.0.dump"))


def test_backups_of_one_minute_are_newest_first_whatever_their_size(server, capsys):
    # A larger, older dump of the same minute once came first (the lines were sorted as text).
    folder = server / "state/staging/backups"
    folder.mkdir()
    for n, (name, size) in enumerate((("20260101T000001Z-1.5.0.dump", 900), ("20260101T000040Z-1.1.0.dump", 100))):
        (folder / name).write_bytes(b"x" * size)
        os.utime(folder / name, (1_700_000_001 + n * 39,) * 2)
    _, out = run(capsys, "backups staging")
    assert [line.rsplit("/", 1)[1] for line in out.splitlines()] == [
        "20260101T000040Z-1.1.0.dump",
        "20260101T000001Z-1.5.0.dump",
    ]


def test_logs_the_latest_run_and_follows_one_to_its_status(server, capsys):
    runs = server / "state/staging/runs"
    with pytest.raises(Refused, match="no deploy has run in staging yet"):
        run(capsys, "logs staging")
    (runs / "a.log").write_text("old\n")
    os.utime(runs / "a.log", (1, 1))
    (runs / "b.log").write_text("==> pull\n")
    (runs / "b.status").write_text("1\n")
    assert run(capsys, "logs staging") == (0, "==> pull\n")
    assert run(capsys, "logs staging --follow") == (0, "==> pull\n")  # a failed run's log is still a log
    writer = subprocess.Popen(
        ["sh", "-c", f"sleep 0.3; echo '==> switch' >>{runs / 'b.log'}; echo 0 >{runs / 'b.status'}"]
    )
    (runs / "b.pid").write_text(f"{writer.pid}\n")
    assert run(capsys, "logs staging --follow") == (0, "==> pull\n==> switch\n")  # followed until the run ended
    writer.wait()
    (runs / "b.status").unlink()
    with pytest.raises(Refused, match="the deploy process b ended without a result"):
        run(capsys, "logs staging --follow")


def test_status_warns_of_a_dead_run_only_when_none_runs(server):
    runs = str(server / "state/staging/runs")
    assert status.dead_runs(runs) == []
    for name in ("x.request", "x.status", "y.request"):
        open(os.path.join(runs, name), "w").close()
    assert status.dead_runs(runs) == ["y"] and status.dead_runs(runs, own="y") == []


def test_last_deploy_reads_the_summary_while_it_is_current(server):
    history = server / "state/staging/history.jsonl"
    assert status.last_deploy(str(history)) == "none"
    history.write_text(
        json.dumps({"time": "T", "kind": "deploy", "version": "2", "previous": "1", "outcome": "ok", "by": "jane"})
        + "\n"
    )
    assert status.last_deploy(str(history)) == "T deploy of 2 (was 1): ok, by jane"
    (server / "state/staging/history.jsonl.last").write_text("summary\n")
    assert status.last_deploy(str(history)) == "summary"
    os.utime(history, (time.time() + 10,) * 2)
    assert status.last_deploy(str(history)) == "T deploy of 2 (was 1): ok, by jane"


def hold_lock(state, info: str, seconds: float) -> subprocess.Popen:
    """Another process (flock, as bash took it) holds the environment's lock for SECONDS,
    named INFO in lock.info (cleared when it lets go)."""
    script = f"echo '{info}' >{state / 'lock.info'}; sleep {seconds}; : >{state / 'lock.info'}"
    return subprocess.Popen(["flock", str(state / "lock"), "sh", "-c", script])


def test_maintenance_takes_the_lock_bash_takes(server, capsys):
    flag = server / "app/maintenance/on"
    assert run(capsys, "maintenance staging on") == (0, "maintenance mode on: the proxy answers 503\n")
    assert flag.exists() and flag.stat().st_mode & 0o777 == 0o644
    state = server / "state/staging"
    holder = hold_lock(state, "r1 refresh of staging by admin in progress since T", 1.5)
    time.sleep(0.3)
    with pytest.raises(
        Refused, match="busy: refresh of staging by admin in progress since T; maintenance stays as it is"
    ) as caught:
        run(capsys, "maintenance staging off")
    assert caught.value.code == 75 and flag.exists()
    holder.wait()
    assert run(capsys, "maintenance staging off") == (0, "maintenance mode off\n")
    assert not flag.exists() and (state / "lock.info").read_text() == ""


def test_a_probe_waits_out_a_handover_and_names_an_unnamed_holder(server):
    lock = Lock(str(server / "state/staging"))
    assert lock.busy() is None
    assert lock.take() is None  # held, lock.info empty: a run taking the lock
    started = time.monotonic()
    assert Lock(lock.path.rsplit("/", 1)[0]).busy() == UNNAMED
    assert time.monotonic() - started >= 2.5, "it waited the handover out first"
    lock.name("r2", "deploy of 2", "", "T")
    assert Lock(lock.path.rsplit("/", 1)[0]).busy() == "r2 deploy of 2 by unknown in progress since T"
    lock.release()
    assert Lock(lock.path.rsplit("/", 1)[0]).busy() is None


def test_where_the_pull_agent_runs(tmp_path):
    systemd, cron = tmp_path / "systemd", tmp_path / "cron"
    systemd.mkdir()
    cron.mkdir()
    assert verbs.pull_agent_where("staging", str(systemd), str(cron)) == "none"
    (cron / "pushdeploy-pull-staging").write_text("")
    assert verbs.pull_agent_where("staging", str(systemd), str(cron)) == f"cron {cron}/pushdeploy-pull-staging"
    (systemd / "pushdeploy-pull-staging.timer").write_text("")
    assert verbs.pull_agent_where("staging", str(systemd), str(cron)).startswith(
        "systemd timer pushdeploy-pull-staging.timer ("
    )


def test_pull_status_in_push_and_in_pull_mode(server, capsys, monkeypatch):
    monkeypatch.setattr(verbs, "pull_agent_where", lambda name: "none")
    assert run(capsys, "pull-status staging") == (
        0,
        "mode: push (no pull channel in staging's settings)\nagent: none\n",
    )
    with open(server / "etc/staging.conf", "a") as conf:
        conf.write("PULL_CHANNEL=staging-approved\nPULL_EVERY=60\n")
    answer, out = run(capsys, "pull-status staging")
    assert out.splitlines() == [
        "mode: pull",
        "channel: staging-approved",
        "every: 60s",
        "agent: none",
        "version: 1.4.0",
        "last check: never (the agent has not run yet)",
    ]


def test_review_list_names_each_live_review_environment(server, capsys):
    template = server / "etc/review.conf"
    template.write_text(
        f"APP_DIR={server}/review\nPROJECT=pixel-review\nREVIEW_TEMPLATE=yes\nREVIEW_DOMAIN=review.example\nREVIEW_PORT=8088\n"
    )
    assert run(capsys, "review-list review") == (0, "")
    for number, version in ((2, "b2b2b2b"), (12, "a1a1a1a")):
        state = server / f"state/review-{number}"
        state.mkdir()
        (state / "review.created").write_text("2026-12-01T10:00:00Z\n")
        (server / f"review-{number}").mkdir()
        (server / f"review-{number}/.env").write_text(f"VERSION={version}\n")
    (server / "state/review-3").mkdir()  # no marker: not made (or no longer) by review-up
    (server / "state/review-x").mkdir()
    answer, out = run(capsys, "review-list review")
    assert out.splitlines() == [
        "review-12\ta1a1a1a\t2026-12-01T10:00:00Z\tnone\thttp://pr-12.review.example:8088/",
        "review-2\tb2b2b2b\t2026-12-01T10:00:00Z\tnone\thttp://pr-2.review.example:8088/",
    ]
    with pytest.raises(Refused, match="'staging' is not a review template on this server"):
        run(capsys, "review-list staging")


def test_every_verb_is_answered_in_python_or_by_a_bash_cmd_function():
    """A verb moved to Python is in HANDLERS; one still in bash has its cmd_ function (or the
    request would be handed to bash and end in 'command not found')."""
    bash = "".join(path.read_text() for path in (protocol.SERVER_DIR / "lib").glob("*.sh"))
    for verb in (*facts.VERBS, *facts.ADMIN_VERBS, "pull"):
        if verb not in verbs.HANDLERS:
            assert f"cmd_{verb.replace('-', '_')}() {{" in bash, verb


def test_swarm_status_lists_services_tasks_stragglers_and_nodes(server, capsys, monkeypatch):
    with open(server / "etc/staging.conf", "a") as conf:
        conf.write("ENGINE=swarm\nMANAGER_COMPOSE_FILES=proxy.yml\n")
    answers = {
        "info": "active true\n",
        "service": "NAME\tMODE\tREPLICAS\tIMAGE\npixel-staging_web\treplicated\t2/2\treg/pixel:1.4.0@sha256:abc123\n",
        "desired-state=running": "NAME\tNODE\tCURRENT STATE\tERROR\npixel-staging_web.1\th1\tRunning 2 minutes ago\t\n",
        "desired-state=shutdown": "web.1\th2\treg/pixel:1.3.0@sha256:def456\tRunning 5 minutes ago\nweb.2\th1\treg/pixel:1.3.0\tShutdown 1 minute ago\n",
        "node": "HOSTNAME\tSTATUS\nh1\tReady\n",
        "ps": "NAMES\tIMAGE\nproxy\tnginx\n",
    }

    def output(command, stderr=True):
        argv = command.argv
        key = next(k for k in answers if k in argv or any(k in word for word in argv[2:5]) or argv[1] == k)
        return 0, answers[key]

    monkeypatch.setattr(verbs.run, "output", output)
    answer, out = run(capsys, "status staging")
    assert out.splitlines()[3:] == [
        "swarm: this node is a manager",
        "services:",
        "  NAME\tMODE\tREPLICAS\tIMAGE",
        "  pixel-staging_web\treplicated\t2/2\treg/pixel:1.4.0",
        "tasks:",
        "  NAME\tNODE\tCURRENT STATE\tERROR",
        "  pixel-staging_web.1\th1\tRunning 2 minutes ago\t",
        "warning: tasks swarm asked to stop still run, and may still be served (if it lasts, restart dockerd on their node):",
        "  web.1\th2\treg/pixel:1.3.0\tRunning 5 minutes ago",
        "nodes:",
        "  HOSTNAME\tSTATUS",
        "  h1\tReady",
        "outside the stack (on this node):",
        "  NAMES\tIMAGE",
        "  proxy\tnginx",
    ]


SLOT_STEPS = ["start", "health", "admit", "switch", "retire", "prune-static"]
BEFORE = ["preflight", "pull", "database"]  # CONF has a before_switch hook: hooks-before follows migrate


@pytest.mark.parametrize(
    ("conf", "flags", "steps"),
    [
        ("", {}, [*BEFORE, "migrate", "hooks-before", *SLOT_STEPS]),
        ("BACKUP=yes\n", {}, [*BEFORE, "backup", "migrate", "hooks-before", *SLOT_STEPS]),
        ("BACKUP=yes\n", {"skip_migrate": True}, [*BEFORE, "static", "hooks-before", *SLOT_STEPS]),
        (
            "",
            {"maintenance": True},
            [*BEFORE, "maintenance-on", "migrate", "hooks-before", *SLOT_STEPS, "maintenance-off"],
        ),
        ("HOOK_AFTER_SWITCH=clearsessions\n", {}, [*BEFORE, "migrate", "hooks-before", *SLOT_STEPS, "hooks-after"]),
        ("SWITCH=recreate\n", {}, [*BEFORE, "migrate", "hooks-before", "recreate", "up", "prune-static"]),
    ],
)
def test_the_plan_lists_the_steps_run_deploy_would_run(server, conf, flags, steps):
    with open(server / "etc/staging.conf", "a") as file:
        file.write(conf)
    options = {"maintenance": False, "skip_migrate": False, **flags}
    assert plan.deploy_steps(envs.load("staging"), options["maintenance"], options["skip_migrate"]) == steps


@pytest.mark.parametrize(
    ("ordering", "current", "stored", "version", "build", "force", "says"),
    [
        ("semver", "1.10.0", "", "1.9.0", None, False, "1.9.0 is older than the deployed 1.10.0"),
        ("semver", "1.10.0", "", "1.9.0", None, True, None),
        ("semver", "1.4.0", "", "1.4.0-rc.1", None, False, "is older than the deployed 1.4.0"),
        ("semver", "1.4.0-rc.1", "", "1.4.0", None, False, None),
        ("semver", "none", "", "0.1.0", None, False, None),
        (
            "build",
            "a1a1a1a",
            "1700000000",
            "b2b2b2b",
            1699999999,
            False,
            "(order 1699999999) is older than the deployed build (order 1700000000)",
        ),
        ("build", "a1a1a1a", "1700000000", "b2b2b2b", 1700000001, False, None),
        ("build", "a1a1a1a", "", "b2b2b2b", 1, False, None),
        ("none", "9.9.9", "", "0.0.1", None, False, None),
    ],
)
def test_older_versions_and_builds_are_refused_unless_forced(
    server, ordering, current, stored, version, build, force, says
):
    with open(server / "etc/staging.conf", "a") as file:
        file.write(f"ORDERING={ordering}\n")
    (server / "app/.env").write_text(f"VERSION={current}\n")
    if stored:
        (server / "state/staging/order").write_text(stored + "\n")
    why = plan.order_refusal(envs.load("staging"), version, build, force)
    assert (why is None) if says is None else (says in why), why


def test_a_plan_answers_key_value_lines(server, capsys, monkeypatch):
    (server / "state/staging/history.jsonl").write_text(
        json.dumps({"kind": "deploy", "outcome": "ok", "duration": 4.2}) + "\n"
    )
    calls = []

    def output(command, stderr=True):
        calls.append(command.argv)
        return (
            (0, "")
            if "pull" in command.argv
            else (0, "Planned operations:\nnotes.0002_visit\n    Create model Visit\n")
        )

    monkeypatch.setattr(verbs.run, "output", output)
    answer, out = run(capsys, "plan staging 1.5.0 --maintenance")
    assert out.splitlines() == [
        "current=1.4.0",
        "target=1.5.0",
        "server_side=not checked",
        "busy=no",
        "order=ok (none)",
        "steps=preflight pull database maintenance-on migrate hooks-before start health admit switch retire prune-static maintenance-off",
        "hooks_before=check --deploy",
        "hooks_after=",
        "estimate=4.2 1",
        "migrations=planned",
        "migration=Planned operations:",
        "migration=notes.0002_visit",
        "migration=    Create model Visit",
    ]
    assert calls[0][-3:] == ["pull", "-q", "web"] and calls[1][-3:] == ["manage.py", "migrate", "--plan"]
    with pytest.raises(Refused, match="version 'latest' does not match staging's pattern"):
        (server / "etc/staging.conf").write_text(CONF.format(app=server / "app") + "VERSION_RE=^[0-9.]+$\n")
        run(capsys, "plan staging latest")


def answer(capsys, line: str):
    """bin/deploy's answer to LINE: (exit status, stdout, stderr's lines but the last, the result)."""
    from pdserver import main

    code = main.main(line.split(), now=time.time)
    out, err = capsys.readouterr()
    *said, last = err.splitlines()
    assert last.startswith(facts.RESULT_PREFIX), err
    return code, out, said, json.loads(last[len(facts.RESULT_PREFIX) :])


def test_every_answer_ends_with_its_result_as_data_on_stderr_and_stdout_stays_as_it_was(server, capsys):
    (server / "state/staging/history.jsonl").write_text('{"kind": "deploy", "version": "1.4.0"}\n')
    code, out, said, result = answer(capsys, "history staging")
    assert (code, out, said) == (0, '{"kind": "deploy", "version": "1.4.0"}\n', [])  # JSON lines, nothing else
    assert result == {"verb": "history", "env": "staging", "outcome": "ok", "exit": 0, "records": 1}
    code, out, said, result = answer(capsys, "maintenance staging on")
    assert (code, out, result["outcome"], result["maintenance"]) == (
        0,
        "maintenance mode on: the proxy answers 503\n",
        "ok",
        "on",
    )
    code, out, said, result = answer(capsys, "status staging")
    assert code == 0 and out.startswith("version: 1.4.0\ndeploy in progress: no\n")
    assert (result["version"], result["deploying"], result["live_slot"]) == ("1.4.0", "", "web-blue")


@pytest.mark.parametrize(
    ("line", "code", "outcome", "verb", "env"),
    [
        ("status nosuchenv", 64, "refused", "status", "nosuchenv"),
        ("deploy staging a/b", 64, "refused", "deploy", "staging"),
        ("frobnicate staging", 64, "refused", "", ""),
        ("--key=ci status staging", 64, "refused", "status", "staging"),  # no keys file: a named key is refused
        ("manage staging shell", 64, "refused", "manage", "staging"),
    ],
)
def test_a_refusal_is_a_result_too_and_stdout_stays_empty(server, capsys, line, code, outcome, verb, env):
    got, out, said, result = answer(capsys, line)
    assert (got, out) == (code, "")
    assert (result["exit"], result["outcome"], result["verb"], result["env"]) == (code, outcome, verb, env)
    assert said[-1] == f"pushdeploy: {result['error']}"  # the human line says the same


def test_a_busy_environment_answers_busy_as_data(server, capsys):
    state = server / "state/staging"
    holder = hold_lock(state, "r1 deploy of 2 by ci in progress since T", 1)
    time.sleep(0.3)
    try:
        code, out, said, result = answer(capsys, "maintenance staging on")
    finally:
        holder.wait()
    assert (code, result["outcome"], result["exit"]) == (75, "busy", 75)
