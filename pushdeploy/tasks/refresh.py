"""db.refresh: staging's database replaced by a scrubbed copy of production's (the admin connection)."""

from __future__ import annotations

import os
import sys

from invoke import task

from pushdeploy import local, plan, protocol
from pushdeploy import refresh as transfer
from pushdeploy.output import HostWriter, Timer, say
from pushdeploy.tasks.common import admin_connect, fail_on_errors, load_settings


@task(
    name="refresh",
    help={
        "from_": "The environment whose data is copied (default production).",
        "to": "The environment whose database is replaced (default staging); it needs a scrub step (scrub: in invoke.yaml).",
        "fresh": "Take a fresh pg_dump of the source instead of its newest backup.",
    },
)
def refresh(c, from_="production", to="staging", fresh=False):
    """Replace an environment's database with another's (staging from production), scrubbed.

    Takes the source's newest backup (or a fresh pg_dump with --fresh) and streams
    it through this machine's memory (never its disk) into the target's first
    host, where bin/deploy checks the dump whole (SHA-256), turns maintenance
    mode on, restores it in one transaction, migrates to the running version,
    runs the target's scrub step, turns maintenance off and records a `refresh`
    in the target's history. A failed restore leaves the old data serving; a
    failed scrub leaves maintenance on, so unscrubbed data is never served.

    Runs over the ADMIN connection (DEPLOY_ADMIN_USER / DEPLOY_ADMIN_KEY): it
    reads production's data, which the deploy account (CI's key) may not. The
    two environments may be on one host or on different hosts.
    """

    with fail_on_errors():
        settings = load_settings(c)
        source, target = settings.environment(from_), settings.environment(to)
        if source.name == target.name:
            raise plan.BadRequest("--from and --to name the same environment")
        if not source.db_service or not target.db_service:
            raise plan.BadRequest(
                f"both environments need db_service (the PostgreSQL service): {source.name}={source.db_service or 'none'}, {target.name}={target.db_service or 'none'}"
            )
        if not target.scrub:
            raise plan.BadRequest(
                f"{target.name} has no scrub step: set scrub: sql:FILE or manage:COMMAND for it in invoke.yaml (then `inv server.setup --env {target.name}`); production data is never served unscrubbed"
            )
        by, url = plan.actor(os.environ, local.git_user(settings.root))
        source_host, target_host = source.hosts[0], target.hosts[0]
        access, timer = settings.access, Timer()
        dump = plan.admin_command(
            f"{protocol.DEPLOY_BIN} {transfer.dump_command(source.name, fresh=bool(fresh))}",
            access.as_root(source_host),
        )
        restore = plan.admin_command(
            f"{protocol.DEPLOY_BIN} {transfer.restore_command(target.name, source=source.name, by=by, url=url)}",
            access.as_root(target_host),
        )
        say(
            f"db.refresh of {target.name} {target_host} from {source.name} {source_host} ({'fresh dump' if fresh else 'newest backup, or a fresh dump if it has none'}), by {by}"
        )
        source_conn = admin_connect(settings, source_host)
        same_host = (source_host.hostname, source_host.port) == (target_host.hostname, target_host.port)
        target_conn = source_conn if same_host else admin_connect(settings, target_host)
        try:
            source_code, target_code, sent = transfer.stream(
                source_conn.transport,
                dump,
                target_conn.transport,
                restore,
                HostWriter(f"{source.name} {source_host}"),
                HostWriter(f"{target.name} {target_host}"),
            )
        finally:
            source_conn.close()
            if not same_host:
                target_conn.close()
    say(f"db.refresh: {sent} bytes streamed through this machine in {timer.elapsed:.1f}s")
    if source_code != 0 or target_code != 0:
        from invoke.exceptions import Exit

        say(
            f"db.refresh of {target.name} from {source.name}: FAILED (dump exit {source_code}, restore exit {target_code})",
            sys.stderr,
        )
        raise Exit(code=target_code if 0 < target_code < 256 else 1)
    say(f"db.refresh of {target.name} from {source.name}: ok")
