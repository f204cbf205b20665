"""teardown ENV (admin only): an environment removed from a host, on a temporary
/etc/pushdeploy and state, docker and compose recorded instead of run."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.unit.conftest import CONF

from pdserver import facts, teardown
from pdserver import run as runner
from pdserver.request import Refused, parse


@pytest.fixture
def host(server, monkeypatch, tmp_path):
    """staging on a host, with a backup, webhooks, a cron pull agent and the sudo rule."""
    state = server / "state/staging"
    (state / "history.jsonl").write_text('{"version": "1.4.0"}\n')
    (state / "backups").mkdir()
    (state / "backups/20261205T0000Z-1.4.0.dump").write_bytes(b"PGDMP")
    (server / "etc/staging.webhooks").write_text("https://hooks.example/secret\n")
    for folder in ("cron.d", "systemd", "sudoers.d"):
        (tmp_path / folder).mkdir()
    (tmp_path / "cron.d/pushdeploy-pull-staging").write_text("* * * * * root true\n")
    (tmp_path / "sudoers.d/pushdeploy-pd-deploy").write_text(
        "# Managed by pushdeploy: pd-deploy may run bin/deploy as root, nothing else.\n"
        "pd-deploy ALL=(root) NOPASSWD: /opt/pushdeploy/bin/deploy\n"
    )
    (tmp_path / "sudoers.d/pushdeploy-hosts-admin").write_text("pd-admin ALL=(ALL) NOPASSWD: ALL\n")  # the admin's own
    monkeypatch.setattr(teardown, "CRON_DIR", str(tmp_path / "cron.d"))
    monkeypatch.setattr(teardown, "SYSTEMD_DIR", str(tmp_path / "systemd"))
    monkeypatch.setattr(teardown, "SUDOERS_DIR", str(tmp_path / "sudoers.d"))
    monkeypatch.setattr(facts, "KEYS_FILE", str(server / "etc/keys.json"))
    monkeypatch.delenv("SUDO_USER", raising=False)
    calls = []

    def output(command, stderr=True, timeout=0):
        calls.append(" ".join(command.argv))
        listing = command.argv[1:3] == ["volume", "ls"]
        return 0, "pixel-staging_dbdata\n" if listing and "rm" not in command.argv else ""

    monkeypatch.setattr(runner, "output", output)
    return server, calls


def ask(line: str):
    from pdserver import verbs

    return verbs.HANDLERS["teardown"](parse(line.split(), time.time()))


def test_teardown_removes_the_environment_and_keeps_its_data_unless_asked(host, capsys):
    server, calls = host
    result = ask("teardown staging --by=admin")
    assert result.code == 0 and result.data["volumes"] == "no"
    assert calls[:2] == [
        "docker version -f {{.Server.Version}}",  # docker answers: nothing is removed before it does
        "docker compose -p pixel-staging -f docker-compose.yml down --remove-orphans --timeout 10",
    ]
    assert not any("volume rm" in call for call in calls)
    assert not (server / "app").exists() and not (server / "etc/staging.conf").exists()
    assert not (server / "etc/staging.webhooks").exists()
    assert sorted(os.listdir(server / "state/staging")) == ["backups", "lock"]  # the backups stay, history goes
    assert not os.listdir(server / "cron.d")
    assert os.listdir(server / "sudoers.d") == ["pushdeploy-hosts-admin"]  # the last one: the deploy rule goes
    out = capsys.readouterr().out
    assert "kept 1 volume(s): pixel-staging_dbdata (--volumes removes them)" in out
    assert "kept the database backups in" in out and "removed" in out and "secret" not in out


def test_a_review_templates_teardown_removes_its_front_proxy_and_runs_no_compose(host, capsys):
    """A template never runs its own project (compose could not even read its files: the
    REVIEW_* variables are review-up's): its front proxy and network go by their label."""
    server, calls = host
    conf = server / "etc/staging.conf"
    conf.write_text(conf.read_text() + "REVIEW_TEMPLATE=yes\nREVIEW_DOMAIN=review.example\n")
    assert ask("teardown staging --by=admin").code == 0
    assert not any(" down " in call for call in calls)
    assert "docker ps -aq --filter label=pushdeploy.review=staging" in calls
    assert "docker network ls -q --filter label=pushdeploy.review=staging" in calls
    assert not (server / "app").exists() and not conf.exists()


def test_teardown_with_volumes_removes_the_data_too(host, capsys):
    server, calls = host
    (server / "etc/production.conf").write_text(f"APP_DIR={server / 'prod'}\nPROJECT=pixel-production\n")
    assert ask("teardown staging --volumes").code == 0
    assert calls[1].endswith("down --remove-orphans --timeout 10 --volumes")
    assert "docker volume rm pixel-staging_dbdata" in calls
    assert not (server / "state/staging").exists()
    assert sorted(os.listdir(server / "sudoers.d")) == ["pushdeploy-hosts-admin", "pushdeploy-pd-deploy"]


def test_teardown_waits_for_nobody_and_changes_nothing_while_a_deploy_runs(host):
    server, calls = host
    state = server / "state/staging"
    script = f"echo 'r1 deploy of 1.5.0 by ci in progress since T' >{state / 'lock.info'}; sleep 1"
    holder = subprocess.Popen(["flock", str(state / "lock"), "sh", "-c", script])
    time.sleep(0.3)
    try:
        with pytest.raises(
            Refused, match="busy: deploy of 1.5.0 by ci in progress since T; staging stays as it is"
        ) as caught:
            ask("teardown staging")
    finally:
        holder.wait()
    assert caught.value.code == facts.EXIT_BUSY and calls == []
    assert (server / "app/.env").exists() and (server / "etc/staging.conf").exists()


@pytest.mark.parametrize(
    ("other", "says"),
    [
        ("APP_DIR={app}/prod\nPROJECT=pixel-production\n", "overlap"),
        ("APP_DIR=/srv/elsewhere\nPROJECT=pixel-staging\n", "runs as the same compose project pixel-staging"),
    ],
)
def test_teardown_never_reaches_another_environment(host, other, says):
    server, calls = host
    (server / "etc/production.conf").write_text(other.format(app=server / "app"))
    with pytest.raises(Refused, match=says):
        ask("teardown staging")
    assert calls == [] and (server / "app/.env").exists()


def test_teardown_refuses_a_shared_folder_and_a_silent_docker(host, monkeypatch):
    server, calls = host
    conf = server / "etc/staging.conf"
    conf.write_text(conf.read_text().replace(f"APP_DIR={server}/app", "APP_DIR=/srv"))
    with pytest.raises(Refused, match="its app_dir /srv is a shared folder"):
        ask("teardown staging")
    conf.write_text(CONF.format(app=server / "app"))
    monkeypatch.setattr(
        runner, "output", lambda command, stderr=True, timeout=0: (1, "Cannot connect to the Docker daemon")
    )
    with pytest.raises(Refused, match="docker does not answer"):
        ask("teardown staging")
    assert (server / "app/.env").exists() and (server / "etc/staging.conf").exists()
