"""deploy.*: deploy a version, and see what is deployed (the deploy account only)."""

from __future__ import annotations

import os
import sys

from invoke import Collection
from invoke.exceptions import Exit

from pushdeploy import history as history_table
from pushdeploy import local, plan, requests, rollout
from pushdeploy.output import Collector, say
from pushdeploy.tasks import preview
from pushdeploy.tasks.common import EXIT_MEANINGS, done, expected, fail_on_errors, load_settings, request_on_hosts, task

WAIT_HELP = "If another deploy of this environment runs, wait up to this many seconds for it (default: refuse at once)."


def _describe(result) -> str:
    from pushdeploy.remote import last_line

    return last_line(result) or EXIT_MEANINGS.get(result.exit_code, "")


def run_deploy(
    c,
    env_name: str,
    version: str | None,
    wait: int = 0,
    verb: str = "deploy",
    to: str | None = None,
    force: bool = False,
    maintenance: bool = False,
    hosts: str | None = None,
    keep_good: bool = False,
    restore_db: bool = False,
    running: bool = False,
) -> None:
    """The deploy, in order: validate, gather the request's inputs, check every host, send it batch by batch, undo on failure, report.

    running: deploy again the version the hosts run, as the pre-flight finds it (deploy.restart)."""
    sessions: dict = {}  # connections the pre-flight opened, each used once by its host's batch
    try:
        with fail_on_errors():
            settings = load_settings(c)
            env = settings.environment(env_name)
            chosen = rollout.select(env.hosts, hosts)
            if verb == "deploy" and not running:
                version = plan.check_version(
                    env, version or plan.build_version(os.environ, local.git_head(settings.root))
                )
            elif to:
                version = plan.check_version(env, to)
            by, url = plan.actor(os.environ, local.git_user(settings.root))
            build_order = verb == "deploy" and env.ordering == "build" and not running
            order = local.commit_time(version, settings.root) if build_order else None
            if build_order and order is None:
                say(
                    f"warning: commit {version} is not in this clone, so its build order is unknown: the server cannot refuse it as older"
                )
            expect = expected(settings, env)

            def request(skip_migrate: bool, back_to: str | None = None) -> str:
                # A new id per batch: resending an id reattaches to that deploy, and batches may share a server.
                if back_to:
                    return requests.rollback(
                        env.name,
                        to=back_to,
                        run_id=plan.run_id(),
                        by=by,
                        url=url,
                        expect=expect,
                        wait=wait,
                        skip_migrate=True,
                        keep_good=True,  # the undo of a failed batch: nobody judged the release bad
                    )
                if verb == "deploy":
                    return requests.deploy(
                        env.name,
                        version,
                        run_id=plan.run_id(),
                        by=by,
                        url=url,
                        order=order,
                        expect=expect,
                        wait=wait,
                        force=force,
                        maintenance=maintenance,
                        skip_migrate=skip_migrate,
                    )
                return requests.rollback(
                    env.name,
                    to=to and version,
                    run_id=plan.run_id(),
                    by=by,
                    url=url,
                    expect=expect,
                    wait=wait,
                    skip_migrate=skip_migrate,
                    keep_good=keep_good,
                    restore_db=restore_db and not skip_migrate,  # the first host restores the shared database
                    maintenance=restore_db and skip_migrate,  # the others wait in maintenance until they switch
                )

            what = f"{verb} of {version or 'the previous version'}" if verb == "rollback" else f"deploy of {version}"
            what = "restart of the running version" if running else what
            batches = plan.phases(env, chosen)
            say(f"{what} to {env.name} on {len(chosen)} host(s) in {len(batches)} batch(es), by {by}")
            if plan.batch_size(env) != env.batch_size and len(chosen) > 1:
                say("  one host at a time (not batch_size): its workers quiesce before the next host's (docs/roles.md)")
            # One host checks itself in its own request; several are all checked before any of them changes
            # (a restart asks even one host what it runs).
            checked = len(chosen) > 1 or running
            before = _preflight(settings, env, chosen, expect, wait, sessions, what) if checked else {}
            if running:
                version = _one_version(env.name, before)
            if restore_db and len(chosen) > 1:  # no host may write to the database while it is replaced
                _maintenance(settings, env, chosen, True)
            results, outcomes = [], {}
            for number, (batch, skip_migrate) in enumerate(batches, 1):
                if len(batches) > 1:
                    say(f"{env.name}: batch {number}/{len(batches)}: {', '.join(map(str, batch))}")
                answers = request_on_hosts(
                    settings, env, request(skip_migrate), _describe, hosts=batch, sessions=sessions
                )
                results += answers
                for answer in answers:
                    outcomes[answer.host] = _outcome(answer, version, before)
                if all(a.ok for a in answers):
                    continue
                for later, _ in batches[number:]:
                    for host in later:
                        outcomes[host] = rollout.Outcome(
                            host, "skipped", before.get(host, ""), "not started: a batch before it failed"
                        )
                if restore_db and len(chosen) > 1:
                    _after_failed_restore(
                        settings, env, [h for h, o in outcomes.items() if o.state == "skipped"], number
                    )
                switched = [(r.host, rollout.previous_version(r.result)) for r in results if r.ok]
                if switched and verb == "deploy" and env.on_failure == "rollback":
                    _undo(settings, env, switched, request, outcomes)
                elif switched:
                    say(
                        f"{env.name}: on_failure is {env.on_failure}: {', '.join(str(h) for h, _ in switched)} keep {version}; the fleet is SPLIT across versions",
                        sys.stderr,
                    )
                unknown = [str(a.host) for a in answers if outcomes[a.host].state == "unknown"]
                if unknown:
                    say(
                        f"{env.name}: lost contact with {', '.join(unknown)} during its deploy: there it finishes or undoes itself on the server. "
                        f"Until `inv deploy.status --env {env.name}` shows what it runs, the fleet may be split.",
                        sys.stderr,
                    )
                break
            if len(chosen) > 1:
                say(rollout.table([outcomes[h] for h in chosen if h in outcomes]))
    finally:
        for session in sessions.values():
            session.close()
    done(results, f"{what} to {env.name}", total=len(chosen))


