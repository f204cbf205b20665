"""Roles (issue 17, parts 1 and 2) on one host: Pixel with Celery workers, one Celery beat and
a Redis broker (example/docker-compose.jobs.yml), deployed with `roles:`.

Jobs are enqueued through the web app at a fixed rate, each a couple of seconds long, while
open-loop load asks for pages, before, during and after a deploy, an (instant) rollback and a
deploy that fails its health check: every job runs exactly once (a row when it starts, its end
when it finished: none lost, none twice), two schedulers never run at once (watched in
Docker every 0.2 s) and the scheduled job never runs twice for one tick, the failed deploy
leaves the old workers as they were, and the pages lose nothing and none is slow."""

from __future__ import annotations

import collections
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, SANDBOX, STAGING_A, STAGING_B, inv, remove_project, tool_env
from tests.openload import OpenLoad

pytestmark = pytest.mark.e2e

ENV = "jobs"
PROJECT = "pixel-jobs"
APP_DIR = Path(f"/srv/pushdeploy/{PROJECT}")
STATE_DIR = Path(f"/var/lib/pushdeploy/{ENV}")
PORT = 8093  # this environment's proxy, on loopback (no other test uses it)
BAD = "1.2.0-badhealth"
TICK = 2  # seconds between the scheduled job's runs (PIXEL_TICK_SECONDS)
JOB_SECONDS = 1.5
PAGE_RATE, JOB_RATE = 20, 2  # a second, sent on schedule whatever earlier requests did
# Celery with Redis: told to take no more jobs before it is stopped (docs/roles.md says why).
QUIESCE = "python3 -m celery -A pixel control cancel_consumer celery --destination celery@%h"


