"""Roles (issue 17, parts 1 and 2) on one host: Pixel with Celery workers, one Celery beat and
a Redis broker (example/docker-compose.jobs.yml), deployed with `roles:`.

Jobs are enqueued through the web app at a fixed rate, each a couple of seconds long, while
open-loop load asks for pages, before, during and after a deploy, an (instant) rollback and a
deploy that fails its health check: every job runs exactly once (a row when it starts, its end
when it finished: none lost, none twice), two schedulers never run at once (watched in
Docker every 0.2 s) and the scheduled job never runs twice for one tick, the failed deploy
leaves the old workers as they were, and the pages lose nothing and none is slow."""

from __future__ import annotations

import os
import subprocess
import time
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
from tests.openload import OpenLoad

pytestmark = pytest.mark.e2e

ENV = "jobs"
PROJECT = "pixel-jobs"
APP_DIR = Path(f"/srv/pushdeploy/{PROJECT}")
STATE_DIR = Path(f"/var/lib/pushdeploy/{ENV}")
PORT = 8093  # this environment's proxy, on loopback (no other test uses it)
BAD, BAD_WORKER = "1.2.0-badhealth", "1.6.0-badworker"
TICK = 2  # seconds between the scheduled job's runs (PIXEL_TICK_SECONDS in jobs.SERVER_ENV)
JOB_SECONDS = 1.5
PAGE_RATE, JOB_RATE = 20, 2  # a second, sent on schedule whatever earlier requests did


def compose(*args: str) -> subprocess.CompletedProcess:
    return conftest.compose(ENV, *args)


def psql(sql: str) -> str:
    return conftest.psql(ENV, sql)


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


@pytest.fixture(scope="module")
def environment(server, images, tmp_path_factory):
    """A fresh `jobs` environment: web, proxy, redis, workers and a scheduler, on STAGING_A."""
    remove_project(PROJECT)
    subprocess.run(["rm", "-rf", str(APP_DIR), str(STATE_DIR)], check=True)
    server_env = staging_like_server_env(SANDBOX / f"server-env/{ENV}.env", PORT, jobs.SERVER_ENV)
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
        f"      roles: {jobs.ROLES}\n"
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


def test_a_deploy_replaces_workers_and_the_scheduler_without_losing_or_repeating_a_job(environment):
    config = environment
    assert [line.split()[1] for line in running("worker")] == [STAGING_A]
    assert [line.split()[1] for line in running("beat")] == [STAGING_A]
    plan = inv("-f", config, "deploy.plan", "--env", ENV, "--tag", STAGING_B)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert f"worker (worker, 1 of {STAGING_A}): 1 of {STAGING_B} start beside them" in plan.stdout
    assert f"beat (scheduler, 1 of {STAGING_A}): the old one stops, then one of {STAGING_B} starts" in plan.stdout

    pages = OpenLoad(f"http://127.0.0.1:{PORT}/", rate=PAGE_RATE, seconds=300)
    key = jobs.unique("job")
    enqueue = jobs.enqueue(f"http://127.0.0.1:{PORT}", key, rate=JOB_RATE, seconds=JOB_SECONDS)
    started = time.time()
    with jobs.Most(lambda: len(running("beat")), every=0.2) as schedulers, pages, enqueue:
        time.sleep(3)
        deployed = inv("-f", config, "deploy.to", "--env", ENV, "--tag", STAGING_B)
        time.sleep(3)
        back = inv("-f", config, "deploy.rollback", "--env", ENV)
        time.sleep(3)
        before_bad = running("worker"), running("beat")
        failed = inv("-f", config, "deploy.to", "--env", ENV, "--tag", BAD)
        after_bad = running("worker"), running("beat")
        time.sleep(3)
        broken = inv("-f", config, "deploy.to", "--env", ENV, "--tag", BAD_WORKER)
        after_broken = running("worker"), running("beat")
        time.sleep(3)
    took = time.time() - started

    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "==> roles" in deployed.stdout and "==> retire-roles" in deployed.stdout
    assert "beat: the old scheduler stopped before its successor starts" in deployed.stdout
    assert back.returncode == 0, back.stdout + back.stderr
    assert failed.returncode == 1 and "FAILED at health" in failed.stdout, failed.stdout
    assert after_bad == before_bad and [line.split()[1] for line in after_bad[0]] == [STAGING_A]
    # A release whose worker exits as it starts fails at roles: web never switched, the old
    # workers never stopped, the old scheduler (stopped for its successor) runs again.
    assert broken.returncode == 1 and "FAILED at roles" in broken.stdout, broken.stdout
    assert "beat: the old scheduler runs again" in broken.stdout
    assert after_broken == before_bad
    end = max(s.scheduled for s in pages.samples)
    assert {s.version for s in pages.samples if s.scheduled > end - 2} == {STAGING_A}  # it serves on
    assert [line.split()[1] for line in running("beat")] == [STAGING_A]

    page_summary = pages.summary(budget=1.0)
    print(page_summary.line())
    assert page_summary.failed == 0, page_summary.failures
    assert page_summary.slow == 0
    queued = jobs.accepted(enqueue)
    assert len(queued) == len([s for s in enqueue.samples if s.finished]) >= JOB_RATE * 12  # all accepted
    jobs.assert_each_ran_once(queued, key, psql)
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


def test_a_role_gone_from_the_settings_stops_at_the_next_deploy(environment, tmp_path):
    """beat taken out of `roles:` (worker stays): server.setup changes nothing that runs; the next
    deploy stops beat's container, and the host no longer counts it among its roles."""
    config = tmp_path / "no-beat.yaml"
    config.write_text(Path(environment).read_text().replace(jobs.ROLES, "{worker: {kind: worker}}"))
    assert inv("-f", str(config), "server.setup", "--env", ENV).returncode == 0
    assert len(running("beat")) == 1
    deployed = inv("-f", str(config), "deploy.to", "--env", ENV, "--tag", STAGING_B)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "beat: no longer a role of this host: 1 container(s) stopped and removed" in deployed.stdout
    assert running("beat") == [] and [line.split()[1] for line in running("worker")] == [STAGING_B]
    assert (STATE_DIR / "roles").read_text() == "worker\n"
