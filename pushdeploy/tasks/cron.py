"""cron.status: the environment's cron jobs and their last runs, per host (the deploy account, read-only)."""

from __future__ import annotations

from invoke import Collection, task

from pushdeploy import requests
from pushdeploy.tasks.common import expected
from pushdeploy.tasks.deploy import _ask, _describe


def _summary(result) -> str:
    if not result.ok or "jobs" not in result.result:
        return _describe(result)
    data = result.result
    here = data.get("here") or "none"
    failed = f"; last run FAILED: {data['failed']}" if data.get("failed") else ""
    return f"{data['jobs']} job(s), running here: {here}{failed}"


@task(help={"env": "The environment (staging, production, ...)."})
def status(c, env="staging"):
    """Show, per host, the environment's cron jobs and the last run of each.

    Cron jobs (`cron:` in invoke.yaml, installed by `inv server.setup` as a systemd
    timer each, or one cron entry where systemd is not PID 1) run a management
    command of the manage allowlist in a one-off container of the deployed version,
    on the first host (hosts: first) or every host (hosts: all). For each job: its
    schedule, command and concurrency policy, whether this host runs it, and its
    last run (when, ok / failed / skipped / replaced, exit code, duration, version).
    A failed run also goes to the environment's webhooks. Refused (exit 78) if the
    server's settings differ from invoke.yaml.
    """
    _ask(
        c, env, "cron.status", lambda settings, e: requests.cron_status(e.name, expect=expected(settings, e)), _summary
    )


namespace = Collection("cron", status)
