"""`inv db.refresh` between two separate hosts of the multi-host sandbox (scripts/sandbox-hosts):
refsrc runs on h1 and refdst on h2, each with its own PostgreSQL service on its own dockerd.

The dump leaves h1's sshd, passes through the client's memory and enters h2's
sshd: refsrc's rows arrive on h2, scrubbed, refdst's own rows are gone, refdst
serves again and records the refresh, and no file on the client holds the dump.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, SANDBOX, inv
from tests.e2e.multihost import RUN, STATE, require_multihost, script

pytestmark = pytest.mark.e2e

HOSTS = {"h1": "10.213.0.11", "h2": "10.213.0.12"}
# environment -> (host, HTTP port on that host's loopback)
ENVS = {"refsrc": ("h1", 8183), "refdst": ("h2", 8184)}
VERSION = "1.0.0"  # from the conftest's `images` fixture
DUMP_MAGIC = b"PG" + b"DMP"  # pg_dump -Fc's first bytes (spelled apart: this module's .pyc must not hold them)


def environment(name: str, server_env: Path, **extra: str) -> str:
    host, _ = ENVS[name]
    lines = [
        f"    {name}:",
        f"      hosts: [pd-deploy@{HOSTS[host]}]",
        f"      project: pixel-{name}",
        f"      app_dir: /srv/pushdeploy/pixel-{name}",
        "      docker_host: unix:///run/pd-hosts/self/docker.sock",
        "      db_service: db",
        "      version_pattern: '^[0-9a-z][0-9a-z.-]*$'",
        "      files:",
        f"        docker-compose.yml: {ROOT}/example/docker-compose.staging.yml",
        f"        docker/etc/nginx/conf.d/pixel.conf: {ROOT}/example/docker/etc/nginx/conf.d/pixel.conf",
        f"        scrub.sql: {ROOT}/example/scrub/pixel.sql",
        f"      server_env: {server_env}",
    ]
    lines += [f"      {key}: {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


def psql(env: str, sql: str) -> str:
    """psql in ENV's db container, through its host's own dockerd."""
    host, _ = ENVS[env]
    docker = ["docker", "-H", f"unix://{RUN / host / 'docker.sock'}"]
    clean = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT")}
    found = subprocess.run(
        [
            *docker,
            "ps",
            "-q",
            "--filter",
            f"label=com.docker.compose.project=pixel-{env}",
            "--filter",
            "label=com.docker.compose.service=db",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean,
    )
    assert found.returncode == 0 and len(found.stdout.split()) == 1, found.stdout + found.stderr
    out = subprocess.run(
        [*docker, "exec", found.stdout.strip(), "psql", "-U", "pixel", "-d", "pixel", "-tAc", sql],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def status_code(env: str) -> int:
    """The HTTP status of ENV's front page, asked on its host's loopback (inside the host's network namespace)."""
    host, port = ENVS[env]
    out = subprocess.run(
        [
            "nsenter",
            f"--net=/run/netns/pd-{host}",
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return int(out.stdout or 0)


def history(env: str) -> list[dict]:
    host, _ = ENVS[env]
    path = STATE / f"hosts/{host}/fs/var-lib-pushdeploy/{env}/history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def files_holding_a_dump(roots: list[Path], since: float) -> list[Path]:
    """Regular files under ROOTS written since SINCE that contain the dump magic anywhere."""
    found = []
    for root in roots:
        for path in root.rglob("*"):
            try:
                info = path.lstat()
                if not path.is_file() or path.is_symlink() or info.st_mtime < since or info.st_size > 1 << 30:
                    continue
                if DUMP_MAGIC in path.read_bytes():
                    found.append(path)
            except OSError:
                continue
    return found


@pytest.fixture(scope="module")
def two_hosts(images, tmp_path_factory):
    require_multihost()
    assert script("down").returncode == 0
    result = script("up", "--hosts", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    try:
        yield tmp_path_factory.mktemp("refresh-hosts")
    finally:
        script("down")


def test_refresh_streams_a_database_from_one_host_to_another_scrubbed(two_hosts):
    work = two_hosts
    template = (SANDBOX / "server-env/staging.env").read_text()
    config_text = "deploy:\n  environments:\n"
    for env, (_, port) in ENVS.items():
        server_env = work / f"{env}.env"
        server_env.write_text(
            "".join(
                f"HTTP_PORT={port}\n" if line.startswith("HTTP_PORT=") else line + "\n"
                for line in template.splitlines()
            )
        )
        server_env.chmod(0o600)
        config_text += environment(env, server_env, **({"scrub": "sql:scrub.sql"} if env == "refdst" else {}))
    config = work / "refresh-hosts.yaml"
    config.write_text(config_text)
    dotenv = str(STATE / "deploy.env")

    def setup_and_deploy(env: str) -> None:  # each on its own host: both at once
        for args in (("server.setup", "--env", env), ("deploy.to", "--env", env, "--tag", VERSION)):
            result = inv("-f", str(config), *args, DEPLOY_DOTENV=dotenv)
            assert result.returncode == 0, result.stdout + result.stderr

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(setup_and_deploy, ENVS))
    assert status_code("refsrc") == 200 and status_code("refdst") == 200

    token = secrets.token_hex(4)
    psql(
        "refsrc",
        f"INSERT INTO notes_visit (created_at, path) VALUES (now(), 'secret-{token}-a@example.org'), (now(), 'secret-{token}-b@example.org')",
    )
    psql(
        "refdst",
        f"INSERT INTO notes_visit (created_at, path) VALUES (now(), 'refdst-only-{token}'), (now(), 'refdst-only-{token}'), (now(), 'refdst-only-{token}')",
    )
    source_ids = psql("refsrc", "SELECT string_agg(id::text, ',' ORDER BY id) FROM notes_visit")
    assert source_ids != psql("refdst", "SELECT string_agg(id::text, ',' ORDER BY id) FROM notes_visit")
    records = len(history("refdst"))

    client_tmp = work / "client-tmp"
    client_tmp.mkdir()
    started = time.time() - 1  # mtime granularity
    result = inv(
        "-f",
        str(config),
        "db.refresh",
        "--from",
        "refsrc",
        "--to",
        "refdst",
        DEPLOY_DOTENV=dotenv,
        TMPDIR=str(client_tmp),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"db.refresh of refdst {HOSTS['h2']}" in result.stdout and f"from refsrc {HOSTS['h1']}" in result.stdout
    assert (
        f"refsrc {HOSTS['h1']} | taking a fresh pg_dump of refsrc" in result.stdout
    )  # no backup yet: a fresh dump on h1
    assert f"refdst {HOSTS['h2']} | " in result.stdout and "checksum ok" in result.stdout
    assert "refreshed refdst from refsrc" in result.stdout
    assert "db.refresh of refdst from refsrc: ok" in result.stdout

    # refsrc's rows are on h2, scrubbed; refdst's own rows are gone; refsrc is untouched.
    assert psql("refdst", "SELECT string_agg(id::text, ',' ORDER BY id) FROM notes_visit") == source_ids
    assert psql("refdst", f"SELECT count(*) FROM notes_visit WHERE path LIKE '%{token}%'") == "0"
    assert psql("refdst", "SELECT count(*) FROM notes_visit WHERE path NOT LIKE 'scrubbed-%'") == "0"
    assert psql("refsrc", f"SELECT count(*) FROM notes_visit WHERE path LIKE 'secret-{token}-%'") == "2"

    # refdst serves again (maintenance off) and its history on h2 has the refresh.
    assert not (STATE / "hosts/h2/fs/srv-pushdeploy/pixel-refdst/maintenance/on").exists()
    assert status_code("refdst") == 200
    new = history("refdst")[records:]
    assert len(new) == 1
    assert (new[0]["kind"], new[0]["source"], new[0]["outcome"]) == ("refresh", "refsrc", "ok")
    assert [s["name"] for s in new[0]["steps"]] == [
        "receive",
        "maintenance-on",
        "database",
        "restore",
        "migrate",
        "scrub",
        "maintenance-off",
    ]
    assert not any(r.get("kind") == "refresh" for r in history("refsrc"))  # nothing was restored on h1

    # The dump went through the client's memory only: no file written meanwhile holds it.
    roots = [ROOT, client_tmp, work]
    assert files_holding_a_dump(roots, started) == []
