"""Reading an environment's settings: /etc/pushdeploy/ENV.conf, KEY=value lines.

Written root-owned by `inv server.setup`; read here without executing anything (a key
may repeat: hooks, manage commands). env.py checks every value.
"""

from __future__ import annotations

import os

from . import facts


def path(env: str, etc: str = facts.ETC) -> str:
    return os.path.join(etc, env + ".conf")


def parse(text: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        values.setdefault(key, []).append(value)
    return values


def read(env: str, etc: str = facts.ETC) -> dict[str, list[str]] | None:
    """The environment's settings, or None when it is not set up here."""
    try:
        with open(path(env, etc)) as file:
            return parse(file.read())
    except FileNotFoundError:
        return None


def value(conf: dict[str, list[str]], key: str, default: str = "") -> str:
    return conf.get(key, [default])[-1]


def environments(etc: str = facts.ETC) -> list[str]:
    """Every environment set up on this server."""
    try:
        names = os.listdir(etc)
    except FileNotFoundError:
        return []
    return sorted(
        name[: -len(".conf")]
        for name in names
        if name.endswith(".conf") and facts.matches(facts.ENV_RE, name[: -len(".conf")])
    )
