"""Django management commands: the allowlist for `inv manage` and the deploy hooks.

No I/O here. Both come from invoke.yaml, are checked once by these functions,
rendered into the root-owned /etc/pushdeploy/ENV.conf by server.setup, and
checked again by the server (scripts/server/lib/pdserver/env.py) with the same rules
from lib/protocol.sh:

- a command's name matches PD_MANAGE_NAME_RE and is not in PD_MANAGE_FORBIDDEN
  (`shell`, `dbshell`, ...: they run whatever they are given);
- every argument is one word of PD_ARG_RE (no spaces, quotes or shell characters);
- for `inv manage`, every argument also matches one of the command's own patterns
  in the allowlist (POSIX ERE, matched whole: ``[a-z_]+`` means ``^([a-z_]+)$``).

A hook is a fixed command line written in invoke.yaml; it is not in the allowlist
(nothing the deploy account sends can name one).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pushdeploy import protocol

NAME_RE = re.compile(protocol.FACTS["PD_MANAGE_NAME_RE"])
FORBIDDEN = tuple(protocol.FACTS["PD_MANAGE_FORBIDDEN"].split())
HOOK_KINDS = ("before_switch", "after_switch")
MAX_HOOK_WORDS = 16
_PATTERN_CHARS = re.compile(r"^[][A-Za-z0-9_.:/@+=|(){},?*^$-]+$")

# What `inv manage` may run when invoke.yaml says nothing: read-only or housekeeping commands.
DEFAULT_COMMANDS: dict[str, list[str]] = {
    "showmigrations": ["--list", "--plan", "[a-z][a-z0-9_]*"],
    "check": [
        "--deploy",
        "--fail-level",
        "--fail-level=(DEBUG|INFO|WARNING|ERROR|CRITICAL)",
        "DEBUG|INFO|WARNING|ERROR|CRITICAL",
        "[a-z][a-z0-9_]*",
    ],
    "clearsessions": [],
    "createcachetable": ["--dry-run"],
}


class Refused(protocol.InvalidRequest):
    """A management command that may not run: the message says why and what may."""


@dataclass(frozen=True)
class Allowed:
    """One command of the allowlist and the patterns its arguments must match."""

    name: str
    patterns: tuple[str, ...] = ()

    def accepts(self, word: str) -> bool:
        return any(re.fullmatch(f"(?:{p})", word) for p in self.patterns)


def check_name(name: str, what: str = "command") -> str:
    if not isinstance(name, str) or not protocol.matches(NAME_RE, name):
        raise Refused(f"{what} {name!r} is not a management command name ({NAME_RE.pattern})")
    if name in FORBIDDEN:
        raise Refused(
            f"`{name}` can never run through pushdeploy: it runs arbitrary code or SQL, or reads or replaces data wholesale ({', '.join(FORBIDDEN)} are refused)"
        )
    return name


def check_word(word: str, what: str) -> str:
    if not isinstance(word, str) or not protocol.matches(protocol.ARG_RE, word):
        raise Refused(
            f"{what}: {word!r} is not a plain word or --option[=value] (no spaces, quotes or shell characters)"
        )
    if protocol.server_request.changes_django_setup(word):
        raise Refused(
            f"{what} does not accept the argument {word!r}: {' and '.join(protocol.server_facts.MANAGE_FORBIDDEN_OPTIONS)} (or a prefix of one) are never passed, whatever the allowlist says"
        )
    return word


def check_pattern(pattern: str, what: str) -> str:
    if not isinstance(pattern, str) or not protocol.matches(_PATTERN_CHARS, pattern):
        raise Refused(f"{what}: {pattern!r} must be a POSIX regex without spaces or backslashes (bash matches it too)")
    try:
        re.compile(pattern)
    except re.error as error:
        raise Refused(f"{what}: {pattern!r} is not a valid regex: {error}") from None
    return pattern


def allowlist(raw: Mapping | None) -> tuple[Allowed, ...]:
    """The `manage_commands` setting ({name: [argument patterns]}) checked, sorted by name."""
    if raw is None:
        raw = DEFAULT_COMMANDS
    if not isinstance(raw, Mapping):
        raise Refused("expected a mapping of command name: [argument patterns]")
    commands = []
    for name, patterns in sorted(raw.items()):
        check_name(name)
        if patterns is None:
            patterns = []
        if isinstance(patterns, str) or not isinstance(patterns, Sequence):
            raise Refused(f"{name}: expected a list of argument patterns (or [] for none)")
        commands.append(Allowed(name, tuple(check_pattern(p, f"{name}") for p in patterns)))
    return tuple(commands)


def hook(line: str, what: str) -> tuple[str, ...]:
    """One hook, "name arg...", as its checked words."""
    words = line.split() if isinstance(line, str) else []
    if not words:
        raise Refused(f"{what}: {line!r} must be a management command with its arguments, e.g. 'check --deploy'")
    if len(words) > MAX_HOOK_WORDS:
        raise Refused(f"{what}: at most {MAX_HOOK_WORDS} words")
    check_name(words[0], what)
    return tuple([words[0], *(check_word(w, what) for w in words[1:])])


def hooks(raw, what: str) -> tuple[tuple[str, ...], ...]:
    """A hooks setting (a list of command lines) checked."""
    if raw is None or raw == "":
        return ()
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, Sequence):
        raise Refused(f"{what}: expected a list of management commands")
    return tuple(hook(line, f"{what}[{i}]") for i, line in enumerate(raw))


def request_words(commands: Sequence[Allowed], name: str, args: Sequence[str]) -> tuple[str, ...]:
    """What `inv manage` may send: the name and arguments, if the allowlist accepts them."""
    check_name(name)
    allowed = {c.name: c for c in commands}
    if name not in allowed:
        raise Refused(
            f"`{name}` is not in this environment's manage_commands (invoke.yaml); allowed: {', '.join(sorted(allowed)) or 'none'}"
        )
    command = allowed[name]
    for word in args:
        check_word(word, f"`{name}`")
        if not command.accepts(word):
            shown = ", ".join(command.patterns) if command.patterns else "no arguments"
            raise Refused(f"`{name}` does not accept the argument {word!r} (manage_commands allows: {shown})")
    return (name, *args)


def conf_values(
    before: Sequence[Sequence[str]], after: Sequence[Sequence[str]], commands: Sequence[Allowed]
) -> dict[str, list[str]]:
    """The values of ENV.conf's list keys: the hooks and the allowlist, one item a line, in order."""
    return {
        "HOOK_BEFORE_SWITCH": [" ".join(h) for h in before],
        "HOOK_AFTER_SWITCH": [" ".join(h) for h in after],
        "MANAGE_COMMAND": [" ".join((c.name, *c.patterns)) for c in commands],
    }


def conf_lines(
    before: Sequence[Sequence[str]], after: Sequence[Sequence[str]], commands: Sequence[Allowed]
) -> list[str]:
    """The lines of ENV.conf that carry the hooks and the allowlist (one item a line, in order)."""
    return [f"{key}={item}" for key, items in conf_values(before, after, commands).items() for item in items]
