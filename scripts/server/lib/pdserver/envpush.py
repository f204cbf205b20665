"""env-push ENV (admin only): an environment's secrets into its .env (`inv secrets.push`).

stdin: KEY=VALUE lines, then "pushdeploy-sha256:HEX" of the lines before it: a push cut
short changes nothing. Each name is checked again (SECRET_NAME_RE, never VERSION or IMAGE,
no value with a newline). The .env keeps every other line byte for byte: names pushed
before and absent now are removed (state/ENV/secrets.names says which came from a push),
the others updated in place or added at the end. Written through a temp file and a rename,
root's alone (0600), under the environment's lock. The answer and the history name what
was added, changed and removed; no value is ever printed or recorded.
"""

from __future__ import annotations

import hashlib
import os
import sys

from . import env as envs
from . import facts, run
from .lock import hold, now_iso
from .request import Refused, Request
from .result import Result

TRAILER = "pushdeploy-sha256:"  # the last line: the checksum of the lines before it (envsecrets.lines writes it)
LIMIT = 1 << 20  # bytes of secrets a push may carry


def received(data: bytes) -> dict:
    """The pushed values, checked; Refused (nothing changed) naming the problem, not a value."""
    text = data.decode("utf-8", "replace")
    body, _, last = text.rstrip("\n").rpartition("\n")
    body = body + "\n" if body else ""
    if last != TRAILER + hashlib.sha256(body.encode()).hexdigest():
        raise Refused("the secrets arrived incomplete or altered (checksum): nothing changed; push again", 1)
    values = {}
    for number, line in enumerate(body.splitlines(), 1):
        name, sep, value = line.partition("=")
        if not sep or not facts.matches(facts.SECRET_NAME_RE, name):
            raise Refused(f"line {number}: not NAME=VALUE with a name matching {facts.SECRET_NAME_RE.pattern}")
        if name in facts.SECRET_RESERVED:
            raise Refused(f"line {number}: {name} is set by the deploy itself, not by a secret")
        if name in values:
            raise Refused(f"line {number}: {name} twice")
        if "\r" in value:
            raise Refused(f"the value of {name} has a carriage return: .env takes one line per variable")
        values[name] = value
    return values


def merged(current: bytes, values: dict, pushed_before: set) -> tuple[bytes, list, list, list]:
    """The new .env and (added, changed, removed) names."""
    lines = current.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    seen, out, changed, removed = set(), [], [], []
    for line in lines:
        name = line.split(b"=", 1)[0].decode("utf-8", "replace") if b"=" in line and not line.startswith(b"#") else ""
        if name in values:
            seen.add(name)
            new = f"{name}={values[name]}".encode()
            if line != new:
                changed.append(name)
            out.append(new)
        elif name and name in pushed_before:
            removed.append(name)
        else:
            out.append(line)
    added = [name for name in sorted(values) if name not in seen]
    out += [f"{name}={values[name]}".encode() for name in added]
    return b"\n".join(out) + b"\n", added, sorted(changed), sorted(removed)


def env_push(request: Request) -> Result:
    env = envs.load_checked(request)
    data = sys.stdin.buffer.read(LIMIT + 1)
    if len(data) > LIMIT:
        raise Refused(f"more than {LIMIT} bytes of secrets: nothing changed")
    values = received(data)
    by = str(request.option("by", ""))
    lock = hold(env.state_dir, "env-push", f"secrets push to {env.name}", by, ".env stays as it is")
    try:
        path = os.path.join(env.app_dir, ".env")
        names_file = os.path.join(env.state_dir, "secrets.names")
        with open(path, "rb") as file:
            current = file.read()
        before = set(envs.read_text(names_file).split())
        text, added, changed, removed = merged(current, values, before)
        if text != current:
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            os.chown(tmp, 0, 0)
            os.replace(tmp, path)
        envs.write_text(names_file, "".join(f"{name}\n" for name in sorted(values)))
        for what, names in (("added", added), ("changed", changed), ("removed", removed)):
            print(f"{what}: {' '.join(names) or '-'}", flush=True)
        if added or changed or removed:
            pairs = [f"time={now_iso()}", f"env={env.name}", "kind=secrets", f"by={by}"]
            pairs += [
                f"{what}={' '.join(names)}"
                for what, names in (("added", added), ("changed", changed), ("removed", removed))
                if names
            ]
            run.lib_module("history").append(env.history, pairs)
            print(
                f"{env.name}'s .env updated: running containers keep the old values until `inv deploy.restart --env {env.name}`",
                flush=True,
            )
        else:
            print(f"{env.name}'s .env already holds these values: nothing changed", flush=True)
        return Result(0, {"added": added, "changed": changed, "removed": removed})
    finally:
        lock.release()
