"""pushdeploy server side: the pull agent's record of its checks, one JSON object a line.

Run by bin/deploy as `python3 -I pull.py COMMAND FILE [ARGS]`. Commands:
  record CHECKS KEY=VALUE...      append one check (time, channel, result, digest, version, message)
  last-digest CHECKS              the digest of the last image the agent tried (deployed, failed or unchanged)
  running-digest HISTORY VERSION  the digest the history recorded for VERSION's last successful deploy
  status CHECKS KEY=VALUE...      pull-status: KEY: VALUE lines, then the last check and the last change
"""

import json
import os
import sys

# `python3 -I` leaves the script's directory off the path: the history's reader is beside it.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from history import read  # noqa: E402

KEEP = 200  # checks kept: a few hours at one a minute
TRIED = ("deployed", "failed", "unchanged")


def record(path, pairs):
    records = read(path)[-(KEEP - 1) :]
    records.append(dict(pair.partition("=")[::2] for pair in pairs))
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as stream:
        for r in records:
            stream.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def last_digest(records):
    for r in reversed(records):
        if r.get("result") in TRIED and r.get("digest"):
            return r["digest"]
    return ""


def running_digest(history, version):
    for r in reversed(history):
        if r.get("version") == version and r.get("outcome") == "ok":
            return r.get("digest", "")
    return ""


def describe(r):
    what = f"{r.get('time', '?')} {r.get('result', '?')}"
    if r.get("version"):
        what += f" {r['version']}"
    return f"{what}: {r.get('message', '')}"


def status(records, pairs):
    lines = [f"{key}: {value}" for key, _, value in (pair.partition("=") for pair in pairs)]
    if not records:
        lines.append("last check: never (the agent has not run yet)")
        return lines
    lines.append("last check: " + describe(records[-1]))
    changes = [r for r in records if r.get("result") in ("deployed", "failed")]
    lines.append("last change: " + (describe(changes[-1]) if changes else f"none in the last {len(records)} checks"))
    return lines


def main(argv):
    command, path = argv[1], argv[2]
    if command == "record":
        record(path, argv[3:])
    elif command == "last-digest":
        print(last_digest(read(path)))
    elif command == "running-digest":
        print(running_digest(read(path), argv[3]))
    elif command == "status":
        print("\n".join(status(read(path), argv[3:])))
    else:
        sys.exit(f"pull.py: unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv)
