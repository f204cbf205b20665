"""Console output: one line at a time, prefixed with the host, safe across threads."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

_lock = threading.Lock()


def say(text: str, stream: TextIO | None = None) -> None:
    with _lock:
        print(text, file=stream or sys.stdout, flush=True)


def seconds(value: float) -> str:
    return f"{value:.1f}s"


class HostWriter:
    """A file-like sink for a remote command's output: prefixes every line with the host."""

    def __init__(self, prefix: str, stream: TextIO | None = None):
        self.prefix, self.stream, self._partial = prefix, stream, ""
        self.lines: list[str] = []

    def write(self, data: str) -> int:
        text = self._partial + data
        *complete, self._partial = text.split("\n")
        for line in complete:
            self.line(line.rstrip("\r"))
        return len(data)

    def line(self, text: str) -> None:
        self.lines.append(text)
        say(f"{self.prefix} | {text}", self.stream)

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
    """A silent sink for a remote command's output: its lines, once flushed."""

    def __init__(self) -> None:
        self._buffer, self.lines = "", []

    def write(self, data: str) -> int:
        self._buffer += data
        return len(data)

    def flush(self) -> None:
        self.lines = self._buffer.splitlines()
