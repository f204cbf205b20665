"""plan: what a deploy of VERSION would do here, as KEY=value lines, changing nothing but
pulling the image (to read its migrations); and the order and steps a deploy would follow."""

from __future__ import annotations

import os
import sys

from . import env as envs
from . import expect, order, run
from .lock import Lock
from .request import Refused, Request
from .result import Result


def check_version(env: envs.Env, version: str) -> None:
    import re

    pattern = env["VERSION_RE"]
    if pattern and not re.search(pattern, version) and not order.is_pinned(env["PULL_CHANNEL"], version):
        raise Refused(f"version '{version}' does not match {env.name}'s pattern {pattern}")


def order_refusal(env: envs.Env, version: str, build_order, force: bool) -> str | None:
    """Why a deploy of VERSION (at BUILD_ORDER) would be refused as older, or None."""
    if force:
        return None
    if env["ORDERING"] == "semver":
        current = envs.current_version(env)
        if (
            current
            and current != "none"
            and not order.is_pinned(env["PULL_CHANNEL"], current)
            and order.version_lt(version, current)
        ):
            return f"{version} is older than the deployed {current}: {_going_back(env, version)}"
    elif env["ORDERING"] == "build":
        last = envs.read_text(os.path.join(env.state_dir, "order"))
        if build_order is not None and last.isdigit() and build_order < int(last):
            return f"build {version} (order {build_order}) is older than the deployed build (order {last}): use `inv deploy.rollback`, or --force"
    return None


def deploy_refusal(env: envs.Env, version: str, build_order, force: bool) -> str | None:
    """Why a deploy of VERSION would be refused (exit 65): older, or marked bad; None with --force."""
    from . import marks

    if force:
        return None
    return order_refusal(env, version, build_order, False) or marks.refusal(env, version)


def _going_back(env: envs.Env, version: str) -> str:
    """What to do instead: roll back to VERSION if it served here, else it never did."""
    served = any(
        record.get("version") == version and record.get("outcome") == "ok"
        for record in run.lib_module("history").brief(env.history)
    )
    if served:
        return f"to go back to it, `inv deploy.rollback --env {env.name} --to {version}`; or --force"
    return f"{version} never served here: deploy a newer version, or pass --force to deploy it anyway"


def deploy_steps(
    env: envs.Env, maintenance: bool, skip_migrate: bool, kind: str = "deploy", version: str = "", restore: str = ""
) -> list:
    """The steps a deploy (or a rollback to VERSION: an instant one, if it can be; with
    RESTORE, the backup it restores) runs with these settings, in its order: the pipeline's
    own list (tests/e2e/test_plan.py compares it with a real deploy's)."""
    from . import pipeline

    request = {"MAINTENANCE": str(int(maintenance or bool(restore))), "SKIP_MIGRATE": str(int(skip_migrate))}
    request.update(KIND=kind, VERSION=version, RESTORE=restore)
    return pipeline.step_names(pipeline.Run(env, "", request), pipeline.strategy_for(env))


def _estimate(env: envs.Env) -> str:
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        run.lib_module("history").median_ok(env.history, 10)
    return printed.getvalue().strip()


def plan_migrations(env: envs.Env, version: str, skip_migrate: bool) -> list:
    """Django's `migrate --plan` for VERSION against the running database (not started here)."""
    if skip_migrate:
        return ["migrations=skipped (a later batch: the first host migrates the shared database)"]
    from .pipeline import strategy_for

    return strategy_for(env).plan_migrations(version)


