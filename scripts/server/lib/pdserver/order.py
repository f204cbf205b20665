"""Refusing to go backwards by accident: the order of versions (ordering: semver) and of
builds (ordering: build). Pure; the state it compares with comes in as values.

Versions compare as `sort -V` (GNU filevercmp) compares them, which the bash deploy
used: tests hold the two to each other on random versions.
"""

from __future__ import annotations

import re

from . import facts


def _order(s: str, pos: int) -> int:
    if pos == len(s):
        return -1
    c = s[pos]
    if c.isdigit():
        return 0
    if c.isascii() and c.isalpha():
        return ord(c)
    if c == "~":
        return -2
    return ord(c) + 256


def _verrevcmp(a: str, b: str) -> int:
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ca, cb = _order(a, i), _order(b, j)
            if ca != cb:
                return ca - cb
            i, j = i + 1, j + 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and j < len(b) and a[i].isdigit() and b[j].isdigit():
            first_diff = first_diff or ord(a[i]) - ord(b[j])
            i, j = i + 1, j + 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def _prefix(s: str) -> str:
    """s without its file suffixes (`.tar.gz`-like: a dot, a letter or ~, letters, digits, ~)."""
    i, prefix_len, n = 0, 0, len(s)
    while i < n:
        i += 1
        prefix_len = i
        while i + 1 < n and s[i] == "." and ((s[i + 1].isascii() and s[i + 1].isalpha()) or s[i + 1] == "~"):
            i += 2
            while i < n and ((s[i].isascii() and s[i].isalnum()) or s[i] == "~"):
                i += 1
    return s[:prefix_len]


def filevercmp(a: str, b: str) -> int:
    """<0, 0 or >0 as GNU's filevercmp (sort -V) orders a and b."""
    if not a or not b:
        return (1 if a else 0) - (1 if b else 0)
    if a[0] == "." or b[0] == ".":
        if a[0] != "." or b[0] != ".":
            return -1 if a[0] == "." else 1
        for special in (".", ".."):
            if a == special or b == special:
                return 0 if a == b else (-1 if a == special else 1)
    pa, pb = _prefix(a), _prefix(b)
    result = _verrevcmp(pa, pb)
    if result or (pa == a and pb == b):
        return result
    return _verrevcmp(a, b)


def sorts_before(a: str, b: str) -> bool:
    """Whether `sort -V` puts a first (equal by version: byte order decides, as sort does)."""
    if a == b:
        return False
    result = filevercmp(a, b)
    return result < 0 or (result == 0 and a.encode() < b.encode())


def version_lt(a: str, b: str) -> bool:
    """Semantic version order: 1.9.0 < 1.10.0, and a pre-release (1.4.0-rc.1) before its release."""
    a_release, _, a_pre = a.partition("-")
    b_release, _, b_pre = b.partition("-")
    if a_release != b_release:
        return sorts_before(a_release, b_release)
    if "-" not in a:
        return False
    if "-" not in b:
        return True
    return sorts_before(a_pre, b_pre)


def is_pinned(channel: str, version: str) -> bool:
    """A version the pull agent pinned (CHANNEL-<digest prefix>): it has no place in any order."""
    return bool(channel) and re.fullmatch(f"{re.escape(channel)}-[0-9a-f]{{{facts.PIN_HEX}}}", version) is not None
