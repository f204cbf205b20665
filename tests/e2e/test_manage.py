"""`inv manage`: one allowlisted management command, through the deploy account, in a
one-off container of the deployed version; its output streams back and its exit code is
kept. Anything else is refused by the client and, sent raw through OpenSSH, by the server,
and changes nothing."""

from __future__ import annotations

import pytest

from tests.e2e import tools_env
from tests.e2e.conftest import STAGING_A, ssh_raw

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def env(server):
    tools_env.configure()
    if tools_env.served() is None:
        tools_env.ensure_deployed(STAGING_A)
    return tools_env


def snapshot(env) -> tuple:
    """What a refused command must leave as it was."""
    return env.dotenv(), len(env.history()), env.containers(), (env.STATE_DIR / "lock.info").read_bytes()


def test_an_allowed_command_streams_its_output(env):
    result = env.tools("manage", "--env", env.ENV, "showmigrations", "--", "notes")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{env.ENV} 127.0.0.1:2222 | notes" in result.stdout
    assert f"{env.ENV} 127.0.0.1:2222 |  [X] 0001_initial" in result.stdout
    assert "manage.py showmigrations notes: ok in" in result.stdout
    assert env.containers("label=com.docker.compose.oneoff=True") == []


def test_the_command_exit_code_is_the_tasks(env):
    result = env.tools("manage", "--env", env.ENV, "check --deploy --fail-level WARNING")
    assert result.returncode == 1
    assert "security.W004" in result.stdout + result.stderr
    assert "FAILED (exit 1)" in result.stderr


@pytest.mark.parametrize(
    ("words", "why"),
    [
        (["shell"], "can never run"),
        (["dbshell"], "can never run"),
        (["migrate"], "is not in this environment's manage_commands"),
        (["check", "--", "--settings=evil"], "does not accept the argument '--settings=evil'"),
        (["showmigrations", "--", "notes;id"], "not a plain word"),
    ],
)
def test_the_client_refuses_anything_else_before_connecting(env, words, why):
    before = snapshot(env)
    result = env.tools("manage", "--env", env.ENV, *words)
    assert result.returncode == 2
    assert why in result.stderr
    assert snapshot(env) == before


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("manage tools shell", "can never run"),
        ("manage tools dbshell", "can never run"),
        ("manage tools shell_plus", "can never run"),
        ("manage tools migrate", "is not in tools's manage_commands"),
        ("manage tools flush --noinput", "is not in tools's manage_commands"),
        ("manage tools check --settings=evil", "does not accept the argument"),
        ("manage tools clearsessions now", "does not accept the argument"),
        ("manage tools showmigrations notes;id", "refused"),
        ("manage tools showmigrations $(id)", "refused"),
        ("manage tools --plan showmigrations", "unknown option"),
        ("manage tools", "usage: manage ENV"),
    ],
)
def test_the_server_refuses_it_again_sent_raw(env, line, why):
    before = snapshot(env)
    result = ssh_raw(line)
    assert result.returncode == 64, result.stdout + result.stderr
    assert why in result.stderr
    assert "one-off container" not in result.stderr  # nothing started
    assert snapshot(env) == before


def test_the_raw_line_of_an_allowed_command_runs(env):
    result = ssh_raw("manage tools showmigrations notes --list")
    assert result.returncode == 0, result.stderr
    assert "[X] 0001_initial" in result.stdout
