"""Console output: one line at a time, prefixed with the host, safe across threads."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import TextIO

from pushdeploy.protocol import RESULT_PREFIX

_lock = threading.Lock()


def say(text: str, stream: TextIO | None = None) -> None:
    with _lock:
        print(text, file=stream or sys.stdout, flush=True)


def parse_result(line: str) -> dict:
    """An answer's result line (RESULT_PREFIX + a JSON object) as a dict of strings; {} if it
    is not one. The one place the client reads what a server answered, as data."""
    try:
        value = json.loads(line[len(RESULT_PREFIX) :])
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def is_result(line: str) -> bool:
    return line.startswith(RESULT_PREFIX)


def seconds(value: float) -> str:
    return f"{value:.1f}s"


class HostWriter:
    """A file-like sink for a remote command's output: prefixes every line with the host.

    grouped: hold the lines and print them as one block by release(), so that short
    answers from many hosts (status) read host by host instead of interleaved.
    """

    def __init__(self, prefix: str, stream: TextIO | None = None, grouped: bool = False):
        self.prefix, self.stream, self._partial, self.grouped = prefix, stream, "", grouped
        self.lines: list[str] = []
        self.result: dict = {}  # the answer's result, from its data line (not shown)

    def write(self, data: str) -> int:
        text = self._partial + data
        *complete, self._partial = text.split("\n")
        for line in complete:
            self.line(line.rstrip("\r"))
        return len(data)

    def line(self, text: str) -> None:
        if is_result(text):
            self.result = parse_result(text)
            return
        self.lines.append(text)
        if not self.grouped:
            say(f"{self.prefix} | {text}", self.stream)

    def release(self) -> None:
        """Print a grouped writer's lines, all at once."""
        if self.grouped and self.lines:
            say("\n".join(f"{self.prefix} | {text}" for text in self.lines), self.stream)

    def flush(self) -> None:
        if self._partial:
            self.line(self._partial)
            self._partial = ""


class Timer:
    def __init__(self) -> None:
        self.started = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


class Collector:
    """A silent sink for a remote command's output: its lines and its result, once flushed."""

    def __init__(self) -> None:
        self._buffer, self.lines, self.result = "", [], {}

    def write(self, data: str) -> int:
        self._buffer += data
        return len(data)

    def flush(self) -> None:
        lines = self._buffer.splitlines()
        self.lines = [line for line in lines if not is_result(line)]
        self.result = next((parse_result(line) for line in reversed(lines) if is_result(line)), {})