def unapply_plan(env: envs.Env, version: str, current: str, skip_migrate: bool) -> None:
    """A rollback's migrations: what it would unapply first (applied here since VERSION last
    served), and whether Django can (a one-off container of the current version: the image
    is there, nothing changes)."""
    from . import pipeline, release

    run = pipeline.Run(env, "plan", {"KIND": "rollback", "VERSION": version, "SKIP_MIGRATE": str(int(skip_migrate))})
    run.previous = current
    names = pipeline.unapplying(run)
    print(f"unapply={' '.join(names) or 'none'}")
    if not names:
        return
    sys.stdout.flush()
    rc = release.unapply(run, pipeline.strategy_for(env), names, check_only=True)
    print(f"unapply_check={'ok' if rc == 0 else 'irreversible' if rc == 6 else f'failed (exit {rc})'}")


def restore_plan(env: envs.Env, version: str):
    """A rollback's --restore-db: the backup it would restore and what that loses (restore=,
    lost_since=, restore_loses=), or why it cannot (restore=refused: ...); its Point or None."""
    from . import restoredb

    try:
        point = restoredb.choose(env, version)
    except Refused as why:
        print(f"restore=refused: {why}")
        return None
    print(f"restore={point.path}\nlost_since={point.taken}\nrestore_loses={restoredb.statement(point)}")
    return point


def plan(request: Request) -> Result:
    """What a deploy of VERSION would do here, as KEY=value lines; changes nothing but
    pulling the image (to read its migrations). An outdated server side is reported."""
    from . import marks

    env = envs.load(request.env)
    current = envs.current_version(env)
    rollback = bool(request.option("rollback"))
    version = str(request.option("to") or "") if rollback else request.words[0]
    reason = "asked for with --to" if version else ""
    if rollback and not version:
        version, reason = marks.rollback_choice(env, current)
        if not version:
            raise Refused(f"no earlier successful deploy of {env.name} to go back to; pass --to=VERSION ({reason})")
    check_version(env, version)
    os.makedirs(env.state_dir, mode=0o700, exist_ok=True)  # for the lock's probe
    print(f"current={current or 'none'}\ntarget={version}")
    if rollback:
        print(f"rollback={reason}")
    mark = marks.bad(env).get(version)
    if mark:
        print(f"marked=bad: {marks.described(mark)}")
    expected = str(request.option("expect", ""))
    try:
        expect.check(expected, env.conf_path, env.name)
        print("server_side=" + ("current" if expected else "not checked"))
    except Refused as outdated:
        print(f"server_side=outdated: {outdated}")
    holder = Lock(env.state_dir).busy()
    print(f"busy={holder.split(' ', 1)[-1] if holder else 'no'}")
    why = None if rollback else deploy_refusal(env, version, request.option("order"), bool(request.option("force")))
    if rollback:
        print("order=ok (a rollback goes back whatever the order)")
    elif why:
        print(f"order=refused: {why}")
    elif version == current:
        print("order=ok (already deployed: a deploy would start it again)")
    else:
        print(f"order=ok ({env['ORDERING']})")
    maintenance, skip_migrate = bool(request.option("maintenance")), bool(request.option("skip-migrate"))
    kind = "rollback" if rollback else "deploy"
    point = restore_plan(env, version) if rollback and request.option("restore-db") and not skip_migrate else None
    restore = point.path if point else ""
    print(f"steps={' '.join(deploy_steps(env, maintenance, skip_migrate, kind, version, restore))}")
    from . import roles

    for line in roles.plan_lines(env, version):
        print(f"role={line}")
    from . import tls

    if tls.enabled(env):
        print(f"tls={tls.plan_line(env)}")
    for kind, key in (("before", "HOOK_BEFORE_SWITCH"), ("after", "HOOK_AFTER_SWITCH")):
        print("\n".join(f"hooks_{kind}={hook}" for hook in env[key] or [""]))
    print(f"estimate={_estimate(env)}")
    sys.stdout.flush()
    if rollback and request.option("restore-db"):
        print("unapply=none (--restore-db: the backup replaces the database)")
    elif rollback:
        unapply_plan(env, version, current, skip_migrate)
    else:
        print("\n".join(plan_migrations(env, version, skip_migrate)))
    return Result(0, {"current": current, "target": version})
