"""pushdeploy server side: the deploy history, one JSON object a line, read and written with json.

Run by bin/deploy as `python3 -I history.py COMMAND HISTORY [ARGS]` (isolated mode: no
user site, no PYTHON* variables). Commands:
  append HISTORY KEY=VALUE...   add a record; KEY=@FILE takes the value from a file
                                 (steps=@FILE reads "name<TAB>seconds<TAB>ok" lines)
  last HISTORY                   the last record as one readable line
                                 (append also keeps it in HISTORY.last, which
                                 `status` reads without starting Python)
  rollback-target HISTORY VER    the release before VER (see rollback_choice)
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


HEAVY = ("steps", "log_tail")  # the bulk of a record, which brief() leaves out


def brief(path, keep=False):
    """Every record as read() gives it, without its steps and log tail: what the marks, the
    rollback's choice and the status need. append() keeps them in PATH.brief (KEEP: the
    history's first bytes, the size read so far, and the records), so a reader parses only
    the lines appended since (none, usually) and writes nothing; a history rewritten by hand
    (other first bytes, or shorter) is read whole."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as stream:
            head = stream.read(64).decode("utf-8", "replace")
    except FileNotFoundError:
        return []
    cache = path + ".brief"
    offset, records = 0, []
    try:
        with open(cache, encoding="utf-8") as stream:
            saved = json.load(stream)
        if saved["head"] == head and 0 <= saved["offset"] <= size and isinstance(saved["records"], list):
            offset, records = saved["offset"], saved["records"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if offset == size and (offset or not keep):
        return records
    with open(path, "rb") as stream:
        stream.seek(offset)
        data = stream.read(size - offset)
    whole = data[: data.rfind(b"\n") + 1]  # a line being written is read next time
    for line in whole.splitlines():
        try:
            record = json.loads(line.decode("utf-8", "replace"))
        except ValueError:
            continue  # a torn line after a crash is skipped, as read() does
        if isinstance(record, dict):
            records.append({key: value for key, value in record.items() if key not in HEAVY})
    if not keep:
        return records
    try:
        with open(cache + ".tmp", "w", encoding="utf-8") as stream:
            json.dump({"head": head, "offset": offset + len(whole), "records": records}, stream, ensure_ascii=False)
        os.replace(cache + ".tmp", cache)
    except OSError:
        pass  # the next append tries again; readers parse what is not kept
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
    brief(path, keep=True)
    summary = path + ".last"
    if record.get("kind") in NOT_RUNS:  # the last run's summary stays current
        if os.path.exists(summary):
            os.utime(summary)
        return
    with open(summary + ".tmp", "w", encoding="utf-8") as stream:
        stream.write(one_line(record) + "\n")
    os.replace(summary + ".tmp", summary)


def one_line(r):
    failed = f" at {r['failed_step']}" if r.get("failed_step") else ""
    return f"{r.get('time')} {r.get('kind')} of {r.get('version')} (was {r.get('previous')}): {r.get('outcome')}{failed}, by {r.get('by')}"


NOT_RUNS = ("mark", "secrets")  # records of a mark, and of a secrets push: nothing ran


def last_run(records):
    """The last record of a run (a deploy, a rollback, a refresh...), not of a mark or a push."""
    runs = [r for r in records if r.get("kind") not in NOT_RUNS]
    return runs[-1] if runs else None


def secrets_since_run(records):
    """The names of the secrets pushed since the last run (what the next run applies)."""
    names = set()
    for r in reversed(records):
        if r.get("kind") not in NOT_RUNS:
            break
        if r.get("kind") == "secrets":
            for what in ("added", "changed", "removed"):
                names.update(str(r.get(what, "")).split())
    return sorted(names)


def last(path):
    record = last_run(brief(path))
    print(one_line(record) if record else "none")


SERVING_KINDS = ("deploy", "rollback")


def marks(records):
    """{version: the record of its mark now}: the last word on each version. A rollback
    that ended ok marks the release it undid (what served just before it) bad, unless it
    was asked to keep it good (keep_good=yes: the client's undo of a fleet deploy); a
    `mark` record (inv deploy.mark-bad/mark-good) marks its version bad or good."""
    found, serving = {}, ""
    for r in records:
        kind, version = r.get("kind"), r.get("version", "")
        if kind == "mark" and r.get("mark") in ("bad", "good"):
            found[version] = r
        elif kind in SERVING_KINDS and r.get("outcome") == "ok":
            if kind == "rollback" and serving and serving != version and r.get("keep_good") != "yes":
                found[serving] = {
                    "time": r.get("time", ""),
                    "kind": "mark",
                    "version": serving,
                    "mark": "bad",
                    "by": r.get("by", ""),
                    "reason": f"rolled back to {version}",
                }
            serving = version
    return found


def bad(records):
    """{version: its mark} for the versions marked bad now."""
    return {version: r for version, r in marks(records).items() if r.get("mark") == "bad"}


def describe(mark):
    reason = f": {mark['reason']}" if mark.get("reason") else ""
    return f"marked {mark.get('mark')} by {mark.get('by') or 'someone'} at {mark.get('time', '?')}{reason}"


def rollback_choice(records, current, usable=None):
    """(version, why): the version that served before CURRENT last took over, walking
    back along what actually served (ok deploys and rollbacks, in order) past releases
    marked bad (rolled back included), so a second rollback goes further back, never to
    a release that was rolled back; past versions usable(version) refuses (a version the
    environment no longer accepts). ('', why not) when there is none."""
    timeline = [r.get("version", "") for r in records if r.get("kind") in SERVING_KINDS and r.get("outcome") == "ok"]
    marked = bad(records)
    took_over = max((i for i, version in enumerate(timeline) if version == current), default=len(timeline))
    skipped = {}
    for version in reversed(timeline[:took_over]):
        if version == current or version in skipped:
            continue
        if version in marked:
            skipped[version] = describe(marked[version])
            continue
        if usable is not None and not usable(version):
            skipped[version] = "not a version this environment deploys now"
            continue
        why = f"{version} served before {current or 'the current version'} took over"
        if skipped:
            why += "; passed over " + ", ".join(f"{v} ({reason})" for v, reason in skipped.items())
        return version, why
    if skipped:
        return "", "every release that served before it is marked bad or not deployable: " + ", ".join(skipped)
    return "", f"nothing served before {current or 'the current version'}"


def to_unapply(records, target):
    """The migrations applied here since TARGET last served and not unapplied since, in the
    order they were applied (each deploy records what it applied, each rollback what it
    unapplied); None when TARGET never served here (nothing is known of its schema)."""
    pending, seen = [], False
    for r in records:
        if r.get("outcome") != "ok" or r.get("kind") not in SERVING_KINDS:
            continue
        if r.get("version") == target:
            pending, seen = [], True
            continue
        gone = set(str(r.get("unapplied", "")).split())
        pending = [m for m in pending if m not in gone]
        pending += [m for m in str(r.get("migrations", "")).split() if m not in pending]
    return pending if seen else None


def restore_point(records, target):
    """(the record of the deploy that took over from TARGET when it last served, the time
    TARGET started serving then): the backup that deploy took (its `backup`) holds the data
    as TARGET left it. (None, '') when TARGET never served, or serves still."""
    last, after = None, None
    for r in records:
        if r.get("outcome") != "ok" or r.get("kind") not in SERVING_KINDS:
            continue
        if r.get("version") == target:
            last, after = r, None
        elif last is not None and after is None:
            after = r
    return after, (last or {}).get("time", "")


def rollback_target(path, current):
    """The version a rollback from CURRENT goes back to ('' for none): rollback_choice."""
    return rollback_choice(brief(path), current)[0]


def median_ok(path, limit):
    recent = [
        r.get("duration")
        for r in brief(path)
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
