"""manage: run one allowlisted Django management command on a server (the deploy account only)."""

from __future__ import annotations

import os
import sys

from invoke.exceptions import Exit

from pushdeploy import local, management, plan, requests, rollout
from pushdeploy.output import say
from pushdeploy.tasks.common import expected, fail_on_errors, load_settings, task


def _remainder(argv: list[str]) -> list[str]:
    """The words after `--` on the command line: the management command's arguments."""
    return argv[argv.index("--") + 1 :] if "--" in argv else []


@task(
    positional=["command"],
    help={
        "command": "The management command, e.g. showmigrations; its arguments after `--` (or all of it quoted: 'showmigrations notes').",
        "env": "The environment (staging, production, ...).",
        "hosts": "The host to run it on (default: the environment's first host; the database is shared).",
    },
)
def manage(c, command, env="staging", hosts=None):
    """Run one allowlisted Django management command on a server: output streamed, exit code kept.

    For example `inv manage --env staging showmigrations -- notes --list`, or
    `inv manage --env production 'check --deploy'`.

    Only commands named in `manage_commands` (invoke.yaml; default: showmigrations,
    check, clearsessions, createcachetable) run, each only with arguments matching
    its own patterns; `shell`, `dbshell` and anything else are refused here and again
    on the server. It runs in a one-off container of the deployed version on one host,
    through the deploy account; the output streams back and the command's exit code
    is this task's.
    """
    from pushdeploy import remote

    with fail_on_errors():
        settings = load_settings(c)
        environment = settings.environment(env)
        chosen = rollout.select(environment.hosts, hosts)[:1]
        words = command.split() + _remainder(sys.argv)
        words = management.request_words(environment.manage_commands, words[0] if words else "", words[1:])
        by, _ = plan.actor(os.environ, local.git_user(settings.root))
        line = requests.manage(environment.name, words, expect=expected(settings, environment), by=by)
        access = settings.access
        host = chosen[0]

        def work(host, out):
            with remote.connect(host, host.user, access.ssh_key, access) as session:
                return remote.run(session, line, out)

        result = remote.on_hosts([host], work, label=lambda h: f"{env} {h}")[0]
    if result.ok:
        say(f"{env} {host} | manage.py {' '.join(words)}: ok in {result.seconds:.1f}s")
        return
    from pushdeploy.tasks.common import EXIT_MEANINGS

    meaning = EXIT_MEANINGS.get(result.exit_code, "the command failed")
    say(
        f"{env} {host} | manage.py {' '.join(words)}: FAILED (exit {result.exit_code}) in {result.seconds:.1f}s: {meaning}",
        sys.stderr,
    )
    raise Exit(code=result.exit_code if 0 < result.exit_code < 256 else 1)