def _outcome(answer, version: str | None, before: dict) -> rollout.Outcome:
    """A host's line in the summary table, from its answer to its batch's request."""
    if answer.ok:
        return rollout.Outcome(answer.host, "switched", version or rollout.new_version(answer.result) or "")
    if answer.exit_code == 255 and rollout.reached(answer.output):
        return rollout.Outcome(answer.host, "unknown", "?", "contact lost mid-deploy: see `inv deploy.status`")
    now = rollout.serving_after_failure(answer.result) or before.get(answer.host, "")
    return rollout.Outcome(answer.host, "failed", now, _describe(answer))


def _preflight(settings, env, hosts, expect: str, wait: int, sessions: dict, what: str) -> dict:
    """Before a deploy across several hosts changes any of them: one request to all at once,
    `status ENV --expect=...`. Every host must be set up for the environment with the
    project's server side and settings, reachable, and (unless --wait) not busy; else
    nothing is sent and the deploy exits 78 (or 255, 75) naming the hosts. It costs one
    round trip per host, not a connection: the deploy reuses the connections it opened.
    Returns the version each host runs."""
    from pushdeploy import remote
    from pushdeploy.output import Timer

    access, line, timer = settings.access, requests.status(env.name, expect=expect), Timer()
    collected: dict = {}

    def work(host, _out):
        collected[host] = writer = Collector()
        try:
            sessions[host] = session = remote.connect(host, host.user, access.ssh_key, access)
            return remote.run(session, line, writer)
        except remote.RemoteError:
            raise
        except Exception as error:  # EOFError, OSError, paramiko.SSHException: the connection dropped
            raise remote.RemoteError(f"{host.user}@{host}: connection lost: {error or type(error).__name__}") from None

    answers = []
    for r in remote.on_hosts(hosts, work):
        heard = collected.get(r.host, Collector())
        answers.append(rollout.Answer(r.host, r.exit_code, tuple(heard.lines), r.message, heard.result))
    refusals = rollout.not_ready(answers, env.name, wait)
    if refusals:
        say(
            f"{env.name}: refusing the {what}: nothing was changed on any host; {len(refusals)} of {len(hosts)} host(s) cannot take it:",
            sys.stderr,
        )
        for refusal in refusals:
            say(f"  {env.name} {refusal.host}: {refusal.reason}", sys.stderr)
        raise Exit(code=rollout.refusal_code(refusals))
    versions = {a.host: a.version for a in answers}
    running = sorted(set(versions.values()))
    say(
        f"{env.name}: pre-flight ok on {len(hosts)} host(s) in {timer.elapsed:.1f}s: server side and settings current; running {', '.join(running)}"
    )
    return versions


