"""docs/your-own-app.md followed on a project nobody here wrote: `wagtail start mysite`
(Wagtail 8, Django 6.1), pushdeploy installed with pip from a wheel of this checkout, the
page's edits and nothing else, then a production environment deployed, redeployed and
rolled back under open-loop load, and torn down."""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, SANDBOX, remove_project, tool_env
from tests.e2e.thirdparty import (
    WHEELHOUSE,
    for_the_sandbox,
    installed_pushdeploy,
    requirements_of,
    run,
    start_wagtail_project,
    wheelhouse,
)
from tests.openload import OpenLoad

pytestmark = pytest.mark.e2e

PORT = 8092  # this project's proxy, on loopback (no other test uses it)
ENV = "wagtail"  # init's production environment, under a name no other test uses
REPO = "127.0.0.1:5000/mysite"
RATE = 20  # requests a second, on schedule whatever earlier requests did
BUDGET = 1.0
PAGE = ROOT / "docs/your-own-app.md"


def page_section(number: int) -> str:
    text = PAGE.read_text()
    start = text.index(f"\n## {number}. ")
    return text[start : text.index("\n## ", start + 1)]


def follow_the_page(project: Path) -> None:
    """Section 2 of the docs page, applied as written: its two code blocks go where it
    says, its requirement and its two Dockerfile lines are taken from its text."""
    section = page_section(2)
    # The blocks sit in a numbered list: pasted, they lose the list's indent.
    urls_block, settings_block = (textwrap.dedent(b) for b in re.findall(r"```python\n(.*?)```", section, flags=re.S))
    urls = project / "mysite/urls.py"
    urls.write_text(urls.read_text() + "\n" + urls_block)
    settings = project / "mysite/settings/production.py"
    settings.write_text(settings.read_text() + "\n" + settings_block)
    driver = re.search(r"`(psycopg\[binary\])`", section).group(1)
    requirements = project / "requirements.txt"
    requirements.write_text(requirements.read_text() + driver + "\n")
    cmd = re.search(r"`(CMD gunicorn mysite\.wsgi:application)`", section).group(1)
    dockerfile = project / "Dockerfile"
    text, replaced = re.subn(r"^CMD .*migrate.*$", cmd, dockerfile.read_text(), flags=re.M)
    assert replaced == 1, "the generated Dockerfile no longer migrates at start: update the page and this test"
    static = re.search(r"`(RUN mkdir -p /srv/static && chown wagtail:wagtail /srv/static)`", section).group(1)
    text, placed = re.subn(r"^(USER wagtail)$", rf"{static}\n\1", text, count=1, flags=re.M)
    assert placed == 1
    dockerfile.write_text(text)


def build(project: Path, tag: str, base: str) -> None:
    """The image, built as the project's own Dockerfile says (for the sandbox: see
    thirdparty.for_the_sandbox), and pushed to the registry the servers pull from."""
    sandbox_file = project / "Dockerfile.sandbox"
    sandbox_file.write_text(for_the_sandbox((project / "Dockerfile").read_text(), base))
    env = tool_env()
    run("docker", "build", "--quiet", "-f", sandbox_file, "-t", f"{REPO}:{tag}", project, env=env, timeout=1200)
    run("docker", "push", "--quiet", f"{REPO}:{tag}", env=env)


def user_env() -> dict[str, str]:
    """The sandbox's keys and dockerd, and no path to this checkout: pip's install only."""
    return {k: v for k, v in tool_env().items() if k != "PYTHONPATH"}


def home_page() -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/", timeout=5) as response:
        assert response.status == 200
        return response.read().decode()


