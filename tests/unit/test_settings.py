"""Configuration: good settings become plain values, bad ones name the key and file."""

import pytest

from pushdeploy.settings import ConfigError, Host, from_config

BASE = {
    "app": "pixel",
    "deploy_user": "deploy",
    "environments": {"staging": {"hosts": ["deploy@10.0.0.5:2222", "web2.example"]}},
}


def with_env(**staging):
    return {**BASE, "environments": {"staging": {"hosts": ["h.example"], **staging}}}


def test_defaults_fill_a_minimal_environment():
    env = from_config(BASE, {}).environment("staging")
    assert env.hosts == (Host("deploy", "10.0.0.5", 2222), Host("deploy", "web2.example", 22))
    assert env.project == "pixel-staging"
    assert env.app_dir == "/srv/pushdeploy/pixel-staging"
    assert env.compose_command == "docker compose"
    assert env.services == ("web", "proxy")
    assert env.manage == "python manage.py"


def test_pixel_style_settings():
    env = from_config(
        with_env(
            project="pixel-staging",
            compose_command="docker-compose",
            manage="pipenv run python ./manage.py",
            hosts="a.example, b.example:2200",
        ),
        {},
    ).environment("staging")
    assert env.compose_command == "docker-compose"
    assert env.manage == "pipenv run python ./manage.py"
    assert [str(h) for h in env.hosts] == ["a.example", "b.example:2200"]


def test_the_switch_is_the_slots_unless_an_environment_asks_to_recreate():
    assert from_config(BASE, {}).environment("staging").switch == "slots"
    assert from_config(with_env(switch="recreate"), {}).environment("staging").switch == "recreate"


def test_the_deploy_yields_the_cpu_unless_an_environment_says_normal():
    assert from_config(BASE, {}).environment("staging").deploy_priority == "low"
    assert from_config(with_env(deploy_priority="normal"), {}).environment("staging").deploy_priority == "normal"


def test_the_previous_version_is_kept_stopped_unless_an_environment_says_running():
    from pushdeploy import plan

    assert from_config(BASE, {}).environment("staging").warm_rollback_keep == "stopped"
    running = from_config(with_env(warm_rollback_keep="running"), {}).environment("staging")
    assert running.warm_rollback_keep == "running"
    assert "WARM_KEEP=running" in plan.server_conf(running, {}).splitlines()
    default = from_config(BASE, {}).environment("staging")
    assert not any(line.startswith("WARM_KEEP=") for line in plan.server_conf(default, {}).splitlines())


def test_a_swarm_backs_up_through_a_backup_image_and_compose_through_db_service():
    swarm = {"engine": "swarm", "db_service": ""}
    env = from_config(
        with_env(**swarm, backup=True, backup_image="127.0.0.1:5000/pushdeploy/postgres:15"), {}
    ).environment("staging")
    assert (env.backup, env.backup_image) == (True, "127.0.0.1:5000/pushdeploy/postgres:15")
    with pytest.raises(ConfigError, match="backup_image.*image with pg_dump"):
        from_config(with_env(**swarm, backup=True), {})
    with pytest.raises(ConfigError, match="for engine: swarm only"):
        from_config(with_env(db_service="db", backup=True, backup_image="postgres:16"), {})
    with pytest.raises(ConfigError, match="an image reference"):
        from_config(with_env(**swarm, backup=True, backup_image="postgres:16; id"), {})


def test_defaults_section_applies_to_every_environment():
    config = {**BASE, "defaults": {"services": ["web"], "db_service": "db"}}
    env = from_config(config, {}).environment("staging")
    assert env.services == ("web",) and env.db_service == "db"


