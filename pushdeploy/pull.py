"""Pull mode on the client: the `pull:` setting, and the versions the server's agent pins.

In pull mode CI only pushes a channel tag (e.g. pixel:production-approved); the
agent on the server deploys whatever image it points to as CHANNEL-<first hex
digits of the digest> (scripts/server/lib/pdserver/agent.py). No I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pushdeploy import protocol

from pdserver import order as server_order
from pdserver import schema

EVERY = schema.KEYS_BY_NAME["PULL_EVERY"]  # its default and range
DEFAULT_EVERY = int(EVERY.default)


class PullError(ValueError):
    """A bad `pull:` setting; the message says what is expected."""


def parse(raw, key: str) -> tuple[str, int]:
    """(channel, every) from the environment's `pull:` value; ("", 60) when absent (push mode).

    Accepts a mapping `{channel: TAG, every: SECONDS}` or just the channel tag.
    """
    if raw in (None, "", {}, False):
        return "", DEFAULT_EVERY
    if isinstance(raw, str):
        raw = {"channel": raw}
    if not isinstance(raw, Mapping):
        raise PullError(f"{key}: expected {{channel: TAG, every: SECONDS}}, got {raw!r}")
    unknown = sorted(set(raw) - {"channel", "every"})
    if unknown:
        raise PullError(f"{key}.{unknown[0]}: unknown setting (known: channel, every)")
    channel = raw.get("channel")
    if not isinstance(channel, str) or not protocol.matches(protocol.CHANNEL_RE, channel):
        raise PullError(
            f"{key}.channel: {channel!r} is not a tag name for the channel ([A-Za-z0-9_-], e.g. production-approved)"
        )
    given = raw.get("every", DEFAULT_EVERY)
    every, why = schema.setting(EVERY, given)
    if why:
        raise PullError(
            f"{key}.every: {given!r} must be whole seconds from {EVERY.low} to {EVERY.high}"
            " (cron checks at most once a minute)"
        )
    return channel, every


def is_pinned(channel: str, version: str) -> bool:
    """A version the agent deployed for this channel (so `deploy.rollback --to` accepts it):
    the server's own rule (pdserver/order.py)."""
    return server_order.is_pinned(channel, version)


def pinned_version(channel: str, digest: str) -> str:
    """The version the agent gives the image with this digest (sha256:HEX)."""
    kind, _, hexdigits = digest.partition(":")
    if kind != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", hexdigits):
        raise PullError(f"{digest!r} is not a sha256 digest")
    return f"{channel}-{hexdigits[: protocol.PIN_HEX]}"
