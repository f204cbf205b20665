"""deploy.pull-status: what the pull agent of an environment last did (the deploy account, read-only)."""

from __future__ import annotations

from invoke import task

from pushdeploy import requests
from pushdeploy.tasks.common import expected
from pushdeploy.tasks.deploy import _ask, _describe


@task(help={"env": "The environment (staging, production, ...)."})
def pull_status(c, env="staging"):
    """Show, per host, the pull mode of an environment: its channel, the agent, the last check, the last change.

    In pull mode (`pull: {channel: TAG, every: SECONDS}` in invoke.yaml, installed by
    `inv server.setup`) an agent on each server resolves the channel tag to its
    digest every few seconds and deploys the image when the digest changed. This
    shows the channel, how the agent runs (systemd timer or cron entry), the version
    deployed, the last check (when, and what came of it) and the last deploy it
    started. Refused (exit 78) if the server's settings differ from invoke.yaml.
    """
    _ask(
        c,
        env,
        "pull-status",
        lambda settings, e: requests.pull_status(e.name, expect=expected(settings, e)),
        lambda r: next((line for line in reversed(r.output) if line.startswith("last check:")), "") or _describe(r),
    )