@pytest.mark.parametrize(
    ("config", "key"),
    [
        (None, "deploy"),
        ({"app": "pixel"}, "deploy.environments"),
        ({**BASE, "app": "Bad App"}, "deploy.app"),
        (with_env(hosts=[]), "deploy.environments.staging.hosts"),
        (with_env(hosts=["me@host:99999"]), "deploy.environments.staging.hosts[0]"),
        (with_env(hosts=["root@h;id"]), "deploy.environments.staging.hosts[0]"),
        (with_env(app_dir="relative/dir"), "deploy.environments.staging.app_dir"),
        (with_env(app_dir="/srv/../etc"), "deploy.environments.staging.app_dir"),
        (with_env(compose_command="podman-compose"), "deploy.environments.staging.compose_command"),
        (with_env(services=["web", "pro xy"]), "deploy.environments.staging.services"),
        (with_env(manage="python manage.py; id"), "deploy.environments.staging.manage"),
        (with_env(version_pattern="[0-9]+"), "deploy.environments.staging.version_pattern"),
        (with_env(version_pattern="^\\d+$"), "deploy.environments.staging.version_pattern"),
        (with_env(version_pattern="^([0-9]$"), "deploy.environments.staging.version_pattern"),
        (with_env(health_timeout="soon"), "deploy.environments.staging.health_timeout"),
        (with_env(deploy_priority="high"), "deploy.environments.staging.deploy_priority"),
        (with_env(warm_rollback_keep="paused"), "deploy.environments.staging.warm_rollback_keep"),
        (with_env(health_timeout=0), "deploy.environments.staging.health_timeout"),
        (with_env(ordering="alphabetical"), "deploy.environments.staging.ordering"),
        (with_env(migrate_on="sometimes"), "deploy.environments.staging.migrate_on"),
        (with_env(switch="restart"), "deploy.environments.staging.switch"),
        (with_env(backup=True), "deploy.environments.staging.backup"),
        (with_env(backup_keep=-1, db_service="db"), "deploy.environments.staging.backup_keep"),
        (with_env(docker_host="unix://relative"), "deploy.environments.staging.docker_host"),
        (with_env(files={"../escape": "x"}), "deploy.environments.staging.files.../escape"),
        (with_env(files={".env": "secrets"}), "deploy.environments.staging.files..env"),
        (with_env(hots=["typo"]), "deploy.environments.staging.hots"),
        ({**BASE, "environments": {"Prod!": {"hosts": ["h"]}}}, "deploy.environments.Prod!"),
    ],
)
def test_bad_settings_name_the_key_and_the_file(config, key):
    with pytest.raises(ConfigError) as error:
        from_config(config, {})
    assert error.value.key == key
    assert str(error.value).startswith("invoke.yaml: " + key)


def test_unknown_environment_lists_the_known_ones():
    with pytest.raises(ConfigError, match="configured: staging"):
        from_config(BASE, {}).environment("prod")


def test_access_comes_from_dotenv_values(tmp_path):
    key = tmp_path / "id"
    key.write_text("k")
    access = from_config(
        BASE, {"DEPLOY_SSH_KEY": str(key), "DEPLOY_ADMIN_USER": "admin", "DEPLOY_KNOWN_HOSTS": "h ssh-ed25519 AAAA"}
    ).access
    assert (access.ssh_key, access.admin_user, access.known_hosts) == (str(key), "admin", "h ssh-ed25519 AAAA")


@pytest.mark.parametrize(
    ("values", "key"),
    [({"DEPLOY_SSH_KEY": "/nonexistent/key"}, "DEPLOY_SSH_KEY"), ({"DEPLOY_ADMIN_USER": "ro ot"}, "DEPLOY_ADMIN_USER")],
)
def test_bad_dotenv_values_name_the_variable(values, key):
    with pytest.raises(ConfigError) as error:
        from_config(BASE, values, source="/work/.env")
    assert error.value.key == key and error.value.source == "/work/.env"


def test_committed_invoke_yaml_is_valid():
    from invoke import Config

    from pushdeploy import protocol

    config = Config(project_location=str(protocol.PROJECT_ROOT))
    config.load_project()
    settings = from_config(config.get("deploy"), {})
    assert set(settings.environments) == {"staging", "production", "review"}
    assert settings.environment("production").require_tag
