"""A rollback's --restore-db: the database goes back to the backup taken just before the
deploy that took over from the version brought back (lib/history.py restore_point), for a
rollback past migrations Django cannot unapply, or past a release that damaged data.

Everything written since that backup is lost: said before the run starts (and by `plan`),
and recorded (restored=, lost_since=). The run keeps maintenance on throughout, saves the
data as it is now first (its own backup), and if a later step fails, puts that back.
"""

from __future__ import annotations

import calendar
import collections
import os
import re
import time

from . import env as envs
from . import facts, run
from .request import Refused

_TAKEN = re.compile(r"^([0-9]{8}T[0-9]{6}Z)-")


# The dump, when it was taken (ISO 8601), the version whose deploy took it.
Point = collections.namedtuple("Point", "path taken deployed")


def taken_at(name: str) -> str:
    """The time a backup was taken, from its name (TIME-VERSION.dump), as ISO 8601; or ''."""
    match = _TAKEN.match(os.path.basename(name))
    if not match:
        return ""
    stamp = match.group(1)
    return f"{stamp[0:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[9:11]}:{stamp[11:13]}:{stamp[13:15]}Z"


def choose(env: envs.Env, target: str) -> Point:
    """The backup a rollback to TARGET with --restore-db restores, or Refused (65, nothing
    changed) saying why there is none. The deploy that took over from TARGET names its backup
    (backup=); for a deploy recorded before it did, the dump of TARGET's data taken between
    TARGET's last start and that deploy's end."""
    tools = run.lib_module("history")
    after, since = tools.restore_point(tools.brief(env.history), target)
    if after is None:
        raise Refused(
            f"--restore-db: {target} has not served {env.name} since a deploy replaced it, so no backup holds its data",
            facts.EXIT_OLDER,
        )
    folder = os.path.join(env.state_dir, "backups")
    name = str(after.get("backup", ""))
    if not name:
        window = (since, str(after.get("time", "")))
        found = sorted(
            entry
            for entry in _dumps(folder)
            if entry.endswith(f"-{target}.dump") and window[0] <= taken_at(entry) <= window[1]
        )
        name = found[-1] if found else ""
    if not name:
        raise Refused(
            f"--restore-db: the deploy of {after.get('version')} at {after.get('time')} took no backup "
            f"(backup: was off), so {target}'s data is not kept; roll back without --restore-db",
            facts.EXIT_OLDER,
        )
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise Refused(
            f"--restore-db: {path}, taken before {after.get('version')} was deployed, is no longer kept "
            f"(backup_keep: {env['BACKUP_KEEP']} keeps the newest); nothing to restore {target}'s data from",
            facts.EXIT_OLDER,
        )
    return Point(path, taken_at(name), str(after.get("version", "")))


def statement(point: Point, now: float | None = None) -> str:
    """What a restore loses, said before it starts."""
    ago = ""
    if point.taken:
        seconds = max(
            0,
            int(
                (time.time() if now is None else now)
                - calendar.timegm(time.strptime(point.taken, "%Y-%m-%dT%H:%M:%SZ"))
            ),
        )
        ago = f" ({_duration(seconds)} ago)"
    return (
        f"the database goes back to {os.path.basename(point.path)}, taken at {point.taken or '?'}{ago} before "
        f"{point.deployed} was deployed: everything written since then is LOST (the data as it is now is saved "
        f"first, in a new backup); maintenance mode is on until the rollback ends"
    )


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def _dumps(folder: str) -> list:
    try:
        return [name for name in os.listdir(folder) if name.endswith(".dump")]
    except FileNotFoundError:
        return []
