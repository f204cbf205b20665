"""The plan: what the client sends and installs, from settings alone."""

import io
import shlex
import tarfile

import pytest

from pushdeploy import plan, protocol
from pushdeploy.settings import from_config

from pdserver import env as server_envs

SETTINGS = from_config(
    {
        "app": "pixel",
        "deploy_user": "pixel",
        "environments": {
            "production": {
                "hosts": ["pixel.example"],
                "compose_command": "docker-compose",
                "manage": "pipenv run python ./manage.py",
                "db_service": "db",
                "docker_host": "unix:///run/docker.sock",
                "files": {"docker-compose.yml": "docker-compose.production.yml"},
            }
        },
    },
    {},
)
ENV = SETTINGS.environment("production")
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB1f0Q6pRzBvSpLx8pD1x0nB6Kq6m7A0dQ9f6o4mR0Zp ci@example"


def test_server_conf_carries_every_setting_bin_deploy_reads():
    conf = plan.server_conf(ENV, {"docker-compose.yml": b"services: {}\n"})
    settings_lines = [
        line for line in conf.splitlines() if not line.startswith(("HOOK_", "MANAGE_COMMAND="))
    ]  # test_management.py checks those
    assert settings_lines[1:-1] == [
        "APP_DIR=/srv/pushdeploy/pixel-production",
        "PROJECT=pixel-production",
        "COMPOSE=docker-compose",
        "COMPOSE_FILES=docker-compose.yml",
        "SERVICES=web proxy",
        "WEB_SERVICE=web",
        "DB_SERVICE=db",
        "PROXY_SERVICE=proxy",
        "MANAGE=pipenv run python ./manage.py",
        "VERSION_RE=^[0-9a-f]{7,40}$",
        "DOCKER_HOST=unix:///run/docker.sock",
        "HEALTH_TIMEOUT=60",
        "DRAIN_SECONDS=1",
        "DNS_VALID=1",
        "STATIC_KEEP=3",
        "BACKUP=no",
        "BACKUP_KEEP=10",
        "ORDERING=none",
        "SWITCH=slots",
        "PRIORITY=low",
    ]
    assert settings_lines[-1].startswith("APP_FILES_SHA256=")


def test_a_recreate_environment_tells_bin_deploy_and_skips_the_slot_checks():
    seed = from_config(
        {"app": "pixel", "environments": {"seed": {"hosts": ["h.example"], "switch": "recreate"}}}, {}
    ).environment("seed")
    socket_conf = {
        "nginx/pixel.conf": b"upstream app { server unix:/run/gunicorn/pixel.sock; }\nserver { location / { proxy_pass http://app; } }\n"
    }
    assert "SWITCH=recreate" in plan.server_conf(seed, socket_conf).splitlines()
    assert plan.proxy_config_problems(seed, socket_conf) == []
    assert plan.proxy_config_problems(ENV, socket_conf) != []  # the same file cannot serve the slots


def test_bin_deploy_knows_every_key_the_client_writes():
    for line in plan.server_conf(ENV, {}).splitlines()[1:]:
        key = line.split("=", 1)[0]
        assert key in server_envs.DEFAULTS or key in server_envs.LISTS, f"pdserver/env.py does not read {key}"


def test_a_changed_project_file_changes_what_the_client_expects():
    server = protocol.server_side()
    one = plan.expected(server, plan.server_conf(ENV, {"docker-compose.yml": b"a"}))
    two = plan.expected(server, plan.server_conf(ENV, {"docker-compose.yml": b"b"}))
    assert one.split(".")[0] == two.split(".")[0] == server.hash
    assert one != two


def test_authorized_keys_force_every_key_to_the_entrypoint():
    text = plan.authorized_keys(f"# CI key\n{KEY}\n\n")
    assert text == f'restrict,command="/opt/pushdeploy/bin/entrypoint" {KEY}\n'


@pytest.mark.parametrize(
    "bad",
    ["", "# only a comment", "not a key", 'ssh-ed25519 AAAA x"\ncommand="sh"', "-----BEGIN OPENSSH PRIVATE KEY-----"],
)
def test_authorized_keys_refuse_anything_but_public_keys(bad):
    with pytest.raises(plan.BadRequest):
        plan.authorized_keys(bad)


def test_bundle_holds_the_server_side_settings_and_app_files():
    bundle = plan.bundle(ENV, protocol.server_side(), {"docker-compose.yml": b"x"}, b"VERSION=none\n", KEY)
    with tarfile.open(fileobj=io.BytesIO(bundle.tar())) as archive:
        names = {m.name: m.mode for m in archive.getmembers()}
    assert names == {
        **{name: 0o755 if name.startswith("bin/") else 0o644 for name in protocol.SERVER_FILES},
        "env.conf": 0o644,
        "authorized_keys": 0o644,
        "app/docker-compose.yml": 0o644,
        "dotenv": 0o644,
    }


def test_install_command_quotes_and_uses_sudo_unless_root():
    as_admin = plan.install_command(SETTINGS, ENV, ".pushdeploy-bundle-1.tar", as_root=False)
    words = shlex.split(as_admin)
    assert words[:3] == ["sudo", "-n", "bash"]
    assert '"$d/bin/install" "$d" production pixel /srv/pushdeploy/pixel-production' in words[-1]
    assert plan.install_command(SETTINGS, ENV, "b.tar", as_root=True).startswith("bash -c ")