def test_a_wagtail_project_follows_the_page_to_zero_downtime_production(server, tmp_path):
    pushdeploy_program = installed_pushdeploy(tmp_path / "pip")
    project = start_wagtail_project(tmp_path, "mysite")

    def pushdeploy(*args: str) -> subprocess.CompletedProcess:
        # The installed program, from the project's folder: no checkout on its path.
        result = subprocess.run(
            [str(pushdeploy_program), *args],
            cwd=project,
            env=user_env(),
            capture_output=True,
            text=True,
            timeout=900,
        )
        print(f"$ pushdeploy {' '.join(args)}  -> {result.returncode}\n{result.stdout}{result.stderr}")
        return result

    where = run(
        pushdeploy_program.parent / "python",
        "-c",
        "import pushdeploy; print(pushdeploy.__file__)",
        cwd=tmp_path,
        env=user_env(),
    )
    assert where.startswith(str(tmp_path / "pip/venv")), where

    # 1. init, then section 2's edits.
    made = pushdeploy(
        "init",
        "--image",
        REPO,
        "--staging-hosts",
        "127.0.0.1:2222",
        "--production-hosts",
        "127.0.0.1:2222",
        "--settings",
        "mysite.settings.production",
    )
    assert made.returncode == 0, made.stdout + made.stderr
    follow_the_page(project)

    # The sandbox's own constraints, as in the other init test: its deploy account and
    # dockerd, an environment name and a port no other test uses, its proxy and database
    # images. The .env is the template, filled in as the page says (section 5).
    settings = (project / "pushdeploy.yaml").read_text()
    settings = settings.replace("deploy_user: deploy ", "deploy_user: pd-deploy ")
    settings = settings.replace("  defaults:\n", f"  defaults:\n    docker_host: unix://{SANDBOX}/docker.sock\n")
    settings = settings.replace("    production:\n", f"    {ENV}:\n")
    settings = settings.replace("server_env: deploy/production.env", f"server_env: deploy/{ENV}.env")
    (project / "pushdeploy.yaml").write_text(settings)
    sandbox_env = dict(
        line.split("=", 1)
        for line in (SANDBOX / "server-env/production.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    server_env = (project / "deploy/server.env.example").read_text()
    server_env = server_env.replace("SECRET_KEY=replace-with-a-long-random-string", "SECRET_KEY=" + "w" * 50)
    server_env = server_env.replace(
        "POSTGRES_PASSWORD=replace-with", f"POSTGRES_PASSWORD={sandbox_env['POSTGRES_PASSWORD']}-"
    )
    server_env = server_env.replace("HTTP_PORT=8080", f"HTTP_PORT={PORT}")
    server_env += f"PROXY_IMAGE={sandbox_env['PROXY_IMAGE']}\nDB_IMAGE={sandbox_env['DB_IMAGE']}\n"
    (project / f"deploy/{ENV}.env").write_text(server_env)

    # The wheels the Dockerfile installs, beside it (the sandbox builds offline).
    wheels = wheelhouse(requirements_of(project))
    shutil.copytree(wheels, project / WHEELHOUSE, ignore=shutil.ignore_patterns(".complete"))
    base = run(ROOT / "scripts/sandbox", "python-base", timeout=900).strip().splitlines()[-1]

    try:
        setup = pushdeploy("server.setup", "--env", ENV)
        assert setup.returncode == 0, setup.stdout + setup.stderr

        build(project, "1.0.0", base)
        first = pushdeploy("deploy.to", "--env", ENV, "--tag", "1.0.0")
        assert first.returncode == 0, first.stdout + first.stderr
        assert "ok migrate" in first.stdout and "ok prune-static" in first.stdout  # static files: collected, kept
        assert "Welcome to your new Wagtail site!" in home_page()

        # A release: the home page says something new.
        template = project / "home/templates/home/home_page.html"
        template.write_text(
            template.read_text().replace("{% block content %}", "{% block content %}<p>mysite 1.0.1</p>")
        )
        build(project, "1.0.1", base)
        for args, serves in (
            (("deploy.to", "--env", ENV, "--tag", "1.0.1"), True),
            (("deploy.rollback", "--env", ENV), False),
        ):
            with OpenLoad(f"http://127.0.0.1:{PORT}/", rate=RATE, seconds=300) as load:
                time.sleep(1)
                result = pushdeploy(*args)
                time.sleep(1.5)
                seconds = load.now()
            assert result.returncode == 0, result.stdout + result.stderr
            summary = load.summary(budget=BUDGET)
            print(summary.line())
            assert summary.failed == 0, summary.failures
            assert summary.slow == 0
            assert summary.sent >= RATE * seconds * 0.9
            assert ("mysite 1.0.1" in home_page()) is serves

        status = pushdeploy("deploy.status", "--env", ENV)
        assert status.returncode == 0 and "1.0.0" in status.stdout

        removed = pushdeploy("server.teardown", "--env", ENV, "--volumes", "--yes")
        assert removed.returncode == 0, removed.stdout + removed.stderr
        assert not Path(f"/srv/pushdeploy/mysite-{ENV}").exists()
    finally:
        remove_project(f"mysite-{ENV}")
        shutil.rmtree(f"/srv/pushdeploy/mysite-{ENV}", ignore_errors=True)
        shutil.rmtree(f"/var/lib/pushdeploy/{ENV}", ignore_errors=True)
        Path(f"/etc/pushdeploy/{ENV}.conf").unlink(missing_ok=True)
