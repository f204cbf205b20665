"""Hosts as users name them (issue 16, part 1): an OpenSSH client config's HostName, Port,
IdentityFile and ProxyJump, and an environment's `jump:`, resolved into where to connect,
through which jump hosts, in which order; loops and bad hops refused with the setting named."""

from __future__ import annotations

import getpass

import paramiko
import pytest

from pushdeploy import sshconfig
from pushdeploy.settings import ConfigError, Host, from_config, parse_host

CONFIG = """
Host web1
    HostName 10.0.1.11
    ProxyJump bastion
Host web2
    HostName 10.0.1.12
    User ops-admin
    Port 2222
    ProxyJump ops@bastion,inner:2200
Host bastion
    HostName 203.0.113.5
    User jumper
    IdentityFile {key}
Host inner
    ProxyJump edge
Host edge
    HostName 198.51.100.7
Host loop-a
    ProxyJump loop-b
Host loop-b
    HostName 10.9.9.9
    ProxyJump loop-a
Host direct
    HostName 10.0.1.20
    ProxyJump none
"""


@pytest.fixture
def lookup(tmp_path):
    key = tmp_path / "bastion_key"
    key.write_text("x")
    return paramiko.SSHConfig.from_text(CONFIG.format(key=key)).lookup, str(key)


def hops(host: Host) -> list[tuple[str, str, int]]:
    return [(hop.user, hop.hostname, hop.port) for hop in host.via]


def test_an_alias_goes_through_its_bastion_with_the_bastions_own_account_and_key(lookup):
    config, key = lookup
    host = parse_host("web1", "deploy", "hosts[0]", config)
    assert (host.user, host.hostname, host.port, str(host)) == ("deploy", "10.0.1.11", 22, "web1")
    assert hops(host) == [("jumper", "203.0.113.5", 22)]
    assert host.via[0].identities == (key,) and str(host.via[0]) == "bastion"


def test_several_hops_in_order_and_the_first_hops_own_jump_first(lookup):
    config, _ = lookup
    host = parse_host("pd@web2", "deploy", "hosts[0]", config)
    assert (host.user, host.hostname, host.port) == ("pd", "10.0.1.12", 2222)
    # ops@bastion (explicit user wins over the config's) is reached first, then inner, which
    # is not the first hop: its own ProxyJump (edge) is not followed, as OpenSSH does.
    assert hops(host) == [("ops", "203.0.113.5", 22), (getpass.getuser(), "inner", 2200)]  # no User: the local one
    assert parse_host("web2:2022", "deploy", "hosts[0]", config).port == 2022  # the host's own port wins


def test_jump_setting_wins_over_proxyjump_and_works_without_a_config(lookup):
    config, _ = lookup
    host = parse_host("web1", "deploy", "hosts[0]", config, jump="admin@edge:2200")
    assert hops(host) == [("admin", "198.51.100.7", 2200)]
    plain = parse_host("deploy@10.0.0.5", "deploy", "hosts[0]", jump="me@10.0.0.1,you@10.0.0.2:2222")
    assert hops(plain) == [("me", "10.0.0.1", 22), ("you", "10.0.0.2", 2222)]
    assert parse_host("direct", "deploy", "h", config).via == ()  # ProxyJump none


def test_a_first_hop_reached_through_its_own_jump_host(lookup):
    config, _ = lookup
    host = parse_host("10.0.0.5", "deploy", "hosts[0]", config, jump="inner")
    assert [hop.hostname for hop in host.via] == ["198.51.100.7", "inner"]


