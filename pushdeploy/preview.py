"""Seeing a deploy before it runs: the server's answer to `plan ENV VERSION`, read and shown.

No I/O here. The server (scripts/server/lib/pdserver/plan.py) answers in ``KEY=value``
lines, one ``migration=`` line per line of Django's ``migrate --plan``; these
functions turn that into a HostPlan, a verdict (would the deploy go ahead, and
if not, with which exit code it would stop) and the lines `inv deploy.plan` prints.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from pushdeploy import protocol

_MIGRATION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*[.][A-Za-z0-9_]+$")
_REPEATED = ("hooks_before", "hooks_after", "migration", "role")


@dataclass(frozen=True)
class HostPlan:
    facts: dict[str, str]
    hooks_before: tuple[str, ...] = ()
    hooks_after: tuple[str, ...] = ()
    django_plan: tuple[str, ...] = ()  # migrate --plan's output, as printed
    other: tuple[str, ...] = field(default=())  # lines that are not KEY=value (errors, warnings)
    roles: tuple[str, ...] = ()  # what the deploy does to each role here, in words

    def get(self, key: str) -> str:
        return self.facts.get(key, "")

    @property
    def migrations(self) -> tuple[str, ...]:
        """The migrations the new image would apply, by name (app.0002_name)."""
        if self.get("migrations") != "planned":
            return ()
        return tuple(
            line.strip()
            for line in self.django_plan
            if _MIGRATION_NAME.match(line.strip()) and not line.startswith(" ")
        )

    @property
    def steps(self) -> tuple[str, ...]:
        return tuple(self.get("steps").split())

    def estimate(self) -> tuple[float, int] | None:
        parts = self.get("estimate").split()
        if len(parts) != 2:
            return None
        try:
            return float(parts[0]), int(parts[1])
        except ValueError:
            return None


def parse(lines: Iterable[str]) -> HostPlan:
    facts: dict[str, str] = {}
    repeated: dict[str, list[str]] = {key: [] for key in _REPEATED}
    other = []
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and key in repeated:
            if value or key == "migration":
                repeated[key].append(value)
        elif sep and re.fullmatch(r"[a-z_]+", key):
            facts[key] = value
        elif line.strip():
            other.append(line)
    return HostPlan(
        facts,
        tuple(repeated["hooks_before"]),
        tuple(repeated["hooks_after"]),
        tuple(repeated["migration"]),
        tuple(other),
        tuple(repeated["role"]),
    )


def verdict(plan: HostPlan) -> tuple[int, str]:
    """(exit code the deploy would stop with, or 0; what a deploy would do, in a few words)."""
    if not plan.get("target"):
        return 1, "no plan: " + ("; ".join(plan.other) or "the server gave no answer")
    if plan.get("server_side").startswith("outdated"):
        return protocol.EXIT_OUTDATED, "would be refused: the server side or settings are out of date"
    if plan.get("order").startswith("refused") and plan.get("marked") and not plan.get("rollback"):
        return protocol.EXIT_OLDER, "would be refused: the release is marked bad"
    if plan.get("order").startswith("refused"):
        return protocol.EXIT_OLDER, "would be refused: older than the deployed version"
    if plan.get("restore").startswith("refused"):
        return protocol.EXIT_OLDER, "would be refused: no backup to restore (see restore)"
    if plan.get("unapply_check") == "irreversible":
        return (
            protocol.EXIT_OLDER,
            "would be refused: a migration to unapply has no reverse",
        )
    if plan.get("unapply_check").startswith("failed"):
        return 1, "would fail: the migrations to unapply could not be checked"
    if plan.get("tls").startswith("refused"):
        return 1, "would fail at preflight: the certificate of tls: cannot be served (see https)"
    if plan.get("busy") not in ("", "no"):
        return protocol.EXIT_BUSY, "would wait or be refused: another deploy is running"
    if plan.get("rollback") and plan.get("restore"):
        return (
            0,
            f"would go back to {plan.get('target')} (now {plan.get('current')}) and restore the database: writes since {plan.get('lost_since') or '?'} are LOST",
        )
    if plan.get("rollback"):
        return 0, f"would go back to {plan.get('target')} (now {plan.get('current')})"
    return 0, f"would deploy {plan.get('target')} (now {plan.get('current')})"


def _migration_lines(plan: HostPlan) -> list[str]:
    state = plan.get("migrations")
    if state != "planned":
        return [f"migrations:  {state or 'unknown'}"] + [f"  {line}" for line in plan.django_plan if line.strip()][-5:]
    names = plan.migrations
    if not names:
        return ["migrations:  none to apply"]
    lines = [f"migrations:  {len(names)} to apply: {', '.join(names)}"]
    lines += [f"  {line}" for line in plan.django_plan if line.strip() and line.strip() != "Planned operations:"]
    return lines


def show(plan: HostPlan) -> list[str]:
    """The lines `inv deploy.plan` prints for one host."""
    code, summary = verdict(plan)
    if not plan.get("target"):
        return [summary]
    order = plan.get("order")
    lines = [
        f"version:     {plan.get('current')} -> {plan.get('target')}",
        *([f"rollback:    {plan.get('rollback')}"] if plan.get("rollback") else []),
        *(
            [f"mark:        {plan.get('target')} is {plan.get('marked').split(': ', 1)[-1]}"]
            if plan.get("marked")
            else []
        ),
        f"order check: {'WOULD REFUSE: ' + order.split(': ', 1)[-1] if order.startswith('refused') else order}",
        f"server side: {'OUT OF DATE: ' + plan.get('server_side').split(': ', 1)[-1] if code == protocol.EXIT_OUTDATED else plan.get('server_side')}",
        f"running now: {'no deploy' if plan.get('busy') == 'no' else plan.get('busy')}",
        f"steps:       {' > '.join(plan.steps)}",
    ]
    if plan.hooks_before or plan.hooks_after:
        lines.append(
            f"hooks:       before_switch: {'; '.join(plan.hooks_before) or '-'}   after_switch: {'; '.join(plan.hooks_after) or '-'}"
        )
    lines += [f"{'roles:' if i == 0 else '':<13}{role}" for i, role in enumerate(plan.roles)]
    if plan.get("tls"):
        tls = plan.get("tls")
        lines.append(f"https:       {'WOULD FAIL: ' + tls[len('refused: ') :] if tls.startswith('refused') else tls}")
    if plan.get("rollback"):
        undo = plan.get("unapply")
        check = {
            "ok": "",
            "irreversible": " (WOULD REFUSE: one has no reverse, see the note; --restore-db restores the backup instead)",
        }.get(plan.get("unapply_check"), f" ({plan.get('unapply_check')})" if plan.get("unapply_check") else "")
        lines.append(f"migrations:  {'none to unapply' if undo in ('', 'none') else 'unapplied first: ' + undo}{check}")
        restore = plan.get("restore")
        if restore.startswith("refused"):
            lines.append(f"restore:     WOULD REFUSE: {restore[len('refused: ') :]}")
        elif restore:
            lines.append(f"restore:     {plan.get('restore_loses') or restore}")
    else:
        lines += _migration_lines(plan)
    estimate = plan.estimate()
    if estimate:
        lines.append(
            f"estimate:    about {estimate[0]:.0f}s (median of the last {estimate[1]} successful deploy(s) here)"
        )
    else:
        lines.append("estimate:    none (no successful deploy here yet)")
    lines += [f"note: {line}" for line in plan.other]
    lines.append(f"verdict:     {summary}")
    return lines
