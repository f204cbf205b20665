"""Secrets as data: KEY=VALUE lines read, checked and compared; never printed.

An environment's secrets come from `secrets/ENV.env.age` (age-encrypted, in the
repository) or from `secrets_command:` (any command printing KEY=VALUE lines: 1Password's
`op inject`, `vault kv get`, `sops -d`). `inv secrets.push` sends them to the server's
`.env`, which keeps everything else (VERSION, IMAGE, the first setup's values). No I/O here:
the text comes in, names and checked values go out, and errors never quote a value.
"""

from __future__ import annotations

import hashlib
import io

from pushdeploy import protocol

NAME, RESERVED = protocol.SECRET_NAME_RE, protocol.SECRET_RESERVED  # one source: protocol.sh


class BadSecrets(ValueError):
    """What is wrong, by name and line, never by value."""


def parse(text: str, where: str) -> dict[str, str]:
    """KEY=VALUE lines (blank lines and # comments allowed; a value may be quoted, as dotenv
    reads it) -> {KEY: VALUE}, checked: names ^[A-Z_][A-Z0-9_]*$, not VERSION or IMAGE,
    no value with a newline, no name twice."""
    from dotenv import dotenv_values

    parsed = dotenv_values(stream=io.StringIO(text))
    for name, value in parsed.items():
        if value is not None and ("\n" in value or "\r" in value):
            shown = name if NAME.match(name) else "a variable"
            raise BadSecrets(f"{where}: the value of {shown} has a newline: .env takes one line per variable")
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if "=" not in stripped:
            raise BadSecrets(f"{where} line {number}: not KEY=VALUE (the line is not shown: it may hold a secret)")
        name = stripped.removeprefix("export ").split("=", 1)[0].strip()
        if not NAME.match(name):
            raise BadSecrets(f"{where} line {number}: {name[:40]!r} is not a name: use {NAME.pattern}")
        if name in RESERVED:
            raise BadSecrets(f"{where} line {number}: {name} is set by the deploy itself, not by a secret")
        if name in values:
            raise BadSecrets(f"{where} line {number}: {name} is set twice")
        value = parsed.get(name)
        if value is None:
            raise BadSecrets(f"{where}: {name} has no value (write {name}= for an empty one)")
        values[name] = value
    return values


def lines(values: dict[str, str]) -> str:
    """What `env-push` reads: one KEY=VALUE line each, then the checksum line."""
    from pdserver.envpush import TRAILER  # the server's own framing (imported only for a push)

    body = "".join(f"{name}={value}\n" for name, value in sorted(values.items()))
    return body + f"{TRAILER}{hashlib.sha256(body.encode()).hexdigest()}\n"


def diff(before: dict[str, str], after: dict[str, str]) -> tuple[list[str], list[str], list[str]]:
    """(added, changed, removed) names."""
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(name for name in set(before) & set(after) if before[name] != after[name])
    return added, changed, removed
