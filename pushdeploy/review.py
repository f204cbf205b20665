"""Review environments: from a review template and a pull request number to names, URLs,
request lines, and the choice of what to prune. No I/O here.

A review template is an environment with ``review_template: true`` in invoke.yaml.
The server makes ``TEMPLATE-N`` from it (scripts/server/lib/pdserver/review.py): the
template's project and app directory with ``-N`` appended, its own database, and
the host name ``pr-N.DOMAIN`` on the shared front proxy. The functions here
compute the same names, so the client refuses what the server would refuse.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from pushdeploy import protocol
from pushdeploy.plan import BadRequest
from pushdeploy.settings import Environment, Settings

_PR = re.compile(r"^[1-9][0-9]{0,5}$")
_AGE = re.compile(r"^([0-9]{1,6})([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_ISO = re.compile(r"^([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})Z")


@dataclass(frozen=True)
class Instance:
    """One review environment, as the server makes it from the template."""

    name: str
    pr: int
    project: str
    app_dir: str
    host: str
    url: str


def template(settings: Settings, name: str | None = None) -> Environment:
    """The review template named, or the only one configured."""
    templates = sorted(n for n, e in settings.environments.items() if e.review_template)
    if name:
        env = settings.environment(name)
        if not env.review_template:
            raise BadRequest(
                f"{name!r} is not a review template (review templates here: {', '.join(templates) or 'none'}); review environments are made only from an environment with review_template: true"
            )
        return env
    if len(templates) != 1:
        raise BadRequest(
            f"{'no' if not templates else 'more than one'} review template in invoke.yaml ({', '.join(templates) or 'add an environment with review_template: true'}): pass --template NAME"
        )
    return settings.environments[templates[0]]


def pr_number(text) -> int:
    """The pull request number, or BadRequest: digits only, no leading zero, at most 6."""
    value = str(text).strip() if text is not None else ""
    if not protocol.matches(_PR, value):
        raise BadRequest(f"--pr {value!r} is not a pull request number (1 to 999999, digits only)")
    return int(value)


def url(env: Environment, pr: int) -> str:
    host = f"pr-{pr}.{env.review_domain}"
    return f"http://{host}/" if env.review_port == 80 else f"http://{host}:{env.review_port}/"


def instance(env: Environment, pr) -> Instance:
    """TEMPLATE-N for pull request pr, with what the server derives from the template."""
    if not env.review_template:
        raise BadRequest(f"{env.name!r} is not a review template")
    number = pr_number(pr)
    name = f"{env.name}-{number}"
    if not protocol.matches(protocol.REVIEW_RE, name) or not protocol.matches(protocol.ENV_RE, name):
        raise BadRequest(f"{name!r} is not a review environment name the server accepts ({protocol.REVIEW_RE.pattern})")
    return Instance(
        name,
        number,
        f"{env.project}-{number}",
        f"{env.app_dir}-{number}",
        f"pr-{number}.{env.review_domain}",
        url(env, number),
    )


# ------------------------------------------------------------------ requests


def up(name: str, version: str, *, by: str, expect: str, url: str = "") -> str:
    """``review-up TEMPLATE-N VERSION --by=WHO [--url=BUILD_URL] --expect=HASH``"""
    return protocol.command("review-up", name, version, by=by, url=url or None, expect=expect)


def down(name: str, *, expect: str) -> str:
    """``review-down TEMPLATE-N --expect=HASH``"""
    return protocol.command("review-down", name, expect=expect)


def listing(template_name: str, *, expect: str) -> str:
    """``review-list TEMPLATE --expect=HASH``"""
    return protocol.command("review-list", template_name, expect=expect)


# ------------------------------------------------------------------ listing and pruning


@dataclass(frozen=True)
class Entry:
    """One line of `review-list`: name, version, created, last deploy, url."""

    name: str
    version: str
    created: float
    last_deploy: str
    url: str

    @property
    def pr(self) -> int:
        return int(self.name.rsplit("-", 1)[1])

    @property
    def last_active(self) -> float:
        """When it last changed: its last deploy, else its creation."""
        match = _ISO.match(self.last_deploy)
        return max(self.created, _epoch(match.group(1))) if match else self.created


def _epoch(iso: str) -> float:
    return float(calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%S")))


def parse_list(lines: Iterable[str]) -> list[Entry]:
    """The tab-separated lines of `review-list`; other lines are ignored."""
    entries = []
    for line in lines:
        fields = line.split("\t")
        if len(fields) != 5 or not protocol.matches(protocol.REVIEW_RE, fields[0]):
            continue
        match = _ISO.match(fields[2])
        if not match:
            continue
        entries.append(Entry(fields[0], fields[1] or "none", _epoch(match.group(1)), fields[3], fields[4]))
    return sorted(entries, key=lambda e: e.pr)


def age_seconds(text: str) -> int:
    """'7d' -> 604800; s, m, h, d and w are understood."""
    match = _AGE.match(str(text).strip())
    if not match:
        raise BadRequest(f"--older-than {text!r} is not an age such as 7d, 36h, 90m or 2w")
    return int(match.group(1)) * _UNITS[match.group(2)]


def select_prune(entries: Iterable[Entry], older_than: int, now: float) -> list[Entry]:
    """The review environments not deployed to (nor made) for older_than seconds."""
    return [e for e in entries if now - e.last_active >= older_than]


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def table(entries: Iterable[Entry], now: float) -> str:
    rows = [("PR", "ENVIRONMENT", "VERSION", "URL", "AGE", "LAST DEPLOY")]
    rows += [(str(e.pr), e.name, e.version, e.url, _age(now - e.created), e.last_deploy) for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in rows
    )
