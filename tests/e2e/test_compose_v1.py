"""Pixel ran the old docker-compose (v1.29): a deploy driven by it works the same way."""

from __future__ import annotations

import json
import subprocess
import urllib.request

import pytest

from tests.e2e.conftest import ROOT, SANDBOX, STAGING_A, STAGING_B, inv, remove_project

pytestmark = pytest.mark.e2e

LEGACY_PORT = 8083


@pytest.fixture(scope="module")
def legacy(server, tmp_path_factory):
    if (
        subprocess.run(["sudo", "-n", "docker-compose", "version"], capture_output=True, text=True).stdout.find("1.29")
        < 0
    ):
        pytest.skip("Debian's docker-compose 1.29 is not installed (scripts/install-deps installs it)")
    template = (SANDBOX / "server-env/staging.env").read_text().replace("HTTP_PORT=8081", f"HTTP_PORT={LEGACY_PORT}")
    server_env = SANDBOX / "server-env/legacy.env"
    server_env.write_text(template)
    server_env.chmod(0o600)
    config = tmp_path_factory.mktemp("legacy") / "legacy.yaml"
    # A runtime config (`inv -f FILE`) adds a third environment on the same server.
    config.write_text(
        "deploy:\n"
        "  environments:\n"
        "    legacy:\n"
        "      hosts: [127.0.0.1:2222]\n"
        "      project: pixel-legacy\n"
        "      app_dir: /srv/pushdeploy/pixel-legacy\n"
        "      compose_command: docker-compose\n"
        "      files:\n"
        f"        docker-compose.yml: {ROOT}/example/docker-compose.staging.yml\n"
        f"        docker/etc/nginx/conf.d/pixel.conf: {ROOT}/example/docker/etc/nginx/conf.d/pixel.conf\n"
        f"      server_env: {server_env}\n"
    )
    result = inv("-f", str(config), "server.setup", "--env", "legacy")
    assert result.returncode == 0, result.stdout + result.stderr
    yield str(config)
    remove_project("pixel-legacy")


def page(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        return response.read().decode()


def test_compose_v1_deploys_and_switches_versions(legacy):
    for tag in (STAGING_A, STAGING_B):
        result = inv("-f", legacy, "deploy.to", "--env", "legacy", "--tag", tag, "--force")
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"Pixel version {tag}" in page(LEGACY_PORT)
    record = json.loads(open("/var/lib/pushdeploy/legacy/history.jsonl").read().splitlines()[-1])
    assert (record["version"], record["previous"], record["outcome"]) == (STAGING_B, STAGING_A, "ok")
    assert "compose: 1.29" in inv("-f", legacy, "server.check", "--env", "legacy").stdout
