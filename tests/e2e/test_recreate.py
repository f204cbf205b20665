"""Pixel's own layout deploys: example/seed/ (compose file version '2.1', gunicorn on a
unix socket in a volume shared with nginx, no health check) as it is, with `switch:
recreate`. Migrations run before anything restarts; web and proxy are then recreated
on the new version, a short restart the deploy measures and records; a release that
fails its migrations changes nothing, and one that does not come up is replaced by
the old version."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e import conftest, jobs
from tests.e2e.conftest import (
    ROOT,
    SANDBOX,
    STAGING_A,
    STAGING_B,
    inv,
    remove_project,
    staging_like_server_env,
    tool_env,
)

pytestmark = pytest.mark.e2e

ENV = "seedlayout"
PROJECT = "pixel-seedlayout"
APP_DIR = Path(f"/srv/pushdeploy/{PROJECT}")
STATE_DIR = Path(f"/var/lib/pushdeploy/{ENV}")
PORT = 8084
# A release whose gunicorn exits at start (its config file is missing): built
# here from STAGING_B, since only gunicorn, not manage.py, reads the variable.
NO_START = "b2b2b2b-noconf"


def compose(*args: str) -> subprocess.CompletedProcess:
    return conftest.compose(ENV, *args)


def containers(service: str) -> list[str]:
    return compose("ps", "-q", service).stdout.split()


def served() -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/", timeout=2) as response:
            body = response.read().decode()
    except (OSError, urllib.error.HTTPError):
        return None
    marker = "Pixel version "
    return body.split(marker, 1)[1].split("<", 1)[0].split()[0] if marker in body else None


def deploy(config: str, version: str) -> subprocess.CompletedProcess:
    return inv("-f", config, "deploy.to", "--env", ENV, "--tag", version)


def last_record() -> dict:
    return json.loads((STATE_DIR / "history.jsonl").read_text().splitlines()[-1])


def step_seconds(record: dict, name: str) -> float | None:
    return next((s["seconds"] for s in record["steps"] if s["name"] == name), None)


@pytest.fixture(scope="module")
def seedlayout(server, images, tmp_path_factory):
    """A fresh `seedlayout` environment on the sandbox: example/seed/'s files, switch: recreate."""
    if APP_DIR.exists():
        compose("down", "-v", "--remove-orphans")
    subprocess.run(["rm", "-rf", str(APP_DIR), str(STATE_DIR)], check=True)
    server_env = staging_like_server_env(SANDBOX / f"server-env/{ENV}.env", PORT)
    config = tmp_path_factory.mktemp(ENV) / f"{ENV}.yaml"
    config.write_text(
        "deploy:\n"
        "  environments:\n"
        f"    {ENV}:\n"
        "      hosts: [127.0.0.1:2222]\n"
        f"      project: {PROJECT}\n"
        f"      app_dir: {APP_DIR}\n"
        "      switch: recreate\n"
        "      version_pattern: '^[0-9a-z][0-9a-z.-]*$'\n"
        "      health_timeout: 20\n"
        "      files:\n"
        f"        docker-compose.yml: {ROOT}/example/seed/docker-compose.yml\n"
        f"        docker/etc/nginx/conf.d/pixel.conf: {ROOT}/example/seed/docker/etc/nginx/conf.d/pixel.conf\n"
        f"      server_env: {server_env}\n"
    )
    image = f"127.0.0.1:5000/pixel:{NO_START}"
    dockerfile = f"FROM 127.0.0.1:5000/pixel:{STAGING_B}\nENV APP_VERSION={NO_START} GUNICORN_CMD_ARGS=--config=/app/gunicorn.conf.py\n"
    for argv in (["docker", "build", "-q", "-t", image, "-"], ["docker", "push", "-q", image]):
        built = subprocess.run(
            argv, input=dockerfile, env=tool_env(), capture_output=True, text=True, timeout=300, cwd=ROOT
        )
        assert built.returncode == 0, built.stderr
    result = inv("-f", str(config), "server.setup", "--env", ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    yield str(config)
    remove_project(PROJECT)


class Watch:
    """Asks for / every 50 ms from a thread: how long users saw no site is from the
    start of the first failed request to the end of the next good one (a request
    sent while the proxy restarts may wait, then be answered)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            ok = served() is not None
            self.samples.append((started, time.monotonic(), ok))
            time.sleep(max(0.0, 0.05 - (time.monotonic() - started)))

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def longest_outage(self) -> float:
        longest, down_since = 0.0, None
        for started, finished, ok in self.samples:
            if not ok and down_since is None:
                down_since = started
            elif ok and down_since is not None:
                longest, down_since = max(longest, finished - down_since), None
        return longest


def test_pixels_layout_deploys_with_a_short_measured_restart(seedlayout):
    first = deploy(seedlayout, STAGING_A)
    assert first.returncode == 0, first.stdout + first.stderr
    assert served() == STAGING_A
    proxy_before = containers("proxy")

    with Watch() as watch:
        result = deploy(seedlayout, STAGING_B)
        time.sleep(0.5)
    assert result.returncode == 0, result.stdout + result.stderr
    assert served() == STAGING_B
    assert "==> recreate" in result.stdout and "==> up" in result.stdout
    assert "==> start" not in result.stdout  # not the slot switch
    assert len(containers("web")) == 1
    assert containers("proxy") != proxy_before  # recreated with web: they share the socket's volume

    record = last_record()
    assert (record["version"], record["previous"], record["outcome"]) == (STAGING_B, STAGING_A, "ok")
    assert [s["name"] for s in record["steps"]][:6] == [
        "preflight",
        "pull",
        "database",
        "migrate",
        "recreate",
        "not-serving",
    ]
    not_serving = step_seconds(record, "not-serving")
    outage = watch.longest_outage()
    print(f"not serving: {not_serving}s recorded by the deploy, {outage:.2f}s seen by a client polling every 50 ms")
    assert f"not serving for {not_serving}s" in result.stdout
    assert 0 < not_serving < 20
    assert outage <= not_serving + 1.0  # the figure does not hide the downtime users saw


def test_a_release_failing_its_migrations_changes_nothing(seedlayout):
    assert served() == STAGING_B
    env_before = (APP_DIR / ".env").read_bytes()
    running = containers("web") + containers("proxy")
    result = deploy(seedlayout, "1.3.0-badmigration")
    assert result.returncode == 1
    assert "FAILED migrate" in result.stdout
    assert "nothing was recreated" in result.stdout
    assert containers("web") + containers("proxy") == running  # not even restarted
    assert (APP_DIR / ".env").read_bytes() == env_before
    assert served() == STAGING_B
    record = last_record()
    assert (record["outcome"], record["failed_step"]) == ("failed", "migrate")


@pytest.mark.parametrize(
    ("release", "why"),
    [
        (NO_START, "it exited"),  # gunicorn exits at start; `restart: always` restarts it
        ("1.2.0-badhealth", "no request through proxy was answered"),  # runs, but its pages fail (5xx)
    ],
)
def test_a_release_that_does_not_come_up_is_replaced_by_the_old_one(seedlayout, release, why):
    assert served() == STAGING_B
    env_before = (APP_DIR / ".env").read_bytes()
    result = deploy(seedlayout, release)
    assert result.returncode == 1
    assert "FAILED up" in result.stdout
    assert why in result.stdout
    assert f"{ENV} serves {STAGING_B} again" in result.stdout
    assert (APP_DIR / ".env").read_bytes() == env_before
    assert served() == STAGING_B
    assert len(containers("web")) == 1
    record = last_record()
    assert (record["version"], record["outcome"], record["failed_step"]) == (release, "failed", "up")
    assert step_seconds(record, "rollback") is not None
    # The site was down from the old containers' stop until the old version was up again.
    assert step_seconds(record, "not-serving") > 0


def replaced(text: str, old: str, new: str) -> str:
    assert old in text, f"example/seed/ changed: {old!r} is gone"
    return text.replace(old, new)


def test_workers_and_the_scheduler_are_replaced_with_web_and_lose_no_job(seedlayout, tmp_path):
    """Issue 17 with `switch: recreate`: Celery workers and beat as roles beside Pixel's layout
    (example/seed/docker-compose.jobs.yml). Jobs enqueued at a fixed rate across a deploy (web
    is down for its short restart: a job asked for then is not accepted); every job accepted ran
    exactly once, Redis (in `services`) kept its queue (never recreated), and the roles are on
    the new version."""
    server_env = staging_like_server_env(tmp_path / "jobs.env", PORT, jobs.SERVER_ENV)
    base = Path(seedlayout).read_text()
    config = replaced(base, f"server_env: {SANDBOX / f'server-env/{ENV}.env'}", f"server_env: {server_env}")
    config = replaced(
        config,
        "      files:\n",
        "      compose_files: [docker-compose.yml, docker-compose.jobs.yml]\n"
        "      services: [web, proxy, redis]\n"
        f"      roles: {jobs.ROLES}\n"
        "      files:\n"
        f"        docker-compose.jobs.yml: {ROOT}/example/seed/docker-compose.jobs.yml\n",
    )
    jobs_config = tmp_path / "jobs.yaml"
    jobs_config.write_text(config)
    try:
        assert inv("-f", str(jobs_config), "server.setup", "--env", ENV).returncode == 0
        first = inv("-f", str(jobs_config), "deploy.to", "--env", ENV, "--tag", STAGING_A, "--force")
        assert first.returncode == 0, first.stdout + first.stderr
        redis = containers("redis")
        assert len(redis) == 1 and len(containers("worker")) == 1 and len(containers("beat")) == 1
        key = jobs.unique("recreate")
        enqueue = jobs.enqueue(f"http://127.0.0.1:{PORT}", key)
        with enqueue:
            time.sleep(3)
            result = inv("-f", str(jobs_config), "deploy.to", "--env", ENV, "--tag", STAGING_B)
            time.sleep(3)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.index("==> recreate") < result.stdout.index("==> roles") < result.stdout.index("==> up")
        assert "worker: 1 container(s) told to take no more jobs" in result.stdout
        assert containers("redis") == redis  # the broker and its queue stayed
        accepted = jobs.accepted(enqueue)
        assert len(accepted) >= 10

        jobs.assert_each_ran_once(accepted, key, lambda sql: conftest.psql(ENV, sql))
        images = compose("ps", "--format", "{{.Service}} {{.Image}}").stdout
        assert (
            f"worker 127.0.0.1:5000/pixel:{STAGING_B}" in images and f"beat 127.0.0.1:5000/pixel:{STAGING_B}" in images
        )
    finally:
        compose("rm", "-s", "-f", "worker", "beat", "redis")
        assert inv("-f", seedlayout, "server.setup", "--env", ENV).returncode == 0


def test_the_readme_guide_leads_from_pixels_layout_to_zero_downtime(seedlayout, tmp_path):
    """README, 'From Pixel's layout to zero downtime': each step is one setup and one
    deploy; after the last, a deploy loses no request."""
    seed_compose = (ROOT / "example/seed/docker-compose.yml").read_text()
    seed_nginx = (ROOT / "example/seed/docker/etc/nginx/conf.d/pixel.conf").read_text()
    base = Path(seedlayout).read_text()

    def setup_and_deploy(compose_text: str, nginx_text: str, switch: str, version: str) -> subprocess.CompletedProcess:
        (tmp_path / "docker-compose.yml").write_text(compose_text)
        (tmp_path / "pixel.conf").write_text(nginx_text)
        config = replaced(base, f"{ROOT}/example/seed/docker-compose.yml", str(tmp_path / "docker-compose.yml"))
        config = replaced(
            config, f"{ROOT}/example/seed/docker/etc/nginx/conf.d/pixel.conf", str(tmp_path / "pixel.conf")
        )
        config = replaced(config, "switch: recreate", f"switch: {switch}")
        (tmp_path / "guide.yaml").write_text(config)
        setup = inv("-f", str(tmp_path / "guide.yaml"), "server.setup", "--env", ENV)
        assert setup.returncode == 0, setup.stdout + setup.stderr
        result = deploy(str(tmp_path / "guide.yaml"), version)
        assert result.returncode == 0, result.stdout + result.stderr
        assert served() == version
        return result

    # 1. TCP instead of the socket.
    tcp_compose = replaced(seed_compose, '"unix:/run/gunicorn/pixel.sock"', '"0.0.0.0:8000"')
    tcp_nginx = replaced(seed_nginx, "server unix:/run/gunicorn/pixel.sock", "server web:8000")
    result = setup_and_deploy(tcp_compose, tcp_nginx, "recreate", STAGING_A)
    assert "a request through proxy was answered" in result.stdout

    # 2. A health check: the image's own, no longer disabled.
    checked_compose = replaced(tcp_compose, "    healthcheck:\n      disable: true\n", "")
    result = setup_and_deploy(checked_compose, tcp_nginx, "recreate", STAGING_B)
    assert "its health check passed" in result.stdout

    # 3. The proxy routes to the slots (example/'s pixel.conf), the flag's folder is mounted, no more recreate.
    slots_compose = replaced(
        checked_compose,
        "      - static:/srv/static:ro\n",
        "      - static:/srv/static:ro\n      - ./routing:/srv/routing:ro\n",
    )
    slots_nginx = (ROOT / "example/docker/etc/nginx/conf.d/pixel.conf").read_text()
    result = setup_and_deploy(slots_compose, slots_nginx, "slots", STAGING_A)  # recreates the proxy once
    assert "==> admit" in result.stdout and "==> recreate" not in result.stdout

    with Watch() as watch:
        result = deploy(str(tmp_path / "guide.yaml"), STAGING_B)
        time.sleep(0.5)
    assert result.returncode == 0, result.stdout + result.stderr
    assert served() == STAGING_B
    assert [ok for _, _, ok in watch.samples].count(False) == 0, f"{watch.longest_outage():.2f}s without an answer"
    assert len(watch.samples) > 20
