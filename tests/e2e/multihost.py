"""The multi-host sandbox (scripts/sandbox-hosts) as the e2e tests drive it: the script,
its state, the checks that it can run here, and `inv` against an environment on its hosts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.e2e.conftest import DOCKER_HOST, ROOT, inv, tool_env

SCRIPT = ROOT / "scripts/sandbox-hosts"
STATE = Path(os.environ.get("PD_HOSTS_DIR", "/var/lib/pushdeploy-hosts"))
RUN = Path("/run/pd-hosts")


def script(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)
    print(f"$ sandbox-hosts {' '.join(args)} -> {result.returncode}\n{result.stdout}{result.stderr}")
    return result


def host_docker(host: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`docker ARGS` against one host's own dockerd (not the sandbox's)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT")}
    return subprocess.run(
        ["docker", "-H", f"unix://{RUN / host / 'docker.sock'}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def require_multihost() -> None:
    """Skip unless this machine can run the multi-host sandbox."""
    if os.geteuid() != 0:
        pytest.skip("the multi-host sandbox needs root (namespaces, sshd, dockerd)")
    if not shutil.which("nginx") or not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        pytest.skip("the multi-host sandbox needs nginx and postgresql (apt-get install -y nginx-light postgresql)")


class HostsEnvironment:
    """`inv -f CONFIG ...` for one environment on the sandbox's hosts, with its keys and known hosts."""

    def __init__(self, config: Path, env: str):
        self.config, self.env = config, env

    def inv(
        self, *args: str, config: Path | None = None, timeout: int = 600, **environ: str
    ) -> subprocess.CompletedProcess:
        """ENVIRON: more variables for inv (a CI's secrets, such as DEPLOY_REGISTRY_PASSWORD)."""
        environ.setdefault("DEPLOY_DOTENV", str(STATE / "deploy.env"))
        return inv("-f", str(config or self.config), *args, timeout=timeout, **environ)

    def deploy(self, version: str, *args: str, config: Path | None = None) -> subprocess.CompletedProcess:
        return self.inv("deploy.to", "--env", self.env, "--tag", version, *args, config=config)

    def popen(self, *args: str, config: Path | None = None, merged: bool = True) -> subprocess.Popen:
        """`inv -f CONFIG ARGS` started, its output read line by line as it comes (stderr into
        stdout unless not MERGED), for a test that acts on what the client says."""
        return subprocess.Popen(
            [sys.executable, "-m", "invoke", "-f", str(config or self.config), *args],
            cwd=ROOT,
            env=tool_env(DEPLOY_DOTENV=str(STATE / "deploy.env")),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merged else subprocess.PIPE,
            text=True,
        )


def db_psql(sql: str) -> str:
    """SQL on the hosts' shared database (the sandbox's PostgreSQL, as its superuser)."""
    argv = ["runuser", "-u", "postgres", "--", "psql", "-h", str(STATE / "db/run"), "-p", "5432", "-d", "pixel"]
    result = subprocess.run([*argv, "-qtA", "-v", "ON_ERROR_STOP=1", "-c", sql], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def registry_env() -> dict[str, str]:
    """The sandbox's private registry: its address, user, CA and password (registry.env)."""
    lines = (STATE / "registry.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def push_private(registry: dict[str, str], *tags: str, channel: str = "") -> None:
    """The app's images in the private registry, pushed as CI would: logged in with a
    Docker config of its own, through this machine's dockerd (which trusts the sandbox CA);
    with CHANNEL, the first tag goes there too (pull mode's channel, moved)."""
    with tempfile.TemporaryDirectory() as config:
        env = {**os.environ, "DOCKER_HOST": DOCKER_HOST, "DOCKER_CONFIG": config}
        server, password = registry["PD_HOSTS_REGISTRY"], registry["DEPLOY_REGISTRY_PASSWORD"]
        login = subprocess.run(
            ["docker", "login", "-u", registry["PD_HOSTS_REGISTRY_USER"], "--password-stdin", server],
            input=password,
            capture_output=True,
            text=True,
            env=env,
        )
        assert login.returncode == 0, login.stderr
        for tag, as_tag in [(tag, tag) for tag in tags] + ([(tags[0], channel)] if channel else []):
            for argv in (
                ["tag", f"127.0.0.1:5000/pixel:{tag}", f"{server}/pixel:{as_tag}"],
                ["push", f"{server}/pixel:{as_tag}"],
            ):
                result = subprocess.run(["docker", *argv], capture_output=True, text=True, env=env)
                assert result.returncode == 0, result.stdout + result.stderr


def run_cron_entry(host: str, env: str, job: str) -> subprocess.CompletedProcess:
    """Host HOST's cron entry for JOB of ENV, run inside that host as cron would run it (no cron
    daemon runs here): `sh -c` with the line's command, cron's PATH."""
    return run_cron_line(host, f"pushdeploy-cron-{env}", f" cron {env} {job} ")


def run_pull_agent(host: str, env: str) -> subprocess.CompletedProcess:
    """Host HOST's pull agent for ENV (its cron entry), run once as cron would."""
    return run_cron_line(host, f"pushdeploy-pull-{env}", f" pull {env} ")


def run_cron_line(host: str, file: str, words: str) -> subprocess.CompletedProcess:
    entry = STATE / f"hosts/{host}/fs/cron.d/{file}"
    line = next(line for line in entry.read_text().splitlines() if words in line and not line.startswith("#"))
    enter = ["nsenter", f"--net=/run/netns/pd-{host}", f"--mount={STATE / 'ns' / f'{host}.mnt'}"]
    enter.append(f"--uts={STATE / 'ns' / f'{host}.uts'}")
    return subprocess.run(
        [*enter, "sh", "-c", line.split(" root ", 1)[1]], timeout=300, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    )
