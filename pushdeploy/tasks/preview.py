"""deploy.plan: what a deploy would do on each host, without doing it (the deploy account only)."""

from __future__ import annotations

import os

from pushdeploy import local, plan, preview, requests, rollout
from pushdeploy.output import Collector, say
from pushdeploy.tasks.common import exit_failed, expected, fail_on_errors, load_settings, task


@task(
    help={
        "env": "The environment (staging, production, ...).",
        "tag": "The version a deploy would bring (default as for a deploy: CI's commit, else `git rev-parse HEAD`).",
        "maintenance": "Plan a deploy with --maintenance.",
        "force": "Plan a deploy with --force (the order check passes).",
        "rollback": "Plan a rollback instead: which version it would go back to and why (--tag: a rollback --to it).",
        "restore-db": "With --rollback: plan a rollback --restore-db (which backup, and since when writes are lost).",
        "hosts": "Only these hosts (comma-separated, as in invoke.yaml).",
    }
)
def plan_(c, env="staging", tag=None, maintenance=False, force=False, rollback=False, restore_db=False, hosts=None):
    """Show what a deploy would do on each host, changing nothing.

    Per host: the running and the target version, whether the order check would
    let it through, whether the server side and settings are current, whether a
    deploy runs now, the steps the deploy would run (backup, maintenance, hooks, ...),
    the migrations the new image would apply (Django's `migrate --plan` in a
    one-off container of it: the image is pulled, nothing else changes) and an
    estimate (the median duration of the last successful deploys there). Exits 0
    if the deploy would go ahead, else with the code the deploy would stop with
    (65 older, 75 busy, 78 out of date).
    """
    from pushdeploy import remote

    with fail_on_errors():
        settings = load_settings(c)
        environment = settings.environment(env)
        if not tag and environment.require_tag and not rollback:
            raise plan.BadRequest(f"{env} has require_tag: pass --tag VERSION")
        chosen = rollout.select(environment.hosts, hosts)
        if restore_db and not rollback:
            raise plan.BadRequest("--restore-db plans a rollback: pass --rollback too")
        if rollback:
            version = plan.check_version(environment, tag) if tag else ""
        else:
            version = plan.check_version(
                environment, tag or plan.build_version(os.environ, local.git_head(settings.root))
            )
        order = local.commit_time(version, settings.root) if environment.ordering == "build" and not rollback else None
        expect = expected(settings, environment)
        # Later batches of a shared database do not migrate: their plan says so.
        skips = {host: skip for batch, skip in plan.phases(environment, chosen) for host in batch}
        lines = {
            h: requests.plan(
                environment.name,
                version,
                expect=expect,
                order=order,
                maintenance=maintenance,
                force=force,
                skip_migrate=skips[h],
                rollback=rollback,
                restore_db=restore_db,
            )
            for h in chosen
        }
        access = settings.access
        what = f"a rollback of {env}" + (f" to {version}" if version else "") if rollback else f"a deploy of {version}"
        say(f"plan of {what} on {len(chosen)} host(s): nothing is changed (the image is pulled)")

        def work(host, out):
            answer = Collector()
            with remote.connect(host, host.user, access.ssh_key, access) as session:
                code = remote.run(session, lines[host], answer)
            if code != 0:
                for line in answer.lines:
                    out.line(line)
                return code
            host_plan = preview.parse(answer.lines)
            for line in preview.show(host_plan):
                out.line(line)
            return preview.verdict(host_plan)[0]

        results = remote.on_hosts(chosen, work, label=lambda h: f"{env} {h}")
    failed = [r for r in results if not r.ok]
    if not failed:
        say(f"plan of {env}: {what} would go ahead on {len(results)} host(s)")
        return
    exit_failed(failed, f"plan of {env}: {what} would NOT go ahead on {len(failed)} of {len(results)} host(s)")
