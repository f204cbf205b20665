"""pushdeploy in a team's own repository: no tasks.py, its settings in pushdeploy.yaml in a
folder of its own, `pushdeploy` run from a subfolder, the real sandbox server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.e2e.conftest import ROOT, SANDBOX, STAGING_A, STAGING_B, remove_project, served_version, tool_env
from tests.e2e.deployed import ensure

PORT = 8091  # the init'd project's proxy, on loopback (no other test uses it)


def pushdeploy(project, *args: str, folder: str = "app") -> subprocess.CompletedProcess:
    """`pushdeploy ARGS` as an installed package runs it, from a folder of the project (app/)."""
    env = tool_env(PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "pushdeploy", *args],
        cwd=project / folder,
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
    shutil.copy(ROOT / "example/scrub/pixel.sql", project / "deploy/scrub.sql")
    settings = (ROOT / "invoke.yaml").read_text()
    settings = settings.replace("example/docker-compose.staging.yml", "deploy/compose.yml")
    settings = settings.replace("example/docker/etc/nginx/conf.d/pixel.conf", "deploy/nginx.conf")
    settings = settings.replace("example/scrub/pixel.sql", "deploy/scrub.sql")
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


def test_init_s_files_deploy_a_django_app_with_the_slot_switch(server, tmp_path):
    """`pushdeploy init` in a Django project, then the edits docs/your-own-app.md lists (the
    server's .env filled in), and the sandbox's own constraints (its deploy account, its
    dockerd, an environment name and port no other test uses): init's compose file, nginx
    config and settings set up a server and deploy twice, switching slots."""
    project = tmp_path / "shop"
    (project / "shop").mkdir(parents=True)
    (project / "app").mkdir()
    (project / "manage.py").write_text('import os\nos.environ.setdefault("DJANGO_SETTINGS_MODULE", "pixel.settings")\n')
    made = pushdeploy(
        project,
        "init",
        "--image",
        "127.0.0.1:5000/pixel",
        "--staging-hosts",
        "127.0.0.1:2222",
        "--production-hosts",
        "127.0.0.1:2222",
        folder=".",  # where manage.py is
    )
    assert made.returncode == 0, made.stdout + made.stderr
    settings = (project / "pushdeploy.yaml").read_text()
    settings = settings.replace("deploy_user: deploy ", "deploy_user: pd-deploy ")
    settings = settings.replace("  defaults:\n", f"  defaults:\n    docker_host: unix://{SANDBOX}/docker.sock\n")
    settings = settings.replace("    staging:\n", "    initshop:\n").replace(
        "server_env: deploy/staging.env", "server_env: deploy/initshop.env"
    )
    (project / "pushdeploy.yaml").write_text(settings)
    sandbox_env = dict(
        line.split("=", 1)
        for line in (SANDBOX / "server-env/staging.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    server_env = (project / "deploy/server.env.example").read_text()
    for key in ("SECRET_KEY", "POSTGRES_PASSWORD"):
        server_env = server_env.replace(f"{key}=replace-with", f"{key}={sandbox_env[key]}-")
    server_env = server_env.replace("HTTP_PORT=8080", f"HTTP_PORT={PORT}").replace(
        "ALLOWED_HOSTS=example.org", "ALLOWED_HOSTS=*"
    )
    server_env += f"PROXY_IMAGE={sandbox_env['PROXY_IMAGE']}\nDB_IMAGE={sandbox_env['DB_IMAGE']}\n"
    (project / "deploy/initshop.env").write_text(server_env)
    try:
        setup = pushdeploy(project, "server.setup", "--env", "initshop")
        assert setup.returncode == 0, setup.stdout + setup.stderr
        routes = []
        for tag in (STAGING_A, STAGING_B):
            deployed = pushdeploy(project, "deploy.to", "--env", "initshop", "--tag", tag, "--force")
            assert deployed.returncode == 0, deployed.stdout + deployed.stderr
            assert "ok migrate" in deployed.stdout and "ok switch" in deployed.stdout
            routes += [
                line.rsplit(" ", 1)[-1] for line in deployed.stdout.splitlines() if "the proxy now routes to" in line
            ]
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/", timeout=5) as response:
                assert f"Pixel version {tag}" in response.read().decode()
        assert routes[-1] in ("web-blue", "web-green") and len(set(routes)) == 2  # the second deploy switched slots
        removed = pushdeploy(project, "server.teardown", "--env", "initshop", "--volumes", "--yes")
        assert removed.returncode == 0, removed.stdout + removed.stderr
        assert not Path("/etc/pushdeploy/initshop.conf").exists() and not Path("/srv/pushdeploy/shop-initshop").exists()
        assert not Path("/var/lib/pushdeploy/initshop").exists()
        left = subprocess.run(
            ["docker", "ps", "-aq", "--filter", "label=com.docker.compose.project=shop-initshop"],
            env=tool_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert left.stdout.strip() == ""
        assert Path("/etc/sudoers.d/pushdeploy-pd-deploy").exists()  # staging and production still need it
        assert served_version("staging") is not None  # the others serve on
    finally:
        remove_project("shop-initshop")
        shutil.rmtree("/srv/pushdeploy/shop-initshop", ignore_errors=True)
        shutil.rmtree("/var/lib/pushdeploy/initshop", ignore_errors=True)
        Path("/etc/pushdeploy/initshop.conf").unlink(missing_ok=True)
