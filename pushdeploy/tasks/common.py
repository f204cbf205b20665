"""What every task shares: loading settings, turning errors into clear exits."""

from __future__ import annotations

import contextlib
import sys

import invoke
from invoke.exceptions import Exit

from pushdeploy import local, plan, protocol, rollout, settings
from pushdeploy.output import say

EXIT_MEANINGS = {
    protocol.EXIT_USAGE: "the server refused the request",
    protocol.EXIT_OLDER: "older than the deployed version: use `inv deploy.rollback`, or --force",
    protocol.EXIT_BUSY: "another deploy is running: wait for it, or pass --wait SECONDS",
    protocol.EXIT_OUTDATED: "the server side is out of date: run `inv server.setup --env ENV`",
    255: "could not reach the host",
}


def load_settings(c) -> settings.Settings:
    return settings.load(c.config)


def expected(config: settings.Settings, env: settings.Environment) -> str:
    """SERVERHASH.SETTINGSHASH: what bin/deploy must find installed for this project."""
    return plan.expected(protocol.server_side(), plan.server_conf(env, local.app_files(config, env), config.keys))


@contextlib.contextmanager
def fail_on_errors():
    """Bad input stops the task before anything changes: message on stderr, exit 2."""
    try:
        yield
    except (settings.ConfigError, plan.BadRequest, protocol.InvalidRequest, rollout.BadSelection) as error:
        say(f"error: {error}", sys.stderr)
        raise Exit(code=2) from None


def done(results, what: str, quiet: bool = False, total: int | None = None) -> None:
    """Exit 0 only if every host succeeded; else with the first failing host's code.

    total: the hosts the task was for, when some were never asked (a rolling deploy that stopped).
    """
    failed = [r for r in results if not r.ok]
    if not failed:
        if not quiet:
            say(f"{what}: ok on {len(results)} host(s)")
        return
    exit_failed(failed, f"{what}: FAILED on {len(failed)} of {total or len(results)} host(s)")


def exit_failed(failed, said: str) -> None:
    """Say which hosts failed (on stderr) and exit with the first one's code."""
    say(f"{said}: {', '.join(str(r.host) for r in failed)}", sys.stderr)
    code = failed[0].exit_code
    raise Exit(code=code if 0 < code < 256 else 1)


def request_on_hosts(
    settings, env, request: str, describe, hosts=None, sessions: dict | None = None, grouped: bool = False
) -> list:
    """Send one request to the deploy account of every host (or of hosts) at once, with the output prefixed.

    sessions: connections already open (the pre-flight's), each taken by its host's first connect.
    grouped: print each host's answer as one block (short answers: status, backups), not as it streams.
    """
    from pushdeploy import remote

    access = settings.access

    def work(host, out):
        def connect():
            session = sessions.pop(host, None) if sessions else None
            if session is not None:
                transport = session.transport
                if transport is not None and transport.is_active():
                    return session
                session.close()
            return remote.connect(host, host.user, access.ssh_key, access)

        return remote.run_resumable(connect, request, out)

    results = remote.on_hosts(hosts or env.hosts, work, label=lambda h: f"{env.name} {h}", grouped=grouped)
    remote.summary(results, describe, label=lambda h: f"{env.name} {h}")
    return results


class _Task(invoke.Task):
    """Invoke's task, but --hosts gets no short flag (every Invoke user types -h for help),
    nor --restore-db (it loses data: it is typed out, never a one-letter slip)."""

    def arg_opts(self, name, default, taken_names):
        opts = super().arg_opts(name, default, taken_names)
        if name in ("hosts", "restore_db"):
            opts["names"] = [flag for flag in opts["names"] if len(flag) > 1]
        return opts


def task(*args, **kwargs):
    """@task for this project's tasks (see _Task)."""
    kwargs.setdefault("klass", _Task)
    return invoke.task(*args, **kwargs)


def admin_connect(loaded, host):
    """The admin connection to HOST (pushdeploy/remote.py), as DEPLOY_ADMIN_USER or the ssh
    config's User for it, with DEPLOY_ADMIN_KEY."""
    from pushdeploy import remote

    access = loaded.access
    return remote.admin(host, access.admin_for(host), access.admin_key, access)


def require_pinned(loaded, environment) -> None:
    """Every host and jump host pinned, or nothing starts: admin work runs on all hosts at
    once, and a host that cannot be reached must not leave the others changed (exit 2)."""
    from pushdeploy import hostkeys

    problem = hostkeys.pinning_problem(environment.hosts, loaded.access)
    if problem:
        raise plan.BadRequest(problem)
