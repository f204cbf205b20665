"""Secrets rotated without logging in (issue 16, part 3), on the sandbox's staging: from a
command (as `op inject` or `vault kv get` would print them) and from an age-encrypted file in
the repository; pushed to the server's .env over the admin connection (names added, changed,
removed; never a value, in any output or record); applied by `deploy.restart` with the
zero-downtime switch under open-loop load; bad input refused with .env untouched."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import APP_DIRS, PORTS, compose, history_lines, inv, served_version, tool_env
from tests.e2e.deployed import ensure
from tests.e2e.test_notify import Receiver

pytestmark = pytest.mark.e2e

ENV_FILE = APP_DIRS["staging"] / ".env"
SECRET = "rotated-7Qe9-not-to-be-printed"


def web_environment() -> dict[str, str]:
    """The serving web container's environment (what the app reads)."""
    ids = compose("staging", "ps", "-q", "web").stdout.split()
    assert ids
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{json .Config.Env}}", ids[0]], capture_output=True, text=True, env=tool_env()
    )
    assert out.returncode == 0, out.stderr
    return dict(line.split("=", 1) for line in json.loads(out.stdout))


def settings(path: Path, **staging: str) -> str:
    """A settings file merged over the project's (inv -f): staging's secrets settings."""
    path.write_text(
        "deploy:\n  environments:\n    staging:\n" + "".join(f"      {k}: '{v}'\n" for k, v in staging.items())
    )
    return str(path)


def env_value(name: str) -> str:
    for line in ENV_FILE.read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1]
    return ""


def test_secrets_from_a_command_and_from_an_age_file_are_pushed_and_applied_without_a_restart_gap(server, tmp_path):
    from tests.openload import OpenLoad

    ensure("staging", "a1a1a1a")
    original = env_value("SECRET_KEY")
    before_env = ENV_FILE.read_bytes()
    vault = tmp_path / "vault.sh"
    vault.write_text(f"echo SECRET_KEY={SECRET}\necho PD_TEST_FLAG=on\n")
    command = settings(tmp_path / "command.yaml", secrets_command=f"sh {vault}")
    folder = tmp_path / "secrets"  # relative paths resolve against the settings file naming them
    hooks = Receiver()  # the webhooks hear of the restart: never of a value
    try:
        hooked = inv("server.setup", "--env", "staging", DEPLOY_STAGING_WEBHOOKS=f"json={hooks.url('/ok')}")
        assert hooked.returncode == 0, hooked.stdout + hooked.stderr
        listed = inv("-f", command, "secrets.list", "--env", "staging")
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.split()[:2] == ["PD_TEST_FLAG", "SECRET_KEY"] and SECRET not in listed.stdout

        pushed = inv("-f", command, "secrets.push", "--env", "staging")
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        assert "added: PD_TEST_FLAG" in pushed.stdout and "changed: SECRET_KEY" in pushed.stdout
        assert SECRET not in pushed.stdout + pushed.stderr
        assert env_value("SECRET_KEY") == SECRET and env_value("VERSION") == "a1a1a1a"
        assert oct(ENV_FILE.stat().st_mode & 0o777) == "0o600" and ENV_FILE.stat().st_uid == 0
        record = json.loads(history_lines("staging")[-1])
        assert (record["kind"], record["added"], record["changed"]) == ("secrets", "PD_TEST_FLAG", "SECRET_KEY")
        assert SECRET not in Path("/var/lib/pushdeploy/staging/history.jsonl").read_text()
        assert web_environment()["SECRET_KEY"] == original  # running containers keep theirs until a restart

        with OpenLoad(f"http://127.0.0.1:{PORTS['staging']}/", rate=50, seconds=120) as load:
            time.sleep(1)
            restarted = inv("deploy.restart", "--env", "staging")
            time.sleep(1.5)
            seconds = load.now()
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        summary = load.summary(budget=1.0)
        print(summary.line())
        assert summary.failed == 0 and summary.slow == 0 and summary.sent >= 50 * seconds * 0.9
        assert served_version("staging") == "a1a1a1a" and web_environment()["SECRET_KEY"] == SECRET
        record = json.loads(history_lines("staging")[-1])
        assert (record["kind"], record["version"], record["secrets"]) == (
            "deploy",
            "a1a1a1a",
            "PD_TEST_FLAG SECRET_KEY",
        )
        assert SECRET not in restarted.stdout + restarted.stderr
        # Nowhere else either: the webhooks' bodies, the run's log as deploy.logs shows it, the
        # server's state and logs (history, run logs, notify log).
        assert hooks.wait("/ok", lambda body: body.get("event") == "succeeded" and body.get("version") == "a1a1a1a")
        assert SECRET not in json.dumps(hooks.bodies("/ok"))
        logs = inv("deploy.logs", "--env", "staging")
        assert logs.returncode == 0 and "VERSION=a1a1a1a" in logs.stdout, logs.stdout + logs.stderr
        assert SECRET not in logs.stdout + logs.stderr
        for kept in Path("/var/lib/pushdeploy/staging").rglob("*"):
            assert not kept.is_file() or SECRET.encode() not in kept.read_bytes(), kept

        # Bad input changes nothing: a secret named VERSION.
        (tmp_path / "bad.sh").write_text("echo VERSION=evil\n")
        bad_settings = settings(tmp_path / "bad.yaml", secrets_command=f"sh {tmp_path / 'bad.sh'}")
        bad = inv("-f", bad_settings, "secrets.push", "--env", "staging")
        assert bad.returncode == 2 and "VERSION is set by the deploy itself" in bad.stderr
        assert env_value("VERSION") == "a1a1a1a"

        # The same from an age-encrypted file in the repository: the flag is gone from it, so from .env.
        if not shutil.which("age-keygen"):
            pytest.skip("needs age (apt-get install age)")
        identity = tmp_path / "identity"
        subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
        recipient = next(line.split(": ")[1] for line in identity.read_text().splitlines() if "public key" in line)
        folder.mkdir(exist_ok=True)
        plain = f"SECRET_KEY={original}\n".encode()
        (folder / "staging.env.age").write_bytes(
            subprocess.run(["age", "-r", recipient], input=plain, capture_output=True, check=True).stdout
        )
        age = settings(tmp_path / "age.yaml", secrets_file="secrets/staging.env.age", secrets_recipients=recipient)
        wrong = tmp_path / "wrong"
        subprocess.run(["age-keygen", "-o", str(wrong)], check=True, capture_output=True)
        refused = inv("-f", age, "secrets.push", "--env", "staging", DEPLOY_AGE_IDENTITY=str(wrong))
        assert refused.returncode == 2 and "age failed" in refused.stderr and env_value("SECRET_KEY") == SECRET
        pushed = inv("-f", age, "secrets.push", "--env", "staging", DEPLOY_AGE_IDENTITY=str(identity))
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        assert "changed: SECRET_KEY" in pushed.stdout and "removed: PD_TEST_FLAG" in pushed.stdout
        assert env_value("SECRET_KEY") == original and env_value("PD_TEST_FLAG") == ""
        assert original not in pushed.stdout + pushed.stderr
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if ENV_FILE.read_bytes() != before_env:  # the next tests' staging as it was
            ENV_FILE.write_bytes(before_env)
        Path("/var/lib/pushdeploy/staging/secrets.names").unlink(missing_ok=True)
        inv("server.setup", "--env", "staging", DEPLOY_STAGING_WEBHOOKS="")
        hooks.server.shutdown()
        inv("deploy.restart", "--env", "staging")
