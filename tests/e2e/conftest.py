"""The real stack for end-to-end tests: the sandbox server, images in its registry, setup done.

`scripts/sandbox up` starts (or reuses) a real sshd on 127.0.0.1:2222, a private
dockerd with Compose, a registry on 127.0.0.1:5000; the tests then drive the
tool exactly as a user would: `inv ...` in a subprocess.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SANDBOX = Path(os.environ.get("PD_SANDBOX_DIR", "/var/lib/pushdeploy-sandbox"))
DOCKER_HOST = f"unix://{SANDBOX}/docker.sock"
PORTS = {"staging": 8081, "production": 8082}
APP_DIRS = {"staging": Path("/srv/pushdeploy/pixel-staging"), "production": Path("/srv/pushdeploy/pixel-production")}

# Images the tests deploy: tag -> build variant.
STAGING_A, STAGING_B = "a1a1a1a", "b2b2b2b"
IMAGES = {
    STAGING_A: "ok",
    STAGING_B: "ok",
    "c3c3c3c": "ok",
    "d4d4d4d": "ok",
    "1.0.0": "ok",
    "1.1.0": "ok",
    "1.2.0-badhealth": "bad-health",
    "1.3.0-badmigration": "bad-migration",
    "1.4.0-column": "add-column",
    "1.5.0-irreversible": "irreversible",
    "1.6.0-badworker": "bad-worker",
}


def tool_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEPLOY_", "CIRCLE", "GITHUB_"))}
    env.update(DEPLOY_DOTENV=str(SANDBOX / "deploy.env"), DOCKER_HOST=DOCKER_HOST, PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def inv(*args: str, timeout: int = 600, **extra: str) -> subprocess.CompletedProcess:
    """Run `inv ARGS` in the project as a user would; output is kept for assertions."""
    result = subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=ROOT,
        env=tool_env(**extra),
        stdin=subprocess.DEVNULL,  # no terminal: a task that would ask says so instead (server.trust)
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    print(f"$ inv {' '.join(args)}  -> {result.returncode}\n{result.stdout}{result.stderr}")
    return result


def ssh_raw(
    command: str | None, *options: str, timeout: int = 30, key: Path | None = None
) -> subprocess.CompletedProcess:
    """OpenSSH as the deploy account with the CI key (or KEY), bypassing the tool entirely."""
    argv = [
        "ssh",
        "-p",
        "2222",
        "-i",
        str(key or SANDBOX / "keys/ci"),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        f"UserKnownHostsFile={SANDBOX / 'known_hosts'}",
        "-o",
        "StrictHostKeyChecking=yes",
        *options,
        "pd-deploy@127.0.0.1",
    ]
    if command is not None:
        argv.append(command)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def compose(env: str, *args: str) -> subprocess.CompletedProcess:
    """`docker compose` of ENV's project (pixel-ENV, in /srv/pushdeploy/pixel-ENV) on the sandbox."""
    project = f"pixel-{env}"
    return subprocess.run(
        ["docker", "compose", "-p", project, *args],
        cwd=APP_DIRS.get(env, Path(f"/srv/pushdeploy/{project}")),
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def psql(env: str, sql: str) -> str:
    out = compose(env, "exec", "-T", "db", "psql", "-U", "pixel", "-d", "pixel", "-tAc", sql)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def get(env: str, path: str = "/", timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORTS[env]}{path}", timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def served_version(env: str) -> str | None:
    try:
        status, body = get(env)
    except OSError:
        return None
    match = re.search(r"Pixel version (\S+?)<", body) or re.search(r"Pixel version (\S+)", body)
    return match.group(1) if status == 200 and match else None


def wait_for_version(env: str, version: str, seconds: float = 30) -> str | None:
    deadline = time.monotonic() + seconds
    seen = None
    while time.monotonic() < deadline:
        seen = served_version(env)
        if seen == version:
            return seen
        time.sleep(0.5)
    return seen


def remove_project(project: str) -> None:
    """Everything of one compose project on the sandbox's dockerd: its containers, volumes and
    networks. Environments that only one module uses go when it ends, so that their health
    checks do not load the machine under the tests that follow (the load tests feel it)."""

    def docker(*args: str) -> list[str]:
        out = subprocess.run(["docker", *args], env=tool_env(), capture_output=True, text=True, timeout=120)
        return out.stdout.split()

    label = f"label=com.docker.compose.project={project}"
    for kind, listing in (
        ("container", ["ps", "-aq"]),
        ("volume", ["volume", "ls", "-q"]),
        ("network", ["network", "ls", "-q"]),
    ):
        ids = docker(*listing, "--filter", label)
        if ids:
            docker(*(["rm", "-f"] if kind == "container" else [kind, "rm"]), *ids)


def staging_like_server_env(path: Path, port: int, extra: str = "") -> Path:
    """At PATH (0600): the sandbox's staging server env with the proxy on PORT, and EXTRA lines:
    an environment of a test's own, beside staging."""
    template = (SANDBOX / "server-env/staging.env").read_text()
    assert "HTTP_PORT=8081" in template
    path.write_text(template.replace("HTTP_PORT=8081", f"HTTP_PORT={port}") + extra)
    path.chmod(0o600)
    return path


def server_env_file(env: str) -> bytes:
    return (APP_DIRS[env] / ".env").read_bytes()


def history_lines(env: str) -> list[str]:
    path = Path(f"/var/lib/pushdeploy/{env}/history.jsonl")
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture(scope="session")
def sandbox():
    if os.geteuid() != 0:
        pytest.skip("end-to-end tests need root (they start sshd and dockerd)")
    subprocess.run([str(ROOT / "scripts/sandbox"), "up"], check=True, timeout=1800)
    yield SANDBOX


@pytest.fixture(scope="session")
def images(sandbox):
    for tag, variant in IMAGES.items():
        subprocess.run([str(ROOT / "scripts/sandbox"), "build-app", tag, variant], check=True, timeout=900)
    return IMAGES


@pytest.fixture(scope="session")
def server(images):
    """Both environments set up on the sandbox server through the admin account."""
    for env in ("staging", "production"):
        result = inv("server.setup", "--env", env)
        assert result.returncode == 0, result.stdout + result.stderr
    return SANDBOX


HISTORIES = (
    "/var/lib/pushdeploy/*/history.jsonl",  # the sandbox's environments
    os.environ.get("PD_HOSTS_DIR", "/var/lib/pushdeploy-hosts") + "/hosts/*/fs/var-lib-pushdeploy/*/history.jsonl",
)


@pytest.fixture(autouse=True)
def no_release_marked_bad():
    """The tests share a few environments and redeploy the same few versions; a rollback
    marks the release it undoes bad, and a deploy of it is then refused. Each test starts
    with no release marked bad: a mark left by an earlier test is taken back, recorded as
    `inv deploy.mark-good` records it. A test's own marks hold for the whole test."""
    import glob
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("pd_history", ROOT / "scripts/server/lib/history.py")
    history = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(history)
    for pattern in HISTORIES:
        for path in glob.glob(pattern):
            bad = history.bad(history.read(path))
            if bad:
                with open(path, "a", encoding="utf-8") as file:
                    for version in sorted(bad):
                        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "kind": "mark"}
                        record.update(
                            version=version, mark="good", by="tests", reason="a fresh start for the next test"
                        )
                        file.write(json.dumps(record) + "\n")
    yield


def pytest_collection_modifyitems(session, config, items):
    """The open-loop load tests first among the e2e tests, on a machine that the other
    tests' environments (seed layout, fleet, compose v1) have not loaded yet: run last in
    the full suite they have seen the app itself slowed down (see the closing note of
    issue 6); alone or first they pass."""
    e2e = [i for i in items if "/tests/e2e/" in str(i.fspath)]
    first = [i for i in e2e if i.fspath.basename == "test_zero_downtime.py"]
    if not first:
        return
    rest = [i for i in items if i not in first]
    index = next((n for n, i in enumerate(rest) if i in e2e), len(rest))
    items[:] = rest[:index] + first + rest[index:]
