"""Secrets (issue 16, part 3): KEY=VALUE checked on both sides with names, never values, in
every message; the server's .env merged line by line; a push cut short changes nothing;
the history names what changed, and the next run records which secrets it applied."""

from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest

from pushdeploy import envsecrets, protocol
from tests.unit.test_marks import tool

from pdserver import envpush
from pdserver.request import Refused, parse


def test_secrets_are_parsed_as_dotenv_reads_them():
    text = "# staging\nSECRET_KEY=abc\nexport SENTRY_DSN='https://k@s/1'\n\nEMPTY=\nQUOTED=\"a b\"\n"
    assert envsecrets.parse(text, "f") == {
        "SECRET_KEY": "abc",
        "SENTRY_DSN": "https://k@s/1",
        "EMPTY": "",
        "QUOTED": "a b",
    }


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("secret_key=hunter2\n", "'secret_key' is not a name"),
        ("VERSION=1.0\n", "VERSION is set by the deploy itself"),
        ("IMAGE=evil/image\n", "IMAGE is set by the deploy itself"),
        ("A=1\nA=2\n", "A is set twice"),
        ('KEY="line one\nline two"\n', "the value of KEY has a newline"),
        ("hunter2\n", "line 1: not KEY=VALUE (the line is not shown"),
    ],
)
def test_bad_secrets_are_refused_without_showing_a_value(text, problem):
    with pytest.raises(envsecrets.BadSecrets) as error:
        envsecrets.parse(text, "secrets/staging.env.age")
    assert problem in str(error.value)
    assert "hunter2" not in str(error.value) and "line two" not in str(error.value)


def test_what_travels_has_a_checksum_the_server_checks():
    data = envsecrets.lines({"B": "2", "A": "x=y"})
    assert data.startswith("A=x=y\nB=2\npushdeploy-sha256:")
    assert envpush.received(data.encode()) == {"A": "x=y", "B": "2"}
    with pytest.raises(Refused, match="incomplete or altered"):
        envpush.received(data.encode()[:-10])
    with pytest.raises(Refused, match="incomplete or altered"):
        envpush.received(data.replace("B=2", "B=3").encode())
    crafted = "VERSION=evil\n"  # from someone holding the admin key's connection, checksum and all
    with pytest.raises(Refused, match="VERSION is set by the deploy itself"):
        envpush.received(f"{crafted}pushdeploy-sha256:{hashlib.sha256(crafted.encode()).hexdigest()}\n".encode())


def test_the_server_env_keeps_every_other_line_and_removes_only_what_was_pushed_before():
    current = b"# comment\nVERSION=1.4.0\nIMAGE=reg/pixel\nSECRET_KEY=old\nHTTP_PORT=8081\nOLD_TOKEN=t\n"
    text, added, changed, removed = envpush.merged(current, {"SECRET_KEY": "new", "SENTRY_DSN": "d"}, {"OLD_TOKEN"})
    assert text == b"# comment\nVERSION=1.4.0\nIMAGE=reg/pixel\nSECRET_KEY=new\nHTTP_PORT=8081\nSENTRY_DSN=d\n"
    assert (added, changed, removed) == (["SENTRY_DSN"], ["SECRET_KEY"], ["OLD_TOKEN"])
    again = envpush.merged(text, {"SECRET_KEY": "new", "SENTRY_DSN": "d"}, {"SECRET_KEY", "SENTRY_DSN"})
    assert again == (text, [], [], [])


def test_a_push_is_not_a_run_and_the_next_run_names_the_secrets_it_applied():
    history = tool()
    records = [
        {"kind": "deploy", "version": "1.0", "outcome": "ok"},
        {"kind": "secrets", "changed": "SECRET_KEY"},
        {"kind": "secrets", "added": "SENTRY_DSN", "removed": "OLD"},
    ]
    assert history.last_run(records)["version"] == "1.0"
    assert history.secrets_since_run(records) == ["OLD", "SECRET_KEY", "SENTRY_DSN"]
    assert history.secrets_since_run([*records, {"kind": "deploy", "version": "1.0", "outcome": "ok"}]) == []


def test_env_push_is_for_the_admin_connection_only():
    assert "env-push" in protocol.SERVER_VERBS and "env-push" not in protocol.VERBS
    assert parse("env-push staging --by=alice".split(), 0).verb == "env-push"
    with pytest.raises(Refused):
        parse("env-push staging SECRET=1".split(), 0)


