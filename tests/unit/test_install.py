"""bin/install (pdserver/install.py) on a temporary root: it changes only what differs, keeps
the server's .env values, installs or removes the pull agent and the webhooks. The parts
that need the real system (useradd, visudo, systemctl) run in every e2e test's server.setup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pdserver import facts, install


def installer(root) -> install.Installer:
    return install.Installer(str(root / "bundle"), "production", "root", str(root / "srv/app"))


def test_a_second_run_changes_nothing_and_the_servers_env_values_stay(root, capsys):
    app = root / "srv/app"
    first = installer(root)
    first.install_app()
    assert (app / ".env").read_text() == "VERSION=none\nSECRET_KEY=from-template\nNEW_KEY=1\n"
    assert oct((app / ".env").stat().st_mode & 0o777) == "0o600"
    assert oct((app / "docker/nginx/pixel.conf").stat().st_mode & 0o777) == "0o644"
    (app / ".env").write_text("VERSION=1.4.0\nSECRET_KEY=the-servers-own")  # no newline at the end
    capsys.readouterr()
    second = installer(root)
    second.install_app()
    assert (app / ".env").read_text() == "VERSION=1.4.0\nSECRET_KEY=the-servers-own\nNEW_KEY=1\n"
    assert "(1 new keys; existing values kept)" in capsys.readouterr().out
    third = installer(root)
    third.install_app()
    assert third.changed == 0


def test_a_changed_mode_is_put_back(root):
    first = installer(root)
    first.install_app()
    os.chmod(root / "srv/app/docker-compose.yml", 0o666)
    again = installer(root)
    again.install_app()
    assert again.changed == 1 and oct((root / "srv/app/docker-compose.yml").stat().st_mode & 0o777) == "0o644"


def test_the_pull_agent_is_a_cron_entry_without_systemd_and_goes_with_the_channel(root, capsys):
    installer(root).install_pull_agent()
    entry = root / "cron.d/pushdeploy-pull-production"
    assert "*/2 * * * * root " in entry.read_text() and oct(entry.stat().st_mode & 0o777) == "0o644"
    assert "pull agent of production: cron" in capsys.readouterr().out
    (root / "bundle/env.conf").write_text("APP_DIR=/x\nPROJECT=p\n")
    gone = installer(root)
    gone.install_pull_agent()
    assert not entry.exists() and gone.changed == 1


def test_webhooks_are_root_only_and_an_empty_list_removes_them(root):
    (root / "bundle/webhooks").write_text("json https://h/secret\n")
    put = installer(root)
    put.install_webhooks()
    hooks = root / "etc/production.webhooks"
    assert oct(hooks.stat().st_mode & 0o777) == "0o600"
    (root / "bundle/webhooks").write_text("")
    installer(root).install_webhooks()
    assert not hooks.exists()


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["b", "Bad_Env", "pd", "/srv/x"], "invalid environment name"),
        (["b", "staging", "Root", "/srv/x"], "invalid user name"),
        (["b", "staging", "pd", "srv/x"], "APP_DIR must be an absolute path"),
        (["b", "staging", "pd", "/srv/../etc"], "APP_DIR must be an absolute path"),
    ],
)
def test_bad_arguments_change_nothing(argv, says, capsys):
    assert install.main(argv) == 1
    assert says in capsys.readouterr().err


def test_code_an_earlier_server_side_left_is_removed_and_the_rest_installed(root, capsys):
    bundle = root / "bundle"
    for name in facts.SERVER_FILES:
        (bundle / name).parent.mkdir(parents=True, exist_ok=True)
        (bundle / name).write_text(f"# {name}\n")
    (bundle / "env.conf").write_text("APP_DIR=/x\nPROJECT=p\n")
    stale = root / "prefix/lib/switch.sh"
    stale.parent.mkdir(parents=True)
    stale.write_text("# the old bash switch\n")
    (root / "prefix/lib/pdserver").mkdir()
    (root / "prefix/lib/pdserver/__pycache__").mkdir()
    installer(root).install_code()
    assert not stale.exists() and (root / "prefix/lib/pdserver/__pycache__").is_dir()
    assert all((root / "prefix" / name).exists() for name in facts.SERVER_FILES)
    assert oct((root / "prefix/bin/deploy").stat().st_mode & 0o777) == "0o755"
    assert "lib/switch.sh (removed: no longer part of the server side)" in capsys.readouterr().out
    again = installer(root)
    again.install_code()
    assert again.changed == 0


FAKE_DOCKER = """#!/bin/sh
# docker login as the daemon answers it: the right password or a refusal (the e2e tests use the real one).
[ "$1" = login ] || exit 2
read -r password
[ "$password" = right-password ] || { echo 'Error response from daemon: login attempt to https://reg.example:5443/v2/ failed with status: 401 Unauthorized' >&2; exit 1; }
printf '{"auths": {"%s": {"auth": "x"}}}' "$5" >"$DOCKER_CONFIG/config.json"
"""


@pytest.fixture
def registry(root, monkeypatch):
    bin_dir = root / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(install, "CERTS_DIR", str(root / "certs.d"))
    (root / "bundle/env.conf").write_text("APP_DIR=/x\nPROJECT=p\nREGISTRY=reg.example:5443\nREGISTRY_USER=ci\n")
    (root / "bundle/registry-ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    return root


def test_a_refused_registry_login_changes_nothing_and_never_shows_the_password(registry, capsys):
    (registry / "bundle/registry-password").write_text("wrong-password\n")
    with pytest.raises(install.Failed) as failed:
        installer(registry).install_registry()
    assert "the registry reg.example:5443 refused the login as ci (" in str(failed.value)
    assert "401 Unauthorized" in str(failed.value) and "nothing was changed" in str(failed.value)
    assert "wrong-password" not in str(failed.value) + capsys.readouterr().out
    assert not (registry / "certs.d").exists() or not any((registry / "certs.d").iterdir())
    assert not (registry / "etc").exists()


def test_a_registry_login_is_root_only_kept_without_a_password_and_goes_with_the_setting(registry, capsys):
    (registry / "bundle/registry-password").write_text("right-password\n")
    first = installer(registry)
    first.install_registry()
    config = registry / "etc/production.docker/config.json"
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    assert oct(config.parent.stat().st_mode & 0o777) == "0o700"
    assert (registry / "certs.d/reg.example:5443/ca.crt").read_text().startswith("-----BEGIN CERTIFICATE-----")
    again = installer(registry)
    again.install_registry()
    assert again.changed == 0  # the same login: nothing to change
    (registry / "bundle/registry-password").unlink()
    kept = installer(registry)
    kept.install_registry()
    assert kept.changed == 0 and "login to reg.example:5443 as ci kept: no password given" in capsys.readouterr().out
    (registry / "bundle/env.conf").write_text("APP_DIR=/x\nPROJECT=p\n")
    gone = installer(registry)
    gone.install_registry()
    assert not config.parent.exists() and gone.changed == 1


def test_a_registry_without_a_login_here_and_no_password_says_which_variable_to_set(registry):
    with pytest.raises(install.Failed) as failed:
        installer(registry).install_registry()
    assert "DEPLOY_PRODUCTION_REGISTRY_PASSWORD or DEPLOY_REGISTRY_PASSWORD" in str(failed.value)


def test_every_module_of_the_server_package_is_shipped():
    """A module missing from PD_SERVER_FILES would be imported on the developer's machine and
    fail on every server (ImportError at the first request)."""
    package = Path(facts.LIB) / "pdserver"
    modules = {f"lib/pdserver/{path.relative_to(package)}" for path in package.rglob("*.py")}
    assert modules - set(facts.SERVER_FILES) == set()
