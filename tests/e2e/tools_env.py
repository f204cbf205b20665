"""The `tools` environment the hooks, manage and plan tests share: a third staging-like
environment on the sandbox server (its own compose project, database and port), set up
from a runtime config (`inv -f FILE`) so each test module can give it the hooks it needs
without touching staging or production."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

from tests.e2e.conftest import ROOT, SANDBOX, STAGING_A, inv, tool_env

ENV = "tools"
PROJECT = f"pixel-{ENV}"
APP_DIR = Path(f"/srv/pushdeploy/{PROJECT}")
STATE_DIR = Path(f"/var/lib/pushdeploy/{ENV}")
PORT = 8095
CONFIG = SANDBOX / f"{ENV}.yaml"


def configure(before_switch=(), after_switch=()) -> str:
    """Write the runtime config with these hooks and install it (server.setup); returns its path."""
    server_env = SANDBOX / f"server-env/{ENV}.env"
    if not server_env.exists():
        template = (SANDBOX / "server-env/staging.env").read_text()
        assert "HTTP_PORT=8081" in template
        server_env.write_text(template.replace("HTTP_PORT=8081", f"HTTP_PORT={PORT}"))
        server_env.chmod(0o600)
    hooks = f"      before_switch: {json.dumps(list(before_switch))}\n      after_switch: {json.dumps(list(after_switch))}\n"
    CONFIG.write_text(
        "deploy:\n"
        "  environments:\n"
        f"    {ENV}:\n"
        "      hosts: [127.0.0.1:2222]\n"
        f"      project: {PROJECT}\n"
        f"      app_dir: {APP_DIR}\n"
        "      version_pattern: '^[0-9a-z][0-9a-z.-]*$'\n"
        "      health_timeout: 30\n"
        "      files:\n"
        f"        docker-compose.yml: {ROOT}/example/docker-compose.staging.yml\n"
        f"        docker/etc/nginx/conf.d/pixel.conf: {ROOT}/example/docker/etc/nginx/conf.d/pixel.conf\n"
        f"      server_env: {server_env}\n" + hooks
    )
    result = inv("-f", str(CONFIG), "server.setup", "--env", ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    return str(CONFIG)


def tools(*args: str):
    """`inv -f CONFIG ARGS`: a task run against the tools environment's settings."""
    return inv("-f", str(CONFIG), *args)


def deploy(version: str, *extra: str):
    return tools("deploy.to", "--env", ENV, "--tag", version, "--force", *extra)


def served() -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/", timeout=3) as response:
            body = response.read().decode()
    except OSError:
        return None
    marker = "Pixel version "
    return body.split(marker, 1)[1].split("<", 1)[0].split()[0] if marker in body else None


def ensure_deployed(version: str = STAGING_A) -> None:
    if served() != version:
        result = deploy(version)
        assert result.returncode == 0, result.stdout + result.stderr
    assert served() == version


def history() -> list[dict]:
    path = STATE_DIR / "history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def dotenv() -> bytes:
    return (APP_DIR / ".env").read_bytes()


def containers(*filters: str) -> list[str]:
    """Ids of the project's containers, one-off ones included (docker ps -a)."""
    argv = ["docker", "ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}"]
    for f in filters:
        argv += ["--filter", f]
    return sorted(subprocess.run(argv, env=tool_env(), capture_output=True, text=True, check=True).stdout.split())
