"""Management commands: the allowlist, the hooks, and the client and the server agreeing on both."""

import io
import subprocess
import sys

import pytest

from pushdeploy import management, plan, protocol, requests
from pushdeploy.settings import ConfigError, from_config
from tests.unit.conftest import server_python

from pdserver import env as server_envs
from pdserver import request as server_request
from pdserver import run as server_run
from pdserver import verbs

BIN = protocol.SERVER_DIR / "bin"
COMMANDS = management.allowlist(None)

# (words inv manage would send, allowed by the default allowlist?)
REQUESTS = [
    (["showmigrations"], True),
    (["showmigrations", "notes", "--list"], True),
    (["showmigrations", "--plan"], True),
    (["check", "--deploy", "--fail-level", "WARNING"], True),
    (["check", "--deploy", "--fail-level=ERROR"], True),
    (["clearsessions"], True),
    (["createcachetable", "--dry-run"], True),
    (["shell"], False),
    (["dbshell"], False),
    (["shell_plus"], False),
    (["migrate"], False),  # real, but not in the allowlist
    (["flush", "--noinput"], False),
    (["check", "--fail-level=LOUD"], False),
    (["check", "--settings=evil"], False),
    (["clearsessions", "now"], False),  # takes no arguments
    (["showmigrations", "Notes"], False),
    (["showmigrations", "notes;id"], False),
    (["showmigrations", "$(id)"], False),
    (["createcachetable", "--database=other"], False),
    (["Check"], False),
]


@pytest.mark.parametrize(("words", "allowed"), REQUESTS)
def test_the_client_allows_only_the_allowlist(words, allowed):
    if allowed:
        assert management.request_words(COMMANDS, words[0], words[1:]) == tuple(words)
    else:
        with pytest.raises(management.Refused):
            management.request_words(COMMANDS, words[0], words[1:])


def server_env(tmp_path, commands=COMMANDS):
    """An environment as bin/deploy reads it, with this allowlist (from the client's conf lines)."""
    conf = tmp_path / "test.conf"
    conf.write_text(f"APP_DIR={tmp_path}\nPROJECT=p\n" + "\n".join(management.conf_lines((), (), commands)) + "\n")
    return server_envs.Env("test", str(conf), server_envs.parse(conf.read_text(), str(conf), "test"))


@pytest.mark.parametrize(("words", "allowed"), REQUESTS)
def test_the_server_allows_exactly_what_the_client_allows(tmp_path, words, allowed):
    why = verbs.manage_refusal(server_env(tmp_path), words[0], words[1:])
    assert (why is None) == allowed, why


def test_a_refusal_says_what_is_allowed(tmp_path):
    with pytest.raises(management.Refused, match="allowed: check, clearsessions, createcachetable, showmigrations"):
        management.request_words(COMMANDS, "migrate", [])
    with pytest.raises(management.Refused, match="can never run"):
        management.request_words(COMMANDS, "dbshell", [])
    assert "is not in test's manage_commands" in verbs.manage_refusal(server_env(tmp_path), "migrate", [])


def settings_with(**env):
    return from_config({"environments": {"staging": {"hosts": "h", **env}}}, {})


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("before_switch", ["shell -c 'import os'"]),
        ("before_switch", ["check; id"]),
        ("after_switch", ["check --deploy $(id)"]),
        ("after_switch", ["dbshell"]),
        ("after_switch", [""]),
        ("before_switch", {"check": []}),
        ("manage_commands", {"shell": []}),
        ("manage_commands", {"check": ["--deploy --tag"]}),
        ("manage_commands", {"check": ["[0-9]\\d"]}),
        ("manage_commands", {"check": ["(unclosed"]}),
        ("manage_commands", {"check": "--deploy"}),
        ("manage_commands", ["check"]),
    ],
)
def test_bad_hooks_and_allowlists_are_config_errors(setting, value):
    with pytest.raises(ConfigError, match=setting):
        settings_with(**{setting: value})


def test_hooks_and_allowlist_go_into_the_server_conf_one_a_line():
    env = settings_with(
        before_switch=["check --deploy --fail-level WARNING"],
        after_switch="showmigrations notes",
        manage_commands={"showmigrations": ["[a-z_]+"], "clearsessions": None},
    ).environment("staging")
    conf = plan.server_conf(env, {})
    assert conf.endswith(
        "HOOK_BEFORE_SWITCH=check --deploy --fail-level WARNING\nHOOK_AFTER_SWITCH=showmigrations notes\nMANAGE_COMMAND=clearsessions\nMANAGE_COMMAND=showmigrations [a-z_]+\n"
    )


