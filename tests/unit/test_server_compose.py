"""Docker Compose commands as the server builds them (pdserver/compose.py): settings in,
argument lists out, asserted exactly; nothing runs."""

from __future__ import annotations

import pytest

from pdserver import compose
from pdserver import env as envs


def environment(tmp_path, **values) -> envs.Env:
    lines = {"APP_DIR": str(tmp_path), "PROJECT": "pixel-staging", **values}
    text = "".join(f"{key}={value}\n" for key, value in lines.items())
    return envs.Env("staging", str(tmp_path / "staging.conf"), envs.parse(text, "staging.conf", "staging"))


@pytest.mark.parametrize(
    ("values", "argv"),
    [
        ({}, "docker compose -p pixel-staging -f docker-compose.yml ps"),
        ({"COMPOSE_FILES": "a.yml b.yml"}, "docker compose -p pixel-staging -f a.yml -f b.yml ps"),
        ({"COMPOSE": "docker-compose"}, "docker-compose -p pixel-staging -f docker-compose.yml ps"),
    ],
)
def test_compose_runs_in_the_app_directory_with_the_projects_files(tmp_path, values, argv):
    command = compose.compose(environment(tmp_path, **values), "ps")
    assert command.argv == argv.split()
    assert command.cwd == str(tmp_path)
    assert command.environ == {"COMPOSE_PROGRESS": "quiet", "COMPOSE_ANSI": "never", "LC_ALL": "C"}


def test_a_version_and_a_docker_host_go_in_the_environment_never_in_the_words(tmp_path):
    command = compose.compose(
        environment(tmp_path, DOCKER_HOST="unix:///run/other.sock"), "pull", "web", version="1.4.0"
    )
    assert command.argv[-2:] == ["pull", "web"]
    assert command.environ["VERSION"] == "1.4.0" and command.environ["DOCKER_HOST"] == "unix:///run/other.sock"


def test_a_management_command_runs_in_a_one_off_container_of_the_version(tmp_path):
    command = compose.manage(
        environment(tmp_path, MANAGE="pipenv run python ./manage.py", WEB_SERVICE="app"), "2.0", ["check", "--deploy"]
    )
    assert (
        command.argv
        == (
            "docker compose -p pixel-staging -f docker-compose.yml run --rm --no-deps -T -e PYTHONUNBUFFERED=1 "
            "app pipenv run python ./manage.py check --deploy"
        ).split()
    )
    assert command.environ["VERSION"] == "2.0"
