"""Cron jobs: the `cron:` setting, checked as the server checks it (pdserver/cron.py).

    cron:
      clear-sessions:
        schedule: "17 3 * * *"     # cron's five fields: *, */N, N, A-B, lists of N and A-B
        command: clearsessions     # a management command the manage allowlist accepts
        policy: forbid             # a run while the previous one runs is skipped; replace: stopped
        hosts: first               # the environment's first host; all: every host

No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pushdeploy import management

from pdserver import cron as server_cron

Job = server_cron.Job
line_of = server_cron.line_of


class CronError(ValueError):
    """A bad `cron:` setting; the message names the key and says what is expected."""


def parse(raw, key: str, allowlist: Sequence[management.Allowed]) -> tuple[Job, ...]:
    if raw in (None, "", {}):
        return ()
    if not isinstance(raw, Mapping):
        raise CronError(f"{key}: expected a mapping of job name: {{schedule, command, policy, hosts}}")
    found = []
    for name, job in sorted(raw.items()):
        where = f"{key}.{name}"
        if not isinstance(name, str) or not server_cron.NAME_RE.match(name):
            raise CronError(f"{where}: a job's name is [a-z][a-z0-9-], at most 32 characters")
        if not isinstance(job, Mapping):
            raise CronError(f"{where}: expected {{schedule: '*/15 * * * *', command: clearsessions}}")
        unknown = sorted(set(job) - {"schedule", "command", "policy", "hosts"})
        if unknown:
            raise CronError(f"{where}.{unknown[0]}: unknown setting (known: schedule, command, policy, hosts)")
        schedule = tuple(str(job.get("schedule") or "").split())
        why = server_cron.schedule_problem(schedule)
        if why:
            raise CronError(f"{where}.schedule: {why}")
        words = str(job.get("command") or "").split()
        if not words:
            raise CronError(f"{where}.command: a management command and its arguments, e.g. clearsessions")
        try:
            management.request_words(allowlist, words[0], words[1:])
        except management.Refused as error:
            raise CronError(f"{where}.command: {error}") from None
        policy, hosts = job.get("policy", "forbid"), job.get("hosts", "first")
        if policy not in server_cron.POLICIES:
            raise CronError(f"{where}.policy: {policy!r} is forbid (skip a run while the last runs) or replace")
        if hosts not in server_cron.HOSTS:
            raise CronError(f"{where}.hosts: {hosts!r} is first (the environment's first host) or all")
        found.append(Job(name, policy, hosts, schedule, tuple(words)))
    return tuple(found)
