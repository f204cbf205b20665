"""The unit tests import the server's Python package as `pdserver`, as the client does."""

import os
import subprocess
import sys
import textwrap

import pytest

from pushdeploy import protocol  # noqa: F401  (registers scripts/server/lib/pdserver as pdserver)

from pdserver import facts

CONF = "APP_DIR={app}\nPROJECT=pixel-staging\nWEB_SERVICE=web\nHOOK_BEFORE_SWITCH=check --deploy\nMANAGE_COMMAND=showmigrations --list [a-z]+\n"


@pytest.fixture(autouse=True)
def _umask_kept():
    """bin/deploy sets umask 077 for itself: a test that runs it in this process must not
    leave it to the rest of the session (the e2e tests' sshd and dockerd would inherit it)."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield
    os.umask(previous)


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A temporary /etc/pushdeploy and state directory with one environment, staging."""
    etc, state, app = tmp_path / "etc", tmp_path / "state", tmp_path / "app"
    for path in (etc, state / "staging" / "runs", app):
        path.mkdir(parents=True)
    (etc / "staging.conf").write_text(CONF.format(app=app))
    (app / ".env").write_text("SECRET=x\nVERSION=1.4.0\n")
    monkeypatch.setattr(facts, "ETC", str(etc))
    monkeypatch.setattr(facts, "STATE", str(state))
    return tmp_path


# The server's Python, run as bin/deploy runs it (a process of its own), on stand-in
# settings: SNIPPET may call record_commands(answer) to record every command it would
# run (one line each in $CALLS) instead of running it; a Refused ends it as bin/deploy
# does, its message on stderr and its exit code.
PRELUDE = """
import os, sys
sys.path.insert(0, {lib!r})
from pdserver import env as envs, facts, run
from pdserver.request import Refused, parse

def record_commands(answer=lambda argv: (0, ""), versions=False):
    def output(command, stderr=True, timeout=0):
        at = "VERSION=%s " % command.environ["VERSION"] if versions and "VERSION" in command.environ else ""
        with open(os.environ["CALLS"], "a") as calls:
            calls.write(at + " ".join(command.argv) + "\\n")
        return answer(command.argv)

    def streamed(command):
        code, out = output(command)
        print(out, end="", flush=True)
        return code

    run.output, run.streamed = output, streamed
    run.to_file = run.from_file = lambda command, path: streamed(command)

def stand_in(name="test", state="", **values):
    env = envs.Env(name, os.path.join(state or "/nonexistent", name + ".conf"), {{**envs.DEFAULTS, **{{key: [] for key in envs.LISTS}}, **values}})
    if state:
        envs.Env.state_dir = property(lambda self: state)
    envs.load = lambda name, etc=None: env
    return env

try:
{body}
except Refused as refused:
    sys.stdout.flush()
    print("pushdeploy: %s" % refused, file=sys.stderr)
    sys.exit(refused.code)
"""


def server_python(snippet: str, calls=None, **environ) -> subprocess.CompletedProcess:
    body = textwrap.indent(textwrap.dedent(snippet).strip("\n"), "    ")
    script = PRELUDE.format(lib=str(protocol.SERVER_DIR / "lib"), body=body)
    extra = {"CALLS": str(calls)} if calls else {}
    env = {**os.environ, **extra, **environ}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)


@pytest.fixture
def root(tmp_path, monkeypatch):
    """bin/install on a temporary root: its directories, no systemd (a cron.d), a bundle with app files."""
    from pdserver import install

    for name in ("PREFIX", "ETC", "STATE"):
        monkeypatch.setattr(facts, name, str(tmp_path / name.lower()))
    monkeypatch.setattr(facts, "KEYS_FILE", str(tmp_path / "etc/keys.json"))
    monkeypatch.setattr(install, "SYSTEMD_RUN", str(tmp_path / "no-systemd"))
    monkeypatch.setattr(install, "CRON_DIR", str(tmp_path / "cron.d"))
    (tmp_path / "cron.d").mkdir()
    bundle = tmp_path / "bundle"
    (bundle / "app/docker/nginx").mkdir(parents=True)
    (bundle / "app/docker-compose.yml").write_text("services: {}\n")
    (bundle / "app/docker/nginx/pixel.conf").write_text("server {}\n")
    (bundle / "dotenv").write_text("VERSION=none\nSECRET_KEY=from-template\nNEW_KEY=1\n")
    (bundle / "env.conf").write_text("APP_DIR=/x\nPROJECT=p\nPULL_CHANNEL=production-approved\nPULL_EVERY=120\n")
    return tmp_path