@pytest.mark.parametrize(
    ("environ", "git_user", "expected"),
    [
        (
            {"CIRCLECI": "true", "CIRCLE_USERNAME": "jane", "CIRCLE_BUILD_URL": "https://circleci.com/gh/o/r/42"},
            None,
            ("circleci:jane", "https://circleci.com/gh/o/r/42"),
        ),
        (
            {
                "GITHUB_ACTIONS": "true",
                "GITHUB_ACTOR": "joe",
                "GITHUB_SERVER_URL": "https://github.com",
                "GITHUB_REPOSITORY": "o/r",
                "GITHUB_RUN_ID": "7",
            },
            None,
            ("github:joe", "https://github.com/o/r/actions/runs/7"),
        ),
        ({}, "dev@example.org", ("local:dev@example.org", "")),
        ({"USER": "root"}, None, ("local:root", "")),
        ({}, "Jane Doe; $(id)", ("local:Jane_Doe____id_", "")),
    ],
)
def test_actor_names_who_deploys(environ, git_user, expected):
    who, url = plan.actor(environ, git_user)
    assert (who, url) == expected
    protocol.command("deploy", "staging", "abc1234", by=who, url=url or None)  # the server accepts it


def test_run_ids_are_unique_and_acceptable():
    first, second = plan.run_id(0), plan.run_id(0)
    assert first != second and first.startswith("19700101T000000Z-")
    assert protocol.matches(protocol.ID_RE, first)
    protocol.command("deploy", "staging", "abc1234", id=first)


def test_with_a_shared_database_the_first_host_migrates_alone_then_the_rest_follow():
    env = from_config({"environments": {"prod": {"hosts": "a.example, b.example, c.example"}}}, {}).environment("prod")
    (first, first_skips), (rest, rest_skips) = plan.phases(env)
    assert [h.hostname for h in first] == ["a.example"] and not first_skips
    assert [h.hostname for h in rest] == ["b.example", "c.example"] and rest_skips
    request = protocol.command("deploy", "prod", "1.0.0", skip_migrate=rest_skips)
    assert request.endswith("--skip-migrate")


@pytest.mark.parametrize(("hosts", "migrate_on"), [("a.example", "first"), ("a.example, b.example", "each")])
def test_one_phase_when_there_is_nothing_to_order(hosts, migrate_on):
    env = from_config({"environments": {"prod": {"hosts": hosts, "migrate_on": migrate_on}}}, {}).environment("prod")
    assert plan.phases(env) == [(env.hosts, False)]


def test_the_client_takes_its_choices_and_names_from_the_servers_schema():
    from pushdeploy import settings as client_settings

    from pdserver import schema

    assert (client_settings.ORDERINGS, client_settings.SWITCHES, client_settings.ENGINES) == (
        schema.ORDERINGS,
        schema.SWITCHES,
        schema.ENGINES,
    )
    assert client_settings._PROJECT.pattern == f"^{schema.PROJECT_RE}$"


def test_a_conf_the_server_would_refuse_is_refused_before_it_is_sent():
    with pytest.raises(plan.BadRequest, match="the server would refuse these settings: .*APP_DIR must be an absolute"):
        plan._server_accepts("APP_DIR=relative\nPROJECT=p\n", "staging")
    with pytest.raises(plan.BadRequest, match="ORDERING is none, semver or build"):
        plan._server_accepts("APP_DIR=/srv/x\nPROJECT=p\nORDERING=sideways\n", "staging")


def test_every_environment_of_the_example_renders_a_conf_the_server_reads():
    from invoke import Config

    from pushdeploy import settings as client_settings

    from pdserver import env as server_env

    invoke_config = Config(project_location=str(protocol.PROJECT_ROOT))
    invoke_config.load_project()
    config = client_settings.from_config(invoke_config.get("deploy"), {})
    assert len(config.environments) >= 3
    for name, env in config.environments.items():
        values = server_env.parse(plan.server_conf(env, {}), f"/etc/pushdeploy/{name}.conf", name)
        assert values["PROJECT"] == env.project


def _checked_keys():
    from pdserver import schema

    return schema.CHECKED


@pytest.mark.parametrize("key", _checked_keys(), ids=lambda key: key.setting)
def test_one_table_checks_each_setting_on_both_sides_alike(key):
    """A number or a choice: the client refuses in invoke.yaml what the server refuses in
    ENV.conf, and what the client accepts reaches ENV.conf and reads back the same."""
    from pushdeploy.settings import ConfigError

    from pdserver import env as server_env
    from pdserver import schema

    bad = key.high + 1 if key.kind == "number" else "sideways"
    with pytest.raises(ConfigError, match=rf"deploy\.environments\.x\.{key.setting}: "):
        from_config({"environments": {"x": {"hosts": ["h"], key.setting: bad}}}, {})
    good = key.low if key.kind == "number" else key.choices[0]
    env = from_config({"environments": {"x": {"hosts": ["h"], key.setting: good}}}, {}).environment("x")
    assert getattr(env, key.setting) == good
    if not key.name:  # the client's own setting: nothing for the server to check
        return
    assert schema.problem(key, str(bad)) == key.what
    conf = plan.server_conf(env, {})
    values = server_env.parse(conf, "/etc/pushdeploy/x.conf", "x")
    if key.when and key.when != key.name:  # a feature's key: written only with the feature on
        assert f"\n{key.name}=" not in conf and values[key.name] == key.default
    else:
        assert values[key.name] == str(good)  # written, and read back as the client meant it


def test_the_conf_is_the_schemas_keys_in_its_order():
    from pdserver import schema

    order = [key.name for key in schema.KEYS]
    written = [line.split("=", 1)[0] for line in plan.server_conf(ENV, {}).splitlines()[1:]]
    assert written == sorted(written, key=order.index)
    assert set(written) <= set(order)
