"""Settings as a team's own project has them: relative paths resolve against the file that
names them, errors name that file, and `pushdeploy` finds the project from where it runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from invoke import Config

from pushdeploy import cli, local, settings, sources

PROJECT = """deploy:
  app: shop
  environments:
    staging:
      hosts: [deploy@staging.example]
      files: {docker-compose.yml: deploy/compose.yml}
      server_env: deploy/staging.env
"""


def project(tmp_path: Path, runtime: str | None = None) -> Config:
    (tmp_path / "invoke.yaml").write_text(PROJECT)
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy/compose.yml").write_text("services: {}\n")
    (tmp_path / "deploy/staging.env").write_text("SECRET_KEY=x\n")
    runtime_path = None
    if runtime is not None:
        elsewhere = tmp_path / "ci"
        elsewhere.mkdir()
        runtime_path = elsewhere / "ci.yaml"
        runtime_path.write_text(runtime)
    config = Config(project_location=str(tmp_path), runtime_path=str(runtime_path) if runtime_path else None)
    config.load_project()
    config.load_runtime()
    return config


def test_paths_resolve_against_the_project_file_wherever_inv_runs(tmp_path, monkeypatch):
    config = project(tmp_path)
    monkeypatch.chdir("/")
    loaded = settings.load(config, {})
    env = loaded.environment("staging")
    assert local.app_files(loaded, env) == {"docker-compose.yml": b"services: {}\n"}
    assert local.server_dotenv(loaded, env) == b"SECRET_KEY=x\n"
    assert loaded.root == tmp_path.resolve()


def test_a_runtime_file_s_paths_resolve_against_its_own_folder(tmp_path):
    runtime = "deploy:\n  environments:\n    staging:\n      files: {docker-compose.yml: compose.ci.yml}\n"
    config = project(tmp_path, runtime)
    (tmp_path / "ci/compose.ci.yml").write_text("services: {ci: {}}\n")
    loaded = settings.load(config, {})
    env = loaded.environment("staging")
    assert local.app_files(loaded, env) == {"docker-compose.yml": b"services: {ci: {}}\n"}
    assert local.server_dotenv(loaded, env) == b"SECRET_KEY=x\n"  # still the project file's, from its folder


def test_errors_name_the_file_the_key_came_from(tmp_path, monkeypatch):
    runtime = "deploy:\n  environments:\n    staging:\n      health_timeout: 0\n"
    config = project(tmp_path, runtime)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(settings.ConfigError, match=r"^ci/ci\.yaml: deploy\.environments\.staging\.health_timeout: "):
        settings.load(config, {})
    (tmp_path / "ci/ci.yaml").write_text("deploy:\n  environments:\n    staging:\n      files: {x: missing.yml}\n")
    config = project_again(tmp_path)
    loaded = settings.load(config, {})
    with pytest.raises(settings.ConfigError, match=r"^ci/ci\.yaml: deploy\.environments\.staging\.files\.x: missing"):
        local.app_files(loaded, loaded.environment("staging"))


def test_a_bad_default_is_named_where_it_was_set_not_under_the_environment(tmp_path, monkeypatch):
    runtime = "deploy:\n  defaults:\n    health_timeout: 0\n"
    config = project(tmp_path, runtime)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(settings.ConfigError, match=r"^ci/ci\.yaml: deploy\.defaults\.health_timeout: "):
        settings.load(config, {})
    # An environment's own value is its own, whatever the defaults say.
    (tmp_path / "ci/ci.yaml").write_text(
        "deploy:\n  defaults:\n    health_timeout: 30\n  environments:\n    staging:\n      health_timeout: 0\n"
    )
    with pytest.raises(settings.ConfigError, match=r"deploy\.environments\.staging\.health_timeout: "):
        settings.load(project_again(tmp_path), {})


def project_again(tmp_path: Path) -> Config:
    config = Config(project_location=str(tmp_path), runtime_path=str(tmp_path / "ci/ci.yaml"))
    config.load_project()
    config.load_runtime()
    return config


def test_sources_find_the_strongest_file_that_sets_a_key(tmp_path):
    found = sources.Sources(
        (
            (tmp_path / "ci.yaml", {"deploy": {"environments": {"staging": {"pull": {}}}}}),
            (tmp_path / "invoke.yaml", {"deploy": {"app": "shop", "environments": {"staging": {"hosts": []}}}}),
        ),
        tmp_path,
    )
    assert found.file_of("deploy.environments.staging.pull.channel") == tmp_path / "ci.yaml"  # nearest parent
    assert found.file_of("deploy.environments.staging.hosts[0]") == tmp_path / "invoke.yaml"
    assert found.root_of("deploy.environments.production.files", "deploy.defaults.files") == tmp_path


def test_pushdeploy_finds_the_project_from_below_it(tmp_path):
    (tmp_path / "pushdeploy.yaml").write_text(PROJECT)
    (tmp_path / "app/static").mkdir(parents=True)
    assert cli.project_dir(tmp_path / "app/static") == (tmp_path, "pushdeploy")
    (tmp_path / "pushdeploy.yaml").unlink()
    (tmp_path / "invoke.yaml").write_text(PROJECT)
    assert cli.project_dir(tmp_path / "app") == (tmp_path, "invoke")


def test_config_show_names_where_each_setting_came_from_and_hides_secrets(tmp_path, monkeypatch):
    from pushdeploy import provenance

    runtime = "deploy:\n  defaults: {drain_seconds: 2}\n  environments:\n    staging:\n      health_timeout: 30\n"
    config = project(tmp_path, runtime)
    monkeypatch.chdir(tmp_path)
    loaded = settings.load(config, {})
    rows = {
        name: (value, where)
        for name, value, where in provenance.environment_rows(loaded, loaded.environment("staging"))
    }
    assert rows["health_timeout"] == ("30", "ci/ci.yaml")
    assert rows["drain_seconds"] == ("2", "ci/ci.yaml (deploy.defaults)")
    assert rows["files"] == ("docker-compose.yml <- deploy/compose.yml", "invoke.yaml")
    assert rows["dns_valid"] == ("1", "default") and rows["app_dir"][1] == "from the project name"
    access = provenance.access_rows(
        {"DEPLOY_ADMIN_USER": "admin", "DEPLOY_PRODUCTION_WEBHOOKS": "https://hooks.example/T0/secret"},
        ".env",
        {"DEPLOY_PRODUCTION_WEBHOOKS": "https://hooks.example/T0/secret"},
    )
    assert access == [
        ("DEPLOY_ADMIN_USER", "admin", ".env"),
        ("DEPLOY_PRODUCTION_WEBHOOKS", "(set, not shown)", "environment"),
    ]


def test_a_relative_key_path_in_dotenv_resolves_beside_the_dotenv_file(tmp_path, monkeypatch):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys/ci").write_text("not really a key\n")
    (tmp_path / ".env").write_text("DEPLOY_SSH_KEY=keys/ci\n")
    config = project(tmp_path)
    monkeypatch.chdir("/")
    loaded = settings.load(config, {"DEPLOY_DOTENV": str(tmp_path / ".env")})
    assert loaded.access.ssh_key == str(tmp_path / "keys/ci")
    with pytest.raises(settings.ConfigError, match="DEPLOY_SSH_KEY: file keys/ci does not exist"):
        settings.load(config, {"DEPLOY_DOTENV": str(tmp_path / ".env"), "DEPLOY_SSH_KEY": "keys/ci"})  # from here: /


def test_a_relative_ssh_config_resolves_against_the_file_that_names_it(tmp_path):
    config = project(tmp_path, "deploy:\n  ssh_config: ssh_config\n")
    (tmp_path / "ci/ssh_config").write_text("Host staging.example\n  HostName 10.1.2.3\n  Port 2200\n")
    host = settings.load(config, {}).environment("staging").hosts[0]
    assert (host.hostname, host.port) == ("10.1.2.3", 2200)
