"""Releases marked bad or good: `mark ENV VERSION bad|good`, what a deploy and the pull
agent refuse, and where a rollback goes. The marks live in the history itself (lib/history.py
reads them: a `mark` record, or a rollback that undid a release), so they have a time, an
author and a reason, and a second rollback walks back along what actually served."""

from __future__ import annotations

import os

from . import env as envs
from . import run
from .lock import now_iso
from .request import Request
from .result import Result


def reason_of(option) -> str:
    """--reason=WORDS: the client joins the reason's words with "+" (one request word)."""
    return str(option or "").replace("+", " ").strip()


def bad(env: envs.Env) -> dict:
    """{version: its mark} for the versions of ENV marked bad now."""
    tools = run.lib_module("history")
    return tools.bad(tools.brief(env.history))


def described(mark: dict) -> str:
    return run.lib_module("history").describe(mark)


def refusal(env: envs.Env, version: str) -> str | None:
    """Why a deploy of VERSION is refused (it is marked bad), or None."""
    mark = bad(env).get(version)
    if mark is None:
        return None
    return (
        f"{version} is {described(mark)}: deploy another version, or `inv deploy.mark-good --env {env.name} "
        f"{version}` first, or pass --force"
    )


def rollback_choice(env: envs.Env, current: str) -> tuple[str, str]:
    """Where a rollback from CURRENT goes, and why (lib/history.py rollback_choice), past
    versions the environment does not accept now (a pinned version once pull mode is off)."""
    from . import plan
    from .request import Refused

    def usable(version: str) -> bool:
        try:
            plan.check_version(env, version)
        except Refused:
            return False
        return True

    tools = run.lib_module("history")
    return tools.rollback_choice(tools.brief(env.history), current, usable)


def mark(request: Request) -> Result:
    """`mark ENV VERSION bad|good`: recorded in the history with who and why."""
    env = envs.load_checked(request)
    version, word = request.words
    reason, by = reason_of(request.option("reason")), str(request.option("by", ""))
    os.makedirs(env.state_dir, mode=0o700, exist_ok=True)
    pairs = {
        "time": now_iso(),
        "env": env.name,
        "kind": "mark",
        "version": version,
        "mark": word,
        "by": by,
        "reason": reason,
        "sudo_user": os.environ.get("SUDO_USER") or "root",
    }
    run.lib_module("history").append(env.history, [f"{k}={v}" for k, v in pairs.items()])
    print(f"{version} is marked {word}{': ' + reason if reason else ''}", flush=True)
    current = envs.current_version(env)
    if word == "bad" and version == current:
        print(f"{version} serves {env.name} now: `inv deploy.rollback --env {env.name}` goes back", flush=True)
    elif word == "bad":
        print(f"a deploy of {version} is refused from now on (unless --force); the pull agent skips it", flush=True)
    return Result(0, {"version": version, "mark": word, "serving": current})
