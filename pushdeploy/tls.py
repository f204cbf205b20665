"""HTTPS at the proxy: the `tls:` setting of an environment (the server serves it: pdserver/tls.py).

    tls:
      certificate: /etc/ssl/pixel/fullchain.pem   # on every host of the environment, read as root
      key: /etc/ssl/pixel/privkey.pem             # root-only there (chmod 600)
      publish: 443        # [ADDRESS:]PORT where the proxy's port 443 is published (default 443)
      redirect: true      # plain HTTP answers 308 to https:// (default); ACME's challenges pass
      hsts: 31536000      # Strict-Transport-Security max-age, seconds (default 0: no header)

The app's nginx server block includes the lines pushdeploy writes: `include
/etc/nginx/pushdeploy/*.conf;` (`include_problem` checks the files a setup installs say so).
Pure: the settings in, checked values out.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Mapping

from pdserver import schema

Tls = collections.namedtuple("Tls", "mode certificate key publish hsts redirect")
OFF = Tls("off", "", "", "443", 0, True)
INCLUDE = "include /etc/nginx/pushdeploy/*.conf;"
KNOWN = ("certificate", "key", "publish", "redirect", "hsts")
MAX_HSTS = 63072000  # two years, the most browsers' preload lists ask for


class TlsError(ValueError):
    """A bad `tls:` setting; the message, 'KEY: problem', says what is expected."""


def parse(raw, key: str, engine: str = "compose", proxy_service: str = "proxy", review_template: bool = False) -> Tls:
    """The environment's HTTPS settings, checked as the server will check them; OFF without `tls:`."""
    if raw in (None, {}, False):
        return OFF
    if not isinstance(raw, Mapping):
        raise TlsError(f"{key}: expected {{certificate: PATH, key: PATH}} (files on the server), got {raw!r}")
    unknown = sorted(set(raw) - set(KNOWN))
    if unknown:
        raise TlsError(f"{key}.{unknown[0]}: unknown setting (known: {', '.join(KNOWN)})")
    if engine != "compose":
        raise TlsError(f"{key}: HTTPS is served by compose environments' proxy (not yet engine: {engine})")
    if review_template:
        raise TlsError(f"{key}: not on a review template (its front proxy serves plain HTTP)")
    if not proxy_service:
        raise TlsError(f"{key}: needs proxy_service, the nginx service that serves HTTPS")
    paths = {}
    for name in ("certificate", "key"):
        value = raw.get(name)
        if not isinstance(value, str) or not re.fullmatch(schema.SERVER_PATH_RE, value):
            raise TlsError(
                f"{key}.{name}: {value!r} must be the absolute path of the {name} on the server "
                f"(e.g. /etc/ssl/APP/{'fullchain.pem' if name == 'certificate' else 'privkey.pem'})"
            )
        paths[name] = value
    publish = str(raw.get("publish", "443"))
    address, _, port = publish.rpartition(":")
    if (
        not re.fullmatch(schema.PUBLISH_RE, publish)
        or not 0 < int(port) < 65536
        or (address and not all(int(part) < 256 for part in address.split(".")))
    ):
        raise TlsError(f"{key}.publish: {publish!r} must be PORT or ADDRESS:PORT (e.g. 443, 127.0.0.1:8443)")
    hsts = raw.get("hsts", 0)
    if isinstance(hsts, bool) or not isinstance(hsts, int) or not 0 <= hsts <= MAX_HSTS:
        raise TlsError(f"{key}.hsts: {hsts!r} must be seconds from 0 (no header) to {MAX_HSTS}, e.g. 31536000")
    redirect = raw.get("redirect", True)
    if not isinstance(redirect, bool):
        raise TlsError(f"{key}.redirect: {redirect!r} must be true or false")
    return Tls("files", paths["certificate"], paths["key"], publish, hsts, redirect)


def include_problem(tls: Tls, app_files: Mapping[str, bytes]) -> str:
    """Why the proxy would not serve HTTPS with these files ('' when it would): none of the
    nginx files a setup installs includes pushdeploy's lines."""
    if tls.mode == "off":
        return ""
    if any(INCLUDE.encode() in " ".join(data.decode(errors="replace").split()).encode() for data in app_files.values()):
        return ""
    return (
        f"tls: is set, but no file under files: includes pushdeploy's HTTPS lines: add `{INCLUDE}` "
        "to your nginx server block (the listen 443, certificate and redirect lines are written there)"
    )
