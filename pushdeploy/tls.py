"""HTTPS at the proxy: the `tls:` setting of an environment (the server serves it: pdserver/tls.py).

    tls:
      certificate: /etc/ssl/pixel/fullchain.pem   # on every host of the environment, read as root
      key: /etc/ssl/pixel/privkey.pem             # root-only there (chmod 600)
      publish: 443        # [ADDRESS:]PORT where the proxy's port 443 is published (default 443)
      redirect: true      # plain HTTP answers 308 to https:// (default); ACME's challenges pass
      hsts: 31536000      # Strict-Transport-Security max-age, seconds (default 0: no header)

or, in place of certificate and key, a certificate the server obtains and renews (certbot):

      acme:
        domains: [pixel.example.com]   # the names it covers; each reaches this proxy on port 80
        email: ops@example.com         # the ACME account's contact (expiry notices)
        directory: https://...         # the ACME server (default: certbot's, Let's Encrypt)
        ca_bundle: /etc/ssl/acme.pem   # a private ACME server's own CA, on the server (optional)
        first: 10.0.0.11:80            # several hosts: where the others reach the first host's
                                       # proxy on plain HTTP (default: its address, port 80)

The app's nginx server block includes the lines pushdeploy writes: `include
/etc/nginx/pushdeploy/*.conf;` (`include_problem` checks the files a setup installs say so).
Pure: the settings in, checked values out.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Mapping

from pdserver import schema

Tls = collections.namedtuple(
    "Tls",
    "mode certificate key publish hsts redirect domains email directory ca_bundle first",
    defaults=((), "", "", "", ""),
)
OFF = Tls("off", "", "", "443", 0, True)
INCLUDE = "include /etc/nginx/pushdeploy/*.conf;"
KNOWN = ("certificate", "key", "acme", "publish", "redirect", "hsts")
ACME_KNOWN = ("domains", "email", "directory", "ca_bundle", "first")
MAX_HSTS = 63072000  # two years, the most browsers' preload lists ask for


class TlsError(ValueError):
    """A bad `tls:` setting; the message, 'KEY: problem', says what is expected."""


def parse(
    raw,
    key: str,
    engine: str = "compose",
    proxy_service: str = "proxy",
    review_template: bool = False,
    manager_compose: bool = False,
) -> Tls:
    """The environment's HTTPS settings, checked as the server will check them; OFF without `tls:`."""
    if raw in (None, {}, False):
        return OFF
    if not isinstance(raw, Mapping):
        raise TlsError(f"{key}: expected {{certificate: PATH, key: PATH}} (files on the server), got {raw!r}")
    unknown = sorted(set(raw) - set(KNOWN))
    if unknown:
        raise TlsError(f"{key}.{unknown[0]}: unknown setting (known: {', '.join(KNOWN)})")
    if engine == "swarm" and not manager_compose:
        raise TlsError(
            f"{key}: a swarm serves HTTPS at its proxy outside the stack: set manager_compose_files (docs/swarm.md)"
        )
    if engine not in ("compose", "swarm"):
        raise TlsError(f"{key}: HTTPS is served by a compose proxy (not engine: {engine})")
    if not proxy_service:
        raise TlsError(f"{key}: needs proxy_service, the nginx service that serves HTTPS")
    if "acme" in raw and ("certificate" in raw or "key" in raw):
        raise TlsError(f"{key}.acme: either certificate and key (files on the server) or acme, not both")
    acme = parse_acme(raw["acme"], f"{key}.acme") if "acme" in raw else None
    paths = {}
    for name in () if acme else ("certificate", "key"):
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
    if acme and review_template:
        raise TlsError(
            f"{key}.acme: a review template's front serves one certificate for *.review_domain: give it as "
            "certificate and key (a wildcard, e.g. from your DNS provider's ACME client)"
        )
    if acme:
        return Tls("acme", "", "", publish, hsts, redirect, *acme)
    return Tls("files", paths["certificate"], paths["key"], publish, hsts, redirect)