def load_conf(tmp_path, extra: str) -> subprocess.CompletedProcess:
    (tmp_path / "test.conf").write_text(f"APP_DIR=/srv/x\nPROJECT=x\n{extra}")
    return server_python(
        f"""
        env = envs.load("test", {str(tmp_path)!r})
        print(len(env["HOOK_BEFORE_SWITCH"]), len(env["HOOK_AFTER_SWITCH"]), len(env["MANAGE_COMMAND"]))
        """
    )


def test_the_server_reads_what_server_setup_writes(tmp_path):
    env = settings_with(
        before_switch=["check --deploy", "createcachetable"], after_switch=["showmigrations"]
    ).environment("staging")
    lines = "\n".join(management.conf_lines(env.before_switch, env.after_switch, env.manage_commands)) + "\n"
    result = load_conf(tmp_path, lines)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "1", "4"]


@pytest.mark.parametrize(
    "line",
    [
        "HOOK_BEFORE_SWITCH=shell -c x",
        "HOOK_AFTER_SWITCH=check $(id)",
        "HOOK_AFTER_SWITCH=check;id",
        "MANAGE_COMMAND=dbshell",
        "MANAGE_COMMAND=check [0-9]\\d",
    ],
)
def test_the_server_refuses_a_conf_it_would_not_have_been_given(tmp_path, line):
    result = load_conf(tmp_path, line + "\n")
    assert result.returncode == 1
    assert "fix invoke.yaml" in result.stderr or "invalid argument" in result.stderr or "backslash" in result.stderr


EXPECT = "0123456789abcdef.fedcba9876543210"


@pytest.mark.parametrize(
    ("build", "inputs", "line"),
    [
        (
            requests.manage,
            dict(env="staging", words=("showmigrations", "notes"), expect=EXPECT),
            f"manage staging --expect={EXPECT} showmigrations notes",
        ),
        (
            requests.manage,
            dict(env="staging", words=("check", "--deploy"), expect=EXPECT, by="local:me"),
            f"manage staging --expect={EXPECT} --by=local:me check --deploy",
        ),
        (
            requests.plan,
            dict(env="staging", version="abc1234", expect=EXPECT),
            f"plan staging abc1234 --expect={EXPECT}",
        ),
        (
            requests.plan,
            dict(
                env="production",
                version="1.4.0",
                expect=EXPECT,
                order="17",
                maintenance=True,
                skip_migrate=True,
                force=True,
            ),
            f"plan production 1.4.0 --order=17 --maintenance --skip-migrate --force --expect={EXPECT}",
        ),
    ],
)
def test_a_management_or_plan_request_is_exactly(build, inputs, line):
    assert build(**inputs) == line


@pytest.mark.parametrize("words", [(), ("showmigrations", "a b"), ("check",) + ("--deploy",) * 12])
def test_a_request_the_server_would_refuse_is_not_sent(words):
    with pytest.raises(protocol.InvalidRequest):
        requests.manage("staging", words, expect=EXPECT)


def test_the_forbidden_commands_are_one_fact_for_both_sides():
    assert set(management.FORBIDDEN) >= {"shell", "dbshell"}
    assert not set(management.DEFAULT_COMMANDS) & set(management.FORBIDDEN)


def recorded(snippet: str, tmp_path) -> list[str]:
    """The commands a snippet of the deploy runs, recorded instead of run."""
    script = f"""
        record_commands()
        from pdserver import pipeline, release
        env = stand_in(APP_DIR={str(tmp_path)!r}, PROJECT="pixel-test", MANAGE="python3 manage.py", PRIORITY="normal")
        strategy = pipeline.strategy_for(env)
        the_run = pipeline.Run(env, "r1", {{"VERSION": "2.0"}})
        {snippet}
        """
    result = server_python(script, calls=tmp_path / "calls")
    assert result.returncode == 0, result.stderr
    calls = tmp_path / "calls"
    return calls.read_text().splitlines() if calls.exists() else []


RUN = "docker compose -p pixel-test -f docker-compose.yml run --rm --no-deps -T -e PYTHONUNBUFFERED=1"


def test_the_hooks_run_in_one_one_off_container_of_the_new_version(tmp_path):
    calls = "\n".join(
        recorded(
            "release.hooks(the_run, strategy, ['check --deploy --fail-level WARNING', 'createcachetable'])", tmp_path
        )
    )
    assert calls.startswith(
        f"{RUN} -e PD_HOOKS=check --deploy --fail-level WARNING;createcachetable web python3 manage.py shell -c "
    )
    assert "call_command(*words)" in calls and calls.count("\ndocker ") == 0  # one container for the whole list