@pytest.mark.parametrize(
    ("name", "jump", "problem"),
    [
        ("loop-a", "", "ProxyJump loop: loop-a:22 -> 10.9.9.9:22 -> loop-a:22"),
        ("10.0.0.5", "10.0.0.5", "ProxyJump loop: 10.0.0.5:22 -> 10.0.0.5:22"),
        ("10.0.0.5", "a@b;rm -rf /", "is not [user@]host[:port]"),
        ("10.0.0.5", "a@b:70000", "out of range"),
    ],
)
def test_loops_and_bad_hops_are_refused_naming_the_setting(lookup, name, jump, problem):
    config, _ = lookup
    with pytest.raises(ConfigError) as error:
        parse_host(
            name, "deploy", "deploy.environments.p.hosts[0]", config, jump, "deploy.environments.p.jump" if jump else ""
        )
    assert problem in str(error.value)
    assert error.value.key == ("deploy.environments.p.jump" if jump else "deploy.environments.p.hosts[0]")


def test_settings_read_the_named_ssh_config_and_jump(tmp_path):
    (tmp_path / "ssh_config").write_text("Host app\n    HostName 10.1.1.1\n    ProxyJump bastion.example\n")
    deploy = {
        "ssh_config": "ssh_config",
        "environments": {
            "staging": {"hosts": ["app"]},
            "production": {"hosts": ["10.2.2.2", "10.2.2.3"], "jump": "ops@bastion.example:2222"},
        },
    }
    settings = from_config(deploy, {}, root=tmp_path, environ={})
    app = settings.environment("staging").hosts[0]
    assert (str(app), app.hostname, [h.hostname for h in app.via]) == ("app", "10.1.1.1", ["bastion.example"])
    assert [hops(h) for h in settings.environment("production").hosts] == [[("ops", "bastion.example", 2222)]] * 2
    with pytest.raises(ConfigError, match="does not exist") as missing:
        from_config({**deploy, "ssh_config": "nope"}, {}, root=tmp_path, environ={})
    assert missing.value.key == "deploy.ssh_config"
    unaware = from_config({**deploy, "ssh_config": "none"}, {}, root=tmp_path, environ={})
    assert unaware.environment("staging").hosts[0] == Host("deploy", "app")


def test_no_config_file_changes_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert sshconfig.load(sshconfig.DEFAULT_FILE, False) is sshconfig.no_config
    assert parse_host("deploy@10.0.0.5:2200", "x", "h") == Host("deploy", "10.0.0.5", 2200)


def test_config_show_says_where_each_host_goes(tmp_path):
    from pushdeploy import provenance

    (tmp_path / "ssh_config").write_text("Host app\n    HostName 10.1.1.1\n    Port 2222\n")
    deploy = {
        "ssh_config": "ssh_config",
        "environments": {"staging": {"hosts": ["app", "deploy@10.2.2.2"], "jump": "ops@bastion.example"}},
    }
    settings = from_config(deploy, {}, root=tmp_path, environ={})
    rows = {name: value for name, value, _ in provenance.environment_rows(settings, settings.environment("staging"))}
    assert rows["hosts"] == (
        "deploy@app (10.1.1.1:2222, via ops@bastion.example), deploy@10.2.2.2 (via ops@bastion.example)"
    )


def test_the_admin_logs_in_as_the_ssh_configs_user_unless_deploy_admin_user_says(lookup):
    """The deploy account is always deploy_user (the restricted account); the admin connection
    is a person's or CI's own login: DEPLOY_ADMIN_USER, else the config's User, else root."""
    from pushdeploy.settings import Access

    config, _ = lookup
    web1, web2 = parse_host("web1", "deploy", "hosts", config), parse_host("web2", "deploy", "hosts", config)
    assert (web2.user, web2.config_user) == ("deploy", "ops-admin")
    assert [Access().admin_for(h) for h in (web1, web2)] == ["root", "ops-admin"]
    assert [Access().as_root(h) for h in (web1, web2)] == [True, False]
    assert [Access(admin_user="admin").admin_for(h) for h in (web1, web2)] == ["admin", "admin"]
    # Not a User no server could have (a `Host *` block's), nor the deploy account itself.
    assert parse_host("web9", "deploy", "hosts", lambda name: {"user": "Jane.Doe"}).config_user == ""
    assert parse_host("web9", "deploy", "hosts", lambda name: {"user": "deploy"}).config_user == ""
