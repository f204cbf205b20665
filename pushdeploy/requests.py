"""The request lines: what the client asks of the deploy account, built from plain values.

A request line is the client's whole contract with the server: the entrypoint
checks it word by word and bin/deploy checks it again. No I/O here: the tasks
gather the inputs (git, the clock, the environment, the settings) and these
functions turn them into the exact line, or raise protocol.InvalidRequest for
anything the server would refuse.
"""

from __future__ import annotations

import re

from pushdeploy import protocol


def deploy(
    env: str,
    version: str,
    *,
    run_id: str,
    by: str,
    expect: str,
    url: str = "",
    order: str | None = None,
    wait: int = 0,
    force: bool = False,
    maintenance: bool = False,
    skip_migrate: bool = False,
) -> str:
    """Deploy version to env, for one phase (skip_migrate: a later phase of a shared database).

    ``deploy ENV VERSION --id=ID [--wait=S] [--force] [--maintenance] [--skip-migrate] [--order=T] --by=WHO [--url=URL] --expect=HASH``
    """
    return protocol.command(
        "deploy",
        env,
        version,
        id=run_id,
        wait=wait or None,
        force=force,
        maintenance=maintenance,
        skip_migrate=skip_migrate,
        order=order,
        by=by,
        url=url or None,
        expect=expect,
    )


def rollback(
    env: str,
    *,
    run_id: str,
    by: str,
    expect: str,
    to: str | None = None,
    url: str = "",
    wait: int = 0,
    skip_migrate: bool = False,
    keep_good: bool = False,
    restore_db: bool = False,
    maintenance: bool = False,
) -> str:
    """Go back to the version that served before (or to), for one phase; the release it
    undoes is marked bad unless keep_good; restore_db: the database goes back to the backup
    taken before the deploy that replaced that version (maintenance on throughout).

    ``rollback ENV [--to=VERSION] [--keep-good] [--restore-db] [--maintenance] --id=ID [--wait=S] [--skip-migrate] --by=WHO [--url=URL] --expect=HASH``
    """
    return protocol.command(
        "rollback",
        env,
        to=to,
        keep_good=keep_good,
        restore_db=restore_db,
        maintenance=maintenance,
        id=run_id,
        wait=wait or None,
        skip_migrate=skip_migrate,
        by=by,
        url=url or None,
        expect=expect,
    )


REASON = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.:/@-]{0,149}$")


def mark(env: str, version: str, *, bad: bool, by: str, expect: str, reason: str = "") -> str:
    """Mark a release bad (deploys refuse it, the pull agent skips it, rollbacks pass it over) or good again.

    ``mark ENV VERSION bad|good [--reason=WORDS] --by=WHO --expect=HASH``: the reason's
    spaces travel as "+" (a request word has none).
    """
    reason = " ".join(reason.split())
    if reason and not REASON.match(reason):
        raise protocol.InvalidRequest(
            f"--reason {reason!r}: up to 150 letters, digits, spaces and _ . : / @ -, starting with a letter or digit"
        )
    return protocol.command(
        "mark",
        env,
        version,
        "bad" if bad else "good",
        reason=reason.replace(" ", "+") or None,
        by=by,
        expect=expect,
    )


def status(env: str, *, expect: str) -> str:
    """``status ENV --expect=HASH``: also tells whether the installed server side is current."""
    return protocol.command("status", env, expect=expect)


def history(env: str, *, limit: int = 10) -> str:
    """``history ENV --limit=N``"""
    return protocol.command("history", env, limit=limit)


def logs(env: str, *, follow: bool = False) -> str:
    """``logs ENV [--follow]``"""
    return protocol.command("logs", env, follow=follow)


def maintenance(env: str, *, on: bool) -> str:
    """``maintenance ENV on|off``"""
    return protocol.command("maintenance", env, "on" if on else "off")


def manage(env: str, words, *, expect: str, by: str = "") -> str:
    """One management command of the allowlist (pushdeploy/management.py checks it first).

    ``manage ENV --expect=HASH [--by=WHO] NAME ARGS...``: the request's options come
    before NAME, every word from NAME on is the command's.
    """
    words = tuple(words)
    if not words:
        raise protocol.InvalidRequest("no management command given")
    options = [f"--expect={expect}"] + ([f"--by={by}"] if by else [])
    return protocol.command("manage", env, *options, *words)


def plan(
    env: str,
    version: str,
    *,
    expect: str,
    order: str | None = None,
    maintenance: bool = False,
    skip_migrate: bool = False,
    force: bool = False,
    rollback: bool = False,
    restore_db: bool = False,
) -> str:
    """What a deploy of version would do (changes nothing but pulling the image); with
    rollback, what a rollback would do: to version if given, else to the one it would choose.

    ``plan ENV VERSION [--order=T] [--maintenance] [--skip-migrate] [--force] --expect=HASH``,
    ``plan ENV --rollback [--to=VERSION] [--restore-db] [--skip-migrate] --expect=HASH``
    """
    if rollback:
        return protocol.command(
            "plan",
            env,
            rollback=True,
            to=version or None,
            restore_db=restore_db,
            skip_migrate=skip_migrate,
            expect=expect,
        )
    return protocol.command(
        "plan",
        env,
        version,
        order=order,
        maintenance=maintenance,
        skip_migrate=skip_migrate,
        force=force,
        expect=expect,
    )


def cron_status(env: str, *, expect: str) -> str:
    """``cron-status ENV --expect=HASH``: the cron jobs, which run on the host, their last runs."""
    return protocol.command("cron-status", env, expect=expect)


def pull_status(env: str, *, expect: str) -> str:
    """``pull-status ENV --expect=HASH``: the pull agent's channel, last check and last change."""
    return protocol.command("pull-status", env, expect=expect)