def test_no_hooks_no_container(tmp_path):
    assert recorded("pipeline.after_hooks(the_run, strategy)", tmp_path) == []


def test_a_failing_after_switch_hook_warns_and_keeps_the_deploy(tmp_path):
    script = f"""
        from pdserver import pipeline
        env = stand_in(APP_DIR={str(tmp_path)!r}, HOOK_AFTER_SWITCH=["clearsessions"], state={str(tmp_path)!r})
        os.makedirs(os.path.join({str(tmp_path)!r}, "runs"), exist_ok=True)
        strategy = pipeline.strategy_for(env)
        strategy.one_off = lambda run, argv, environ: print("hook-output") or 5
        the_run = pipeline.Run(env, "r1", {{"VERSION": "2.0"}})
        pipeline.after_hooks(the_run, strategy)
        print("rc=0 failed=" + the_run.failed_step)
        """
    result = server_python(script)
    assert result.returncode == 0, result.stderr
    assert "FAILED hooks-after (exit 5" in result.stdout
    assert "warning: an after_switch hook failed (see the log above); 2.0 serves" in result.stdout
    assert result.stdout.strip().endswith("rc=0 failed=")


def manage_verb(tmp_path, monkeypatch, *words: str) -> tuple[int, str, list]:
    """bin/deploy's manage verb with the one-off container recorded (it answers with exit 3):
    (exit status, stderr, the commands it ran)."""
    env = server_env(tmp_path)
    (tmp_path / ".env").write_text("VERSION=1.4.0\n")
    monkeypatch.setattr(server_envs, "load", lambda name: env)
    monkeypatch.setattr(type(env), "state_dir", property(lambda self: str(tmp_path)))
    calls = []
    monkeypatch.setattr(server_run, "streamed", lambda command: calls.append(command) or 3)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    try:
        code = verbs.manage(server_request.parse(["manage", "test", *words], 0)).code
    except server_request.Refused as refused:
        code, _ = refused.code, err.write(str(refused))
    return code, err.getvalue(), calls


def test_the_manage_verb_runs_the_command_in_a_one_off_container_and_keeps_its_exit_code(tmp_path, monkeypatch):
    code, err, calls = manage_verb(tmp_path, monkeypatch, "--by=local:me", "showmigrations", "notes")
    assert code == 3
    assert [command.argv for command in calls] == [
        "docker compose -p p -f docker-compose.yml run --rm --no-deps -T -e PYTHONUNBUFFERED=1 web python manage.py showmigrations notes".split()
    ]
    assert calls[0].cwd == str(tmp_path) and calls[0].environ["VERSION"] == "1.4.0"
    assert "manage.py showmigrations notes in a one-off container of 1.4.0 (test)" in err
    assert (tmp_path / "lock.info").read_text() == ""


@pytest.mark.parametrize(
    ("words", "why"),
    [
        (["dbshell"], "can never run"),
        (["migrate"], "not in test's manage_commands"),
        (["--plan", "check"], "unknown option"),
        ([], "usage: manage ENV"),
    ],
)
def test_the_manage_verb_refuses_before_starting_anything(tmp_path, monkeypatch, words, why):
    if words and words[0].startswith("--") or not words:
        with pytest.raises(server_request.Refused, match=why) as caught:
            server_request.parse(["manage", "test", *words], 0)
        assert caught.value.code == protocol.EXIT_USAGE
        return
    code, err, calls = manage_verb(tmp_path, monkeypatch, *words)
    assert code == protocol.EXIT_USAGE
    assert why in err
    assert calls == []


def test_the_manage_verb_refuses_while_a_deploy_holds_the_lock(tmp_path, monkeypatch):
    (tmp_path / "lock.info").write_text("20261122T0700Z-1 deploy of 1.5.0 by ci in progress since t\n")
    holder = subprocess.Popen(["flock", str(tmp_path / "lock"), "sleep", "5"])
    try:
        subprocess.run(
            ["bash", "-c", f'until ! flock -n "{tmp_path}/lock" true; do sleep 0.05; done'], timeout=5, check=True
        )
        code, err, calls = manage_verb(tmp_path, monkeypatch, "showmigrations")
    finally:
        holder.kill()
        holder.wait()
    assert code == protocol.EXIT_BUSY
    assert "busy: deploy of 1.5.0 by ci in progress" in err
    assert calls == []