def compose(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", "compose", "-p", PROJECT, *args],
        cwd=APP_DIR,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def psql(sql: str) -> str:
    out = compose("exec", "-T", "db", "psql", "-U", "pixel", "-d", "pixel", "-tAc", sql)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def running(service: str) -> list[str]:
    """SERVICE's running containers: ID VERSION each."""
    out = subprocess.run(
        [
            "docker",
            "ps",
            "--filter",
            f"label=com.docker.compose.project={PROJECT}",
            "--filter",
            f"label=com.docker.compose.service={service}",
            "--format",
            "{{.ID}} {{.Image}}",
        ],
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return sorted(
        f"{cid} {image.rsplit(':', 1)[-1]}" for cid, image in (line.split() for line in out.stdout.splitlines())
    )


class Schedulers:
    """How many beat containers run at once, at most, sampled every 0.2 s from a thread."""

    def __init__(self) -> None:
        self.most, self.samples = 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.most = max(self.most, len(running("beat")))
            self.samples += 1

    def __enter__(self) -> Schedulers:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def jobs(server, images, tmp_path_factory):
    """A fresh `jobs` environment: web, proxy, redis, workers and a scheduler, on STAGING_A."""
    remove_project(PROJECT)
    subprocess.run(["rm", "-rf", str(APP_DIR), str(STATE_DIR)], check=True)
    template = (SANDBOX / "server-env/staging.env").read_text()
    assert "HTTP_PORT=8081" in template
    server_env = SANDBOX / f"server-env/{ENV}.env"
    server_env.write_text(
        template.replace("HTTP_PORT=8081", f"HTTP_PORT={PORT}")
        + f"REDIS_IMAGE=127.0.0.1:5000/pushdeploy/redis:7\nPIXEL_TICK_SECONDS={TICK}\n"
    )
    server_env.chmod(0o600)
    config = tmp_path_factory.mktemp(ENV) / f"{ENV}.yaml"
    config.write_text(
        "deploy:\n"
        "  environments:\n"
        f"    {ENV}:\n"
        "      hosts: [127.0.0.1:2222]\n"
        f"      project: {PROJECT}\n"
        f"      app_dir: {APP_DIR}\n"
        "      version_pattern: '^[0-9a-z][0-9a-z.-]*$'\n"
        "      services: [web, proxy, redis]\n"
        "      roles:\n"
        f"        worker: {{kind: worker, quiesce: '{QUIESCE}'}}\n"
        "        beat: {kind: scheduler}\n"
        "      health_timeout: 30\n"
        "      files:\n"
        f"        docker-compose.yml: {ROOT}/example/docker-compose.jobs.yml\n"
        f"        docker/etc/nginx/conf.d/pixel.conf: {ROOT}/example/docker/etc/nginx/conf.d/pixel.conf\n"
        f"      server_env: {server_env}\n"
    )
    setup = inv("-f", str(config), "server.setup", "--env", ENV)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    first = inv("-f", str(config), "deploy.to", "--env", ENV, "--tag", STAGING_A)
    assert first.returncode == 0, first.stdout + first.stderr
    yield str(config)
    if not os.environ.get("PD_KEEP_JOBS"):  # PD_KEEP_JOBS=1: left up to look at
        remove_project(PROJECT)
        server_env.unlink(missing_ok=True)


def test_a_deploy_replaces_workers_and_the_scheduler_without_losing_or_repeating_a_job(jobs):
    config = jobs
    assert [line.split()[1] for line in running("worker")] == [STAGING_A]
    assert [line.split()[1] for line in running("beat")] == [STAGING_A]
    plan = inv("-f", config, "deploy.plan", "--env", ENV, "--tag", STAGING_B)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert f"worker (worker, 1 of {STAGING_A}): 1 of {STAGING_B} start beside them" in plan.stdout
    assert f"beat (scheduler, 1 of {STAGING_A}): the old one stops, then one of {STAGING_B} starts" in plan.stdout

    pages = OpenLoad(f"http://127.0.0.1:{PORT}/", rate=PAGE_RATE, seconds=300)
    enqueue = OpenLoad(
        f"http://127.0.0.1:{PORT}/jobs/enqueue",
        rate=JOB_RATE,
        seconds=300,
        method="POST",
        body=lambda i: f"key=job-{i}&seconds={JOB_SECONDS}".encode(),
    )
    started = time.time()
    with Schedulers() as schedulers, pages, enqueue:
        time.sleep(3)
        deployed = inv("-f", config, "deploy.to", "--env", ENV, "--tag", STAGING_B)
        time.sleep(3)
        back = inv("-f", config, "deploy.rollback", "--env", ENV)
        time.sleep(3)
        before_bad = running("worker")
        failed = inv("-f", config, "deploy.to", "--env", ENV, "--tag", BAD)
        after_bad = running("worker")
        time.sleep(3)
    took = time.time() - started

    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "==> roles" in deployed.stdout and "==> retire-roles" in deployed.stdout
    assert "beat: the old scheduler stopped before its successor starts" in deployed.stdout
    assert back.returncode == 0, back.stdout + back.stderr
    assert failed.returncode == 1 and "FAILED at health" in failed.stdout, failed.stdout
    assert after_bad == before_bad and [line.split()[1] for line in after_bad] == [STAGING_A]
    assert [line.split()[1] for line in running("beat")] == [STAGING_A]

    page_summary = pages.summary(budget=1.0)
    print(page_summary.line())
    assert page_summary.failed == 0, page_summary.failures
    assert page_summary.slow == 0
    queued = [s for s in enqueue.samples if s.finished]
    assert queued and all(s.status == 202 for s in queued), [s.error for s in queued if s.status != 202][:5]

    # Every job enqueued ran, once: a row each, all finished (the last ones may still run).
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        if psql("select count(*) from jobs_jobrun where finished_at is not null") == str(len(queued)):
            break
        time.sleep(1)
    rows = psql("select key, finished_at is not null from jobs_jobrun").splitlines()
    runs = collections.Counter(line.split("|")[0] for line in rows)
    twice = {key: n for key, n in runs.items() if n > 1}
    lost = {f"job-{s.index}" for s in queued} - set(runs)
    assert not twice and not lost, (twice, sorted(lost)[:10])
    assert all(line.endswith("|t") for line in rows), [line for line in rows if not line.endswith("|t")][:5]
    assert len(rows) == len(queued) >= JOB_RATE * 12
    versions = psql("select distinct version from jobs_jobrun order by 1").split()
    assert versions == sorted({STAGING_A, STAGING_B}), versions  # old and new workers both ran jobs

    # One scheduler at a time, and the scheduled job not twice for one tick.
    assert schedulers.samples > 20 and schedulers.most == 1
    ticks = [float(t) for t in psql("select extract(epoch from ran_at) from jobs_tick order by ran_at").split()]
    during = [t for t in ticks if started <= t <= started + took]
    assert len(during) <= took / TICK + 4, (len(during), took)  # + one early tick per scheduler that started
    assert max(b - a for a, b in zip(during, during[1:], strict=False)) < 20  # and it kept ticking

    status = inv("-f", config, "deploy.status", "--env", ENV)
    assert f"role worker (worker): 1 x {STAGING_A}" in status.stdout, status.stdout
    assert f"role beat (scheduler): 1 x {STAGING_A}" in status.stdout