def _maintenance(settings, env, hosts, on: bool) -> None:
    line = requests.maintenance(env.name, on=on)
    answers = request_on_hosts(settings, env, line, _describe, hosts=tuple(hosts))
    failed = [str(a.host) for a in answers if not a.ok]
    if failed and on:
        say(f"{env.name}: could not turn maintenance mode on at {', '.join(failed)}: nothing restored", sys.stderr)
        raise Exit(code=1)


def _after_failed_restore(settings, env, waiting, batch: int) -> None:
    """A rollback with --restore-db failed: the hosts it never reached wait in maintenance.
    If the first batch failed, its host put the database back as it was: they serve again.
    Later, the database is the restored one, which the version they run does not know."""
    if not waiting:
        return
    if batch == 1:
        _maintenance(settings, env, waiting, False)
        return
    say(
        f"{env.name}: {', '.join(map(str, waiting))} stay in maintenance mode: the database was restored for the "
        f"version the rollback brings, not for the one they run; rerun the rollback with --hosts for them",
        sys.stderr,
    )


def _undo(settings, env, switched, request, outcomes) -> None:
    """A batch failed: the hosts already switched go back to the version each ran before, at once."""
    back, stuck = rollout.undo(switched)
    say(
        f"{env.name}: a batch failed: rolling {len(back)} switched host(s) back so the fleet runs one version",
        sys.stderr,
    )
    for host in stuck:
        outcomes[host] = rollout.Outcome(
            host, "rollback failed", outcomes[host].version, "its first deploy: nothing to go back to"
        )
    for target in sorted({v for _, v in back}):
        hosts = tuple(h for h, v in back if v == target)
        for answer in request_on_hosts(settings, env, request(True, back_to=target), _describe, hosts=hosts):
            state = "rolled back" if answer.ok else "rollback failed"
            outcomes[answer.host] = rollout.Outcome(
                answer.host,
                state,
                target if answer.ok else outcomes[answer.host].version,
                "" if answer.ok else _describe(answer),
            )


HOSTS_HELP = "Only these hosts (comma-separated, as in invoke.yaml): a canary, e.g. --hosts web1 first, then the rest."
FORCE_HELP = "Deploy even if the version is older than the deployed one (prefer deploy.rollback)."
MAINTENANCE_HELP = "Serve the maintenance page (503) from before migrating until the new version serves: for migrations the old code cannot run with."


@task(
    help={
        "tag": "The image tag to deploy (default: CIRCLE_SHA1 / GITHUB_SHA in CI, else `git rev-parse HEAD`).",
        "wait": WAIT_HELP,
        "force": FORCE_HELP,
        "maintenance": MAINTENANCE_HELP,
        "hosts": HOSTS_HELP,
    }
)
def staging(c, tag=None, wait=0, force=False, maintenance=False, hosts=None):
    """Deploy the current build to staging (CI runs this on every commit to master).

    Deploys an exact image tag, never a moving `latest`: --tag, else the commit
    CI is building, else this checkout's HEAD. Hosts go in batches (the first
    host alone); the command exits 0 only if all of them succeeded. A build older (by
    commit time) than the one deployed is refused, so a slow CI job cannot
    overwrite a newer build.
    """
    run_deploy(c, "staging", tag, wait, force=force, maintenance=maintenance, hosts=hosts)


@task(
    help={
        "tag": "The release tag to deploy, e.g. 1.4.0 (required; must match production's version_pattern).",
        "wait": WAIT_HELP,
        "force": FORCE_HELP,
        "maintenance": MAINTENANCE_HELP,
        "hosts": HOSTS_HELP,
    }
)
def production(c, tag=None, wait=0, force=False, maintenance=False, hosts=None):
    """Deploy a release tag to production (CI runs this on tags, after approval).

    On each production host: pulls the image for --tag, backs up the database,
    migrates and collects static files with a one-off container of the new
    version, starts it beside the running one and moves traffic once its
    health check passes. If any step fails, the running version keeps serving.
    Several hosts: the first host alone (it migrates), then batches of
    batch_size; if a batch fails, the hosts already switched go back to their
    previous version (on_failure: rollback). A tag older than the deployed one
    is refused (use deploy.rollback).
    """
    if not tag:
        with fail_on_errors():
            raise plan.BadRequest("production deploys need an explicit --tag, e.g. `inv deploy.production --tag 1.4.0`")
    run_deploy(c, "production", tag, wait, force=force, maintenance=maintenance, hosts=hosts)


