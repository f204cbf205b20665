"""review.*: a throwaway environment per pull request (the deploy account only)."""

from __future__ import annotations

import os
import sys
import time

from invoke import Collection, task
from invoke.exceptions import Exit

from pushdeploy import local, plan, protocol
from pushdeploy import review as reviews
from pushdeploy.output import Collector, say
from pushdeploy.tasks.common import EXIT_MEANINGS, done, expected, fail_on_errors, load_settings, request_on_hosts

PR_HELP = "The pull request number N: its review environment is TEMPLATE-N (e.g. review-12)."
TEMPLATE_HELP = "The review template in invoke.yaml (default: the only environment with review_template: true)."
FULL = f"the cap on live review environments is reached (review_max): `inv review.down --pr N` or `inv review.prune` first (exit {protocol.EXIT_FULL})"


def _describe(result) -> str:
    from pushdeploy.remote import last_line

    if result.exit_code == protocol.EXIT_FULL:
        return FULL
    return last_line(result) or EXIT_MEANINGS.get(result.exit_code, "")


def _report_url(url: str) -> None:
    """CI reads the URL back: GitHub Actions from the step's outputs, CircleCI from the log."""
    say(f"review url: {url}")
    output = os.environ.get("GITHUB_OUTPUT")
    if output:
        with open(output, "a") as stream:
            stream.write(f"url={url}\n")


@task(
    help={
        "pr": PR_HELP,
        "tag": "The image tag to run (default: CIRCLE_SHA1 / GITHUB_SHA in CI, else `git rev-parse HEAD`).",
        "template": TEMPLATE_HELP,
    }
)
def up(c, pr, tag=None, template=None):
    """Create or update the review environment of a pull request, and print its URL.

    The server makes TEMPLATE-N from the template (its own compose project,
    database and app directory; secrets from the template's server-side .env),
    deploys the tag there and routes pr-N.DOMAIN to it on the shared front
    proxy. Running it again deploys the new tag (or does nothing if it already
    runs). If the first deploy fails, nothing of it is left. Past review_max
    live environments it refuses (exit 69).
    """
    with fail_on_errors():
        settings = load_settings(c)
        env = reviews.template(settings, template)
        target = reviews.instance(env, pr)
        version = plan.check_version(env, tag or plan.build_version(os.environ, local.git_head(settings.root)))
        by, build_url = plan.actor(os.environ, local.git_user(settings.root))
        request = reviews.up(target.name, version, by=by, url=build_url, expect=expected(settings, env))
        say(f"review.up of {target.name} (pull request {target.pr}) at {version}, by {by}")
        results = request_on_hosts(settings, env, request, _describe)
    done(results, f"review.up of {target.name}")
    _report_url(next((r.result["url"] for r in results if r.result.get("url")), target.url))


@task(help={"pr": PR_HELP, "template": TEMPLATE_HELP})
def down(c, pr, template=None):
    """Remove a pull request's review environment: containers, volumes, networks, files, route.

    Idempotent: an environment that is not there is reported and the task succeeds
    (CI runs it when the pull request closes, whether or not one was made).
    """
    with fail_on_errors():
        settings = load_settings(c)
        env = reviews.template(settings, template)
        target = reviews.instance(env, pr)
        results = request_on_hosts(settings, env, reviews.down(target.name, expect=expected(settings, env)), _describe)
    done(results, f"review.down of {target.name}")


def _entries(settings, env) -> list:
    from pushdeploy import remote

    access, writer = settings.access, Collector()
    host = env.hosts[0]
    with remote.connect(host, host.user, access.ssh_key, access) as connection:
        code = remote.run(connection, reviews.listing(env.name, expect=expected(settings, env)), writer)
    if code != 0:
        for line in writer.lines:
            say(f"{env.name} {host} | {line}", sys.stderr)
        say(f"review list of {env.name}: FAILED (exit {code}): {EXIT_MEANINGS.get(code, '')}", sys.stderr)
        raise Exit(code=code if 0 < code < 256 else 1)
    return reviews.parse_list(writer.lines)


@task(name="list", help={"template": TEMPLATE_HELP})
def list_(c, template=None):
    """Show the live review environments: PR, version, URL, age and last deploy."""
    with fail_on_errors():
        settings = load_settings(c)
        env = reviews.template(settings, template)
        entries = _entries(settings, env)
    say(f"{env.name} {env.hosts[0]} | {len(entries)} review environment(s) of {env.review_max} allowed")
    if entries:
        say(reviews.table(entries, time.time()))


@task(
    help={
        "older_than": "Remove those not deployed to for this long: 7d, 36h, 90m, 2w (default 7d).",
        "template": TEMPLATE_HELP,
        "dry_run": "Only say which would go.",
    }
)
def prune(c, older_than="7d", template=None, dry_run=False):
    """Remove review environments not deployed to for a while (CI runs it on a schedule).

    Catches those whose pull request closed without `review.down` running.
    """
    with fail_on_errors():
        settings = load_settings(c)
        env = reviews.template(settings, template)
        limit = reviews.age_seconds(older_than)
        stale = reviews.select_prune(_entries(settings, env), limit, time.time())
        say(
            f"review.prune of {env.name}: {len(stale)} environment(s) idle for {older_than} or more{': ' + ', '.join(e.name for e in stale) if stale else ''}"
        )
        if dry_run or not stale:
            return
        results = []
        for entry in stale:
            results += request_on_hosts(
                settings, env, reviews.down(entry.name, expect=expected(settings, env)), _describe
            )
    done(results, f"review.prune of {env.name}")


namespace = Collection("review", up, down, list_, prune)
