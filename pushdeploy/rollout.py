"""Rolling deploys across hosts: which hosts go together, and what to undo when a batch fails.

Pure functions (no I/O): the deploy task feeds them settings and the hosts'
answers, and runs what they return.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pushdeploy import protocol

if TYPE_CHECKING:  # settings validates batch sizes with batch_hosts: no import cycle at run time
    from pushdeploy.settings import Host

_SIZE = re.compile(r"^(?:([1-9][0-9]{0,3})|([1-9][0-9]?|100)%)$")
_STARTED = re.compile(r"^\S+ (?:deploy|rollback) of \S+ to \S+ \(running: \S+\)|^==> ")
_NOT_SET_UP = "is not set up on this server"


class BadSelection(ValueError):
    """--hosts names a host the environment does not have; the message lists them."""


def batch_hosts(size: str | int, total: int) -> int:
    """How many hosts a batch holds: a number ("2") or a share of the hosts ("50%", rounded up)."""
    match = _SIZE.match(str(size))
    if not match:
        raise ValueError(f"batch size {size!r} is a whole number (2) or a percentage (25%)")
    if match.group(1):
        return max(1, min(total, int(match.group(1))))
    return max(1, math.ceil(total * int(match.group(2)) / 100))


@dataclass(frozen=True)
class Batch:
    hosts: tuple[Host, ...]
    migrate: bool  # this batch backs up and migrates (the others pass --skip-migrate)


def batches(hosts: Sequence[Host], size: str | int, migrate_on: str) -> list[Batch]:
    """The order of a rolling deploy.

    With `migrate_on: first` (hosts sharing one database) the first host goes
    alone and migrates: a canary whose failure stops everything before any other
    host changes. The rest follow in batches of `size`, without migrating. With
    `each` (a database per host), every batch migrates its own hosts.
    """
    hosts = tuple(hosts)
    if not hosts:
        return []
    if migrate_on == "first":
        first, rest = [Batch(hosts[:1], True)], hosts[1:]
    else:
        first, rest = [], hosts
    n = batch_hosts(size, len(hosts))
    return first + [Batch(rest[i : i + n], migrate_on != "first") for i in range(0, len(rest), n)]


def select(hosts: Sequence[Host], wanted: str | None) -> tuple[Host, ...]:
    """The hosts --hosts names (host or host:port, comma-separated), in the environment's order."""
    if not wanted:
        return tuple(hosts)
    names = [w.strip() for w in wanted.split(",") if w.strip()]
    known = {str(h): h for h in hosts} | {h.hostname: h for h in hosts}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise BadSelection(
            f"--hosts {wanted!r}: no such host {', '.join(unknown) or '(none given)'}; this environment has {', '.join(map(str, hosts))}"
        )
    chosen = {known[n] for n in names}
    return tuple(h for h in hosts if h in chosen)


def _known(version: str | None) -> str | None:
    return version if version and version != "none" else None


def previous_version(result: Mapping[str, str]) -> str | None:
    """The version a host ran before this deploy switched it, from its result (data)."""
    return _known(result.get("previous")) if result.get("outcome") == "ok" else None


def new_version(result: Mapping[str, str]) -> str | None:
    """The version a host switched to (a rollback names it only there), from its result."""
    return result.get("version") or None if result.get("outcome") == "ok" else None


def serving_after_failure(result: Mapping[str, str]) -> str | None:
    """The version a host serves after its deploy failed and undid itself, from its result."""
    return _known(result.get("serving")) if result.get("outcome") == "failed" else None


def reached(output: Iterable[str]) -> bool:
    """Whether a host's deploy started on the server (it printed its first line or a step),
    for a host the client lost contact with: then it finishes or undoes itself there."""
    return any(_STARTED.match(line.strip()) for line in output)


# ------------------------------------------------------------------ the pre-flight


@dataclass(frozen=True)
class Answer:
    """A host's answer to the pre-flight's `status ENV --expect=...`."""

    host: Host
    code: int
    lines: tuple[str, ...] = ()
    message: str = ""  # the client's own error (unreachable, authentication)
    result: Mapping[str, str] = field(default_factory=dict)  # the server's answer as data

    @property
    def version(self) -> str:
        return self.result.get("version", "")


@dataclass(frozen=True)
class Refusal:
    host: Host
    code: int  # the exit code this host stands for
    reason: str


def not_ready(answers: Sequence[Answer], env: str, wait: int = 0) -> list[Refusal]:
    """The hosts a deploy across several hosts must not start with, from the pre-flight.

    One such host stops the whole deploy before any host changes: a host that
    is not set up for the environment, or whose server side or settings are out
    of date (both exit 78), one that cannot be reached, and, unless the deploy
    may --wait, one where another deploy runs (75).
    """
    refusals = []
    for answer in answers:
        said = answer.result.get("error") or answer.message
        if answer.code == 0:
            busy = answer.result.get("deploying", "")
            if busy and not wait:
                refusals.append(
                    Refusal(
                        answer.host,
                        protocol.EXIT_BUSY,
                        f"another deploy runs there ({busy}): wait for it, or pass --wait SECONDS",
                    )
                )
        elif answer.code == protocol.EXIT_OUTDATED or (answer.code == protocol.EXIT_USAGE and _NOT_SET_UP in said):
            refusals.append(
                Refusal(answer.host, protocol.EXIT_OUTDATED, said or f"out of date: run `inv server.setup --env {env}`")
            )
        else:
            refusals.append(Refusal(answer.host, answer.code, said or f"exit {answer.code}"))
    return refusals


def refusal_code(refusals: Sequence[Refusal]) -> int:
    """78 if any host is out of date or not set up (what `inv server.setup` fixes), else the first host's code."""
    codes = [r.code for r in refusals]
    return protocol.EXIT_OUTDATED if protocol.EXIT_OUTDATED in codes else codes[0]


@dataclass(frozen=True)
class Outcome:
    host: Host
    state: str  # switched | failed | unknown | skipped | rolled back | rollback failed | kept (halt)
    version: str = ""
    note: str = ""


def undo(switched: Sequence[tuple[Host, str | None]]) -> tuple[list[tuple[Host, str]], list[Host]]:
    """Hosts already switched when a later batch failed: (host, version to go back to) for
    those that had one, and the hosts with nothing to go back to (their first deploy)."""
    back = [(host, previous) for host, previous in switched if previous]
    stuck = [host for host, previous in switched if not previous]
    return back, stuck


def table(outcomes: Sequence[Outcome]) -> str:
    """The per-host summary at the end of a rolling deploy."""
    rows = [("host", "result", "version", "")] + [(str(o.host), o.state, o.version, o.note) for o in outcomes]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip() for r in rows)
