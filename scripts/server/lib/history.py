"""pushdeploy server side: the deploy history, one JSON object a line, read and written with json.

Run by bin/deploy as `python3 -I history.py COMMAND HISTORY [ARGS]` (isolated mode: no
user site, no PYTHON* variables). Commands:
  append HISTORY KEY=VALUE...   add a record; KEY=@FILE takes the value from a file
                                 (steps=@FILE reads "name<TAB>seconds<TAB>ok" lines)
  last HISTORY                   the last record as one readable line
                                 (append also keeps it in HISTORY.last, which
                                 `status` reads without starting Python)
  rollback-target HISTORY VER    the release before VER (see rollback_target)
  median-ok HISTORY N            "SECONDS COUNT": the median duration of the last N ok deploys, or "none"
"""

import json
import os
import sys

NUMBERS = {"duration"}


def read(path):
    if not os.path.exists(path):
        return []
    records = []
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # a torn last line after a crash is skipped, not fatal
    return records


def value_of(key, text):
    if text.startswith("@"):
        with open(text[1:], encoding="utf-8", errors="replace") as stream:
            text = stream.read()
        if key == "steps":
            steps = []
            for line in text.splitlines():
                name, seconds, ok = line.split("\t")
                steps.append({"name": name, "seconds": float(seconds), "ok": ok == "1"})
            return steps
    if key in NUMBERS:
        return float(text)
    return text


def append(path, pairs):
    record = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        record[key] = value_of(key, text)
    with open(path, "a", encoding="utf-8") as stream:
        stream.write(json.dumps(record, ensure_ascii=False) + "\n")
    summary = path + ".last"
    with open(summary + ".tmp", "w", encoding="utf-8") as stream:
        stream.write(one_line(record) + "\n")
    os.replace(summary + ".tmp", summary)


def one_line(r):
    failed = f" at {r['failed_step']}" if r.get("failed_step") else ""
    return f"{r.get('time')} {r.get('kind')} of {r.get('version')} (was {r.get('previous')}): {r.get('outcome')}{failed}, by {r.get('by')}"


def last(path):
    records = read(path)
    print(one_line(records[-1]) if records else "none")


def rollback_target(path, current):
    """Walking back through successful deploys (not rollbacks, so a second rollback
    goes further back, not forward again): the first version older in history
    than the running version's own deploy."""
    seen = False
    for r in reversed(read(path)):
        if r.get("kind") != "deploy" or r.get("outcome") != "ok":
            continue
        version = r.get("version", "")
        if seen and version != current:
            return version
        if version == current:
            seen = True
    return ""


def median_ok(path, limit):
    recent = [
        r.get("duration")
        for r in read(path)
        if r.get("kind") == "deploy" and r.get("outcome") == "ok" and isinstance(r.get("duration"), (int, float))
    ][-limit:]
    durations = sorted(recent)
    if not durations:
        print("none")
        return
    middle = len(durations) // 2
    median = durations[middle] if len(durations) % 2 else (durations[middle - 1] + durations[middle]) / 2
    print(f"{median:.1f} {len(durations)}")


def main(argv):
    command, path = argv[1], argv[2]
    if command == "append":
        append(path, argv[3:])
    elif command == "last":
        last(path)
    elif command == "rollback-target":
        target = rollback_target(path, argv[3])
        if target:
            print(target)
    elif command == "median-ok":
        median_ok(path, int(argv[3]))
    else:
        sys.exit(f"history.py: unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv)