@pytest.mark.skipif(not shutil.which("age-keygen"), reason="needs age (apt-get install age)")
def test_the_secrets_file_is_decrypted_in_memory_with_the_identity_given(tmp_path):
    identity = tmp_path / "identity"
    subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
    recipient = next(line.split(": ")[1] for line in identity.read_text().splitlines() if "public key" in line)
    (tmp_path / "secrets").mkdir()
    plain = b"SECRET_KEY=hunter2\nSENTRY_DSN=https://k@s/1\n"
    encrypted = subprocess.run(["age", "-r", recipient], input=plain, capture_output=True, check=True).stdout
    (tmp_path / "secrets/staging.env.age").write_bytes(encrypted)
    from pushdeploy.settings import from_config
    from pushdeploy.tasks import secrets as secrets_tasks

    deploy = {"environments": {"staging": {"hosts": "h", "secrets_recipients": [recipient]}}}
    settings = from_config(deploy, {"DEPLOY_AGE_IDENTITY": str(identity)}, root=tmp_path, environ={})
    assert secrets_tasks.values_of(settings, settings.environment("staging")) == {
        "SECRET_KEY": "hunter2",
        "SENTRY_DSN": "https://k@s/1",
    }
    wrong = tmp_path / "wrong"
    subprocess.run(["age-keygen", "-o", str(wrong)], check=True, capture_output=True)
    other = from_config(deploy, {"DEPLOY_AGE_IDENTITY": str(wrong)}, root=tmp_path, environ={})
    with pytest.raises(Exception, match="age failed") as error:
        secrets_tasks.values_of(other, other.environment("staging"))
    assert "hunter2" not in str(error.value)


def test_a_secrets_command_gives_the_values_and_its_failure_shows_nothing_of_its_output(tmp_path):
    from pushdeploy.settings import from_config
    from pushdeploy.tasks import secrets as secrets_tasks

    (tmp_path / "vault.sh").write_text("echo SECRET_KEY=from-vault\necho DATABASE_URL=postgres://u:p@h/d\n")
    (tmp_path / "broken.sh").write_text("echo 'token hunter2 rejected' >&2\nexit 3\n")

    def env(command):
        deploy = {"environments": {"staging": {"hosts": "h", "secrets_command": command}}}
        settings = from_config(deploy, {}, root=tmp_path, environ={})
        return settings, settings.environment("staging")

    assert secrets_tasks.values_of(*env("sh vault.sh")) == {
        "SECRET_KEY": "from-vault",
        "DATABASE_URL": "postgres://u:p@h/d",
    }
    with pytest.raises(Exception, match=r"secrets_command failed \(exit 3\)") as error:
        secrets_tasks.values_of(*env("sh broken.sh"))
    assert "hunter2" not in str(error.value)


@pytest.mark.skipif(not shutil.which("age-keygen"), reason="needs age (apt-get install age)")
def test_secrets_edit_opens_a_private_copy_and_encrypts_it_again(tmp_path, monkeypatch, capsys):
    """$EDITOR gets a plaintext copy in a private folder; what it saves is checked, encrypted to
    the recipients, written over the file, and the copy is gone; bad edits change nothing."""
    from invoke import Config, Context
    from invoke.exceptions import Exit

    from pushdeploy.tasks import secrets as secrets_tasks

    identity = tmp_path / "identity"
    subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
    recipient = next(line.split(": ")[1] for line in identity.read_text().splitlines() if "public key" in line)
    (tmp_path / "invoke.yaml").write_text(
        f"deploy:\n  environments:\n    staging:\n      hosts: h\n      secrets_recipients: [{recipient}]\n"
    )
    seen = tmp_path / "seen"
    editor = tmp_path / "editor.sh"
    editor.write_text(f'stat -c %a "$(dirname "$1")" > {seen}\necho "SECRET_KEY=$PD_NEW" >> "$1"\n')
    monkeypatch.setenv("EDITOR", f"sh {editor}")
    monkeypatch.setenv("DEPLOY_AGE_IDENTITY", str(identity))
    monkeypatch.setenv("DEPLOY_DOTENV", str(tmp_path / "none.env"))
    (tmp_path / "none.env").write_text("")
    monkeypatch.chdir(tmp_path)
    context = Context(config=Config(project_location=str(tmp_path)))
    context.config.load_project()
    monkeypatch.setenv("PD_NEW", "first-value")
    secrets_tasks.edit(context, env="staging")
    assert seen.read_text().strip() == "700"
    encrypted = (tmp_path / "secrets/staging.env.age").read_bytes()
    assert b"first-value" not in encrypted
    plain = subprocess.run(["age", "-d", "-i", str(identity)], input=encrypted, capture_output=True, check=True)
    assert b"SECRET_KEY=first-value" in plain.stdout
    out = capsys.readouterr().out
    assert "added SECRET_KEY" in out and "first-value" not in out
    monkeypatch.setenv("PD_NEW", "second")  # SECRET_KEY twice: refused, the file unchanged
    with pytest.raises(Exit):
        secrets_tasks.edit(context, env="staging")
    assert "SECRET_KEY is set twice: nothing was changed" in capsys.readouterr().err
    assert (tmp_path / "secrets/staging.env.age").read_bytes() == encrypted
