"""db.*: the database backups deploys take (the deploy account only)."""

from __future__ import annotations

from invoke import Collection, task

from pushdeploy import protocol
from pushdeploy.tasks.common import done, fail_on_errors, load_settings, request_on_hosts
from pushdeploy.tasks.refresh import refresh


@task(help={"env": "The environment (staging, production, ...)."})
def backups(c, env="production"):
    """List the database backups kept on each host (newest first).

    A deploy with `backup: true` runs pg_dump (custom format) of db_service
    before migrating, into /var/lib/pushdeploy/ENV/backups (root only), and
    keeps the newest backup_keep. README, "Restoring a backup", says how to
    restore one.
    """
    with fail_on_errors():
        settings = load_settings(c)
        environment = settings.environment(env)
        results = request_on_hosts(
            settings,
            environment,
            protocol.command("backups", environment.name),
            lambda r: f"{len(r.output)} line(s)",
            grouped=True,
        )
    done(results, f"backups of {env}", quiet=True)


namespace = Collection("db", backups, refresh)