def parse_acme(raw, key: str) -> tuple:
    """`tls.acme`: (domains, email, directory, ca_bundle, first), checked as the server checks them."""
    if not isinstance(raw, Mapping):
        raise TlsError(f"{key}: expected {{domains: [NAME, ...], email: ADDRESS}}, got {raw!r}")
    unknown = sorted(set(raw) - set(ACME_KNOWN))
    if unknown:
        raise TlsError(f"{key}.{unknown[0]}: unknown setting (known: {', '.join(ACME_KNOWN)})")
    domains = raw.get("domains")
    domains = [domains] if isinstance(domains, str) else domains
    if not isinstance(domains, list) or not domains or len(domains) > 20:
        raise TlsError(f"{key}.domains: expected a list of 1 to 20 host names, e.g. [pixel.example.com]")
    for name in domains:
        if not isinstance(name, str) or not re.fullmatch(schema.DOMAIN_RE, name):
            raise TlsError(
                f"{key}.domains: {name!r} is not a host name a certificate can name over HTTP "
                "(lower case, with a dot, no wildcard, no IP address)"
            )
    if len(set(domains)) != len(domains):
        raise TlsError(f"{key}.domains: a name is listed twice")
    email = raw.get("email")
    if not isinstance(email, str) or not re.fullmatch(schema.EMAIL_RE, email):
        raise TlsError(f"{key}.email: {email!r} must be an e-mail address (the ACME account's contact)")
    directory = raw.get("directory", "")
    if not isinstance(directory, str) or not re.fullmatch(f"({schema.ACME_DIRECTORY_RE})?", directory):
        raise TlsError(f"{key}.directory: {directory!r} must be the https:// URL of an ACME directory")
    ca_bundle = raw.get("ca_bundle", "")
    if not isinstance(ca_bundle, str) or not re.fullmatch(f"({schema.SERVER_PATH_RE})?", ca_bundle):
        raise TlsError(f"{key}.ca_bundle: {ca_bundle!r} must be the absolute path of a CA file on the server")
    first = raw.get("first", "")
    if not isinstance(first, str) or not re.fullmatch(f"({schema.PEER_RE})?", first):
        raise TlsError(f"{key}.first: {first!r} must be ADDRESS:PORT (e.g. 10.0.0.11:80)")
    return tuple(domains), email, directory, ca_bundle, first


def across(tls: Tls, hosts: list, key: str) -> Tls:
    """An ACME setting for these hosts (their addresses): on several, where the others reach the
    first host (`first`, default its address and port 80); on one, nobody."""
    if tls.mode != "acme":
        return tls
    if len(hosts) < 2:
        return tls._replace(first="")
    first = tls.first or f"{hosts[0]}:80"
    if first.startswith(("127.", "localhost:", "0.")):
        raise TlsError(
            f"{key}.first: {first} is each host's own loopback (the hosts are reached through a tunnel?): set "
            "tls.acme.first to ADDRESS:PORT, where the other hosts reach the first host's proxy on plain HTTP"
        )
    if not re.fullmatch(schema.PEER_RE, first):
        raise TlsError(
            f"{key}.first: the first host's address {hosts[0]!r} is not one the others can be told: set "
            "tls.acme.first to ADDRESS:PORT, where they reach its proxy on plain HTTP"
        )
    return tls._replace(first=first)


def include_problem(tls: Tls, app_files: Mapping[str, bytes]) -> str:
    """Why the proxy would not serve HTTPS with these files ('' when it would): none of the
    nginx files a setup installs includes pushdeploy's lines."""
    if tls.mode == "off":
        return ""
    if tls.mode == "acme":
        own = sorted(name for name, data in app_files.items() if b"acme-challenge" in data)
        if own:
            return (
                f"tls.acme answers ACME's challenges itself, but {own[0]} has an acme-challenge location of its own "
                "(nginx refuses two): remove it"
            )
    if any(INCLUDE.encode() in " ".join(data.decode(errors="replace").split()).encode() for data in app_files.values()):
        return ""
    return (
        f"tls: is set, but no file under files: includes pushdeploy's HTTPS lines: add `{INCLUDE}` "
        "to your nginx server block (the listen 443, certificate and redirect lines are written there)"
    )
