"""The deploy history each host keeps (one JSON object a line), as a table."""

from __future__ import annotations

import json
from collections.abc import Iterable

COLUMNS = ("time", "kind", "version", "previous", "outcome", "duration", "by", "digest")


def parse(lines: Iterable[str]) -> list[dict]:
    records = []
    for line in lines:
        line = line.strip()
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


def _cell(record: dict, column: str) -> str:
    if column == "mark":  # a mark's reason; on a deploy of a release marked bad, the mark
        if record.get("kind") == "mark":
            return str(record.get("reason", ""))
        return f"BAD: {record['bad']}" if record.get("bad") else ""
    if column == "outcome" and record.get("kind") == "mark":
        return f"marked {record.get('mark', '?')}"
    value = record.get(column, "")
    if column == "outcome" and value != "ok" and record.get("failed_step"):
        return f"{value} at {record['failed_step']}"
    if column == "duration" and value != "":
        return f"{float(value):.1f}s"
    if column == "digest":  # the image the tag named then: a moved tag shows as a new digest
        return str(value)[:19]
    return str(value)


def table(records: list[dict]) -> str:
    if not records:
        return "no deploys yet"
    # A mark column only when a release is marked: the server adds "bad" to its deploys.
    columns = COLUMNS + (("mark",) if any(r.get("kind") == "mark" or r.get("bad") for r in records) else ())
    rows = [list(columns)] + [[_cell(r, c) for c in columns] for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip() for row in rows
    )
