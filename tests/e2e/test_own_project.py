"""pushdeploy in a team's own repository: no tasks.py, its settings in pushdeploy.yaml in a
folder of its own, `pushdeploy` run from a subfolder, the real sandbox server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from tests.e2e.conftest import ROOT, STAGING_A, STAGING_B, served_version, tool_env
from tests.e2e.deployed import ensure


def pushdeploy(project, *args: str) -> subprocess.CompletedProcess:
    """`pushdeploy ARGS` as an installed package runs it, from the project's app/ folder."""
    env = tool_env(PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "pushdeploy", *args],
        cwd=project / "app",
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    print(f"$ pushdeploy {' '.join(args)}  -> {result.returncode}\n{result.stdout}{result.stderr}")
    return result


def test_a_project_of_its_own_deploys_with_its_own_files(server, tmp_path):
    """The project's settings are this repository's, its files copied beside them under
    other names: the paths resolve against pushdeploy.yaml's folder, not this repository,
    and the server side and settings it installed are the ones the sandbox already has."""
    project = tmp_path / "shop"
    (project / "app").mkdir(parents=True)
    (project / "deploy").mkdir()
    shutil.copy(ROOT / "example/docker-compose.staging.yml", project / "deploy/compose.yml")
    shutil.copy(ROOT / "example/docker/etc/nginx/conf.d/pixel.conf", project / "deploy/nginx.conf")
    settings = (ROOT / "invoke.yaml").read_text()
    settings = settings.replace("example/docker-compose.staging.yml", "deploy/compose.yml")
    settings = settings.replace("example/docker/etc/nginx/conf.d/pixel.conf", "deploy/nginx.conf")
    (project / "pushdeploy.yaml").write_text(settings)
    assert not (project / "tasks.py").exists()

    shown = pushdeploy(project, "config.show", "--env", "staging")
    assert shown.returncode == 0, shown.stderr
    assert "docker-compose.yml <- deploy/compose.yml" in shown.stdout
    assert "pushdeploy.yaml" in shown.stdout and "invoke.yaml" not in shown.stdout

    ensure("staging", STAGING_A)
    deployed = pushdeploy(project, "deploy.staging", "--tag", STAGING_B, "--force")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr  # same files: the installed settings match
    assert served_version("staging") == STAGING_B

    (project / "deploy/compose.yml").unlink()
    missing = pushdeploy(project, "deploy.status", "--env", "staging")
    assert missing.returncode == 2
    assert (
        "pushdeploy.yaml: deploy.environments.staging.files.docker-compose.yml: deploy/compose.yml does not exist"
        in (missing.stderr)
    )
    assert str(project) in missing.stderr  # where it looked: the project's folder
    assert os.path.exists(ROOT / "example/docker-compose.staging.yml")