@task(
    help={
        "env": "The environment to deploy to (any configured in invoke.yaml).",
        "tag": "The version to deploy (default for environments without require_tag: the current commit).",
        "wait": WAIT_HELP,
        "force": FORCE_HELP,
        "maintenance": MAINTENANCE_HELP,
        "hosts": HOSTS_HELP,
    }
)
def to(c, env, tag=None, wait=0, force=False, maintenance=False, hosts=None):
    """Deploy to any configured environment (review apps, a second region, ...).

    Same flow as deploy.staging and deploy.production; environments with
    `require_tag: true` need --tag.
    """
    with fail_on_errors():
        if not tag and load_settings(c).environment(env).require_tag:
            raise plan.BadRequest(f"{env} has require_tag: pass --tag VERSION")
    run_deploy(c, env, tag, wait, force=force, maintenance=maintenance, hosts=hosts)


@task(
    help={
        "env": "The environment (staging, production, ...).",
        "to": "The version to go back to (default: the one that served before the running version took over, passing over releases marked bad).",
        "keep-good": "Do not mark the release this rollback undoes as bad.",
        "restore-db": "Also put the database back to the backup taken before the deploy that replaced that version "
        "(for migrations that cannot be unapplied): maintenance mode throughout, and everything written since is LOST "
        "(`inv deploy.plan --rollback --restore-db` says since when).",
        "wait": WAIT_HELP,
        "hosts": HOSTS_HELP,
    }
)
def rollback(c, env="staging", to=None, keep_good=False, restore_db=False, wait=0, hosts=None):
    """Go back to the version that served before the running one, batch by batch like a deploy.

    Each host goes back along what actually served there: a second rollback goes
    further back, never to a release that was rolled back or marked bad
    (`inv deploy.plan --rollback` says which version and why). The release it
    undoes is marked bad, so a CI retry or the pull agent does not bring it back
    (--keep-good: not marked). --to VERSION goes to any version.

    Migrations applied since that version served are unapplied first, while the
    running version still serves; one that cannot be unapplied refuses the rollback,
    unless --restore-db: then the database goes back to the backup taken before
    the deploy that replaced that version (backup: true), in maintenance mode.
    """
    run_deploy(c, env, None, wait, verb="rollback", to=to, hosts=hosts, keep_good=keep_good, restore_db=restore_db)


def _one_version(env_name: str, before: dict) -> str:
    running = sorted(set(before.values()))
    if len(running) != 1 or running[0] in ("", "none"):
        raise plan.BadRequest(
            f"{env_name}'s hosts run {', '.join(running) or 'nothing'}: a restart starts one running version again; "
            "deploy a version first"
        )
    return running[0]


@task(help={"env": "The environment (staging, production, ...).", "wait": WAIT_HELP, "hosts": HOSTS_HELP})
def restart(c, env="staging", wait=0, hosts=None):
    """Start the running version again, with the same zero-downtime switch as a deploy.

    For changed secrets (`inv secrets.push`) or settings in .env: each host's new
    containers read .env as it is now; the old ones serve until the switch. The
    hosts must all run the same version. The history records the deploy, and
    which secrets it applied (names only).
    """
    run_deploy(c, env, None, wait, force=True, hosts=hosts, running=True)


def _mark(c, env_name: str, version: str, bad: bool, reason: str) -> None:
    with fail_on_errors():
        settings = load_settings(c)
        env = settings.environment(env_name)
        version = plan.check_version(env, version)
        by, _ = plan.actor(os.environ, local.git_user(settings.root))
        line = requests.mark(env.name, version, bad=bad, by=by, expect=expected(settings, env), reason=reason or "")
        results = request_on_hosts(settings, env, line, lambda r: "" if r.ok else _describe(r))
    done(results, f"mark {version} {'bad' if bad else 'good'} on {env.name}")


