"""Notifications on the client: the webhook URLs server.setup installs for an environment.

The URLs are secrets: they come from the admin's .env (or environment) as
DEPLOY_<ENV>_WEBHOOKS, go to the server inside the setup bundle only, and are
installed root-only there (PD_ETC/ENV.webhooks, 0600). Error messages name the
item's position, never its text. The server sends (scripts/server/lib/notify.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

KINDS = ("json", "slack")
_HOST = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")


class WebhookError(ValueError):
    """A bad DEPLOY_<ENV>_WEBHOOKS value; the message never contains the URLs."""


def variable(env_name: str) -> str:
    """DEPLOY_<ENV>_WEBHOOKS: the environment's name upper-cased, '-' as '_'."""
    return f"DEPLOY_{env_name.upper().replace('-', '_')}_WEBHOOKS"


def parse(text: str, name: str) -> list[tuple[str, str]]:
    """`[KIND=]URL` items separated by spaces, commas or newlines -> [(kind, url)]; KIND json (default) or slack."""
    hooks = []
    for number, item in enumerate(re.split(r"[\s,]+", text.strip()), 1):
        if not item:
            continue
        kind, url = (
            ("json", item)
            if item.startswith(("http://", "https://"))
            else item.split("=", 1)
            if "=" in item
            else ("", "")
        )
        if kind not in KINDS:
            raise WebhookError(f"{name}: item {number} must be [json=|slack=]http(s)://... (kinds: {', '.join(KINDS)})")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not _HOST.match(parts.netloc) or not url.isprintable():
            raise WebhookError(f"{name}: item {number} is not an http(s) URL with a host (and no user:password@)")
        hooks.append((kind, url))
    return hooks


def for_environment(values: Mapping[str, str], env_name: str) -> list[tuple[str, str]] | None:
    """The environment's webhooks; None when the variable is unset (setup keeps what the server has)."""
    name = variable(env_name)
    if name not in values:
        return None
    return parse(values[name] or "", name)


def server_file(hooks: list[tuple[str, str]]) -> bytes:
    """The server's PD_ETC/ENV.webhooks: one `KIND URL` a line (empty: remove it)."""
    return "".join(f"{kind} {url}\n" for kind, url in hooks).encode()