MARK_HELP = {
    "version": "The release, e.g. 1.4.0.",
    "env": "The environment (staging, production, ...).",
    "reason": "Why, in a few words (recorded with your name; shown by deploy.history and deploy.status).",
}


@task(help=MARK_HELP)
def mark_bad(c, version, env="staging", reason=None):
    """Mark a release bad on every host: a deploy of it is refused (exit 65) unless
    --force, the pull agent skips it, a rollback passes over it."""
    _mark(c, env, version, True, reason)


@task(help=MARK_HELP)
def mark_good(c, version, env="staging", reason=None):
    """Take a bad mark back (a rollback's included): the release can be deployed again."""
    _mark(c, env, version, False, reason)


def _ask(c, env_name: str, what: str, build, show, check=None, grouped: bool = False) -> None:
    """Send every host of an environment one request, build(settings, env) -> line, and report."""
    with fail_on_errors():
        settings = load_settings(c)
        env = settings.environment(env_name)
        results = request_on_hosts(settings, env, build(settings, env), show, grouped=grouped)
        if check:
            check(env, results)
    done(results, f"{what} of {env.name}")


def _versions_agree(env, results) -> None:
    """deploy.status: a fleet split across versions is said out loud."""
    versions = {r.host: r.result.get("version", "?") for r in results if r.ok}
    if len(set(versions.values())) > 1:
        most = max(set(versions.values()), key=list(versions.values()).count)
        odd = ", ".join(f"{host} runs {v}" for host, v in versions.items() if v != most)
        say(
            f"warning: {env.name}'s hosts run different versions: most run {most}; {odd}. Deploy or roll back to make them agree.",
            sys.stderr,
        )


@task(help={"env": "The environment (staging, production, ...)."})
def status(c, env="staging"):
    """Show, per host, the deployed version, any deploy in progress and the compose services.

    For `engine: swarm`: the stack's services with their replicas, the nodes
    their tasks run on, and the swarm's nodes.
    """
    _ask(
        c,
        env,
        "status",
        lambda settings, e: requests.status(e.name, expect=expected(settings, e)),
        lambda r: f"version: {r.result['version']}" if r.ok and "version" in r.result else _describe(r),
        check=_versions_agree,
        grouped=True,
    )


@task(help={"env": "The environment (staging, production, ...).", "limit": "How many deploys to show (default 10)."})
def history(c, env="staging", limit=10):
    """Show the last deploys on each host as a table: when, what, outcome, who."""
    from pushdeploy import remote

    with fail_on_errors():
        settings = load_settings(c)
        environment = settings.environment(env)
        request = requests.history(environment.name, limit=int(limit))
        access = settings.access

        def work(host, out):
            writer = Collector()
            with remote.connect(host, host.user, access.ssh_key, access) as connection:
                code = remote.run(connection, request, writer)
            lines = history_table.table(history_table.parse(writer.lines)).splitlines() if code == 0 else writer.lines
            for line in lines:
                out.line(line)
            return code

        results = remote.on_hosts(environment.hosts, work, label=lambda h: f"{env} {h}", grouped=True)
    done(results, f"history of {env}", quiet=True)


@task(
    help={
        "env": "The environment (staging, production, ...).",
        "on": "Turn maintenance mode on.",
        "off": "Turn maintenance mode off.",
    }
)
def maintenance(c, env="staging", on=False, off=False):
    """Make the proxy answer 503 (a page, or JSON for API clients) without stopping anything."""
    if on == off:
        with fail_on_errors():
            raise plan.BadRequest("say --on or --off")
    _ask(c, env, "maintenance", lambda settings, e: requests.maintenance(e.name, on=on), _describe)


@task(help={"env": "The environment (staging, production, ...).", "follow": "Keep following while the deploy runs."})
def logs(c, env="staging", follow=False):
    """Show the last deploy's log from each host (it runs on the server, detached)."""
    _ask(
        c,
        env,
        "logs",
        lambda settings, e: requests.logs(e.name, follow=bool(follow)),
        lambda r: "" if r.ok else _describe(r),
    )


namespace = Collection(
    "deploy", staging, production, to, rollback, restart, status, history, logs, maintenance, mark_bad, mark_good
)
namespace.add_task(preview.plan_, name="plan")
