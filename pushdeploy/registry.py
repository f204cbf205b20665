"""A private registry: the `registry:` setting, and the password server.setup logs in with.

    registry:
      server: registry.example.com:5443   # host[:port], as the images name it
      user: deploy-bot
      ca: certs/registry-ca.crt           # optional: a CA of your own (self-hosted registry)

The password never comes from invoke.yaml: DEPLOY_<ENV>_REGISTRY_PASSWORD, else
DEPLOY_REGISTRY_PASSWORD, from the project's .env or the CI's secret store. Unset, a rerun of
server.setup keeps the login the hosts have; set, it logs in again (a rotated password).
No I/O here (local.registry_ca reads the CA file).
"""

from __future__ import annotations

import collections
from collections.abc import Mapping

from pushdeploy import protocol

Registry = collections.namedtuple(
    "Registry", "server user ca"
)  # ca: the CA file's path (relative: the project's), or ""

GENERAL = "DEPLOY_REGISTRY_PASSWORD"
CERTIFICATE = b"-----BEGIN CERTIFICATE-----"


class RegistryError(ValueError):
    """A bad `registry:` setting or password; the message says what is expected."""


def parse(raw, key: str) -> Registry | None:
    """The environment's registry, checked; None when it has none."""
    if raw in (None, "", {}, False):
        return None
    if not isinstance(raw, Mapping):
        raise RegistryError(f"{key}: expected {{server: HOST[:PORT], user: NAME}}, got {type(raw).__name__}")
    unknown = sorted(set(raw) - {"server", "user", "ca"})
    if unknown:
        hint = ": the password goes in DEPLOY_REGISTRY_PASSWORD, never in invoke.yaml" if "password" in unknown else ""
        raise RegistryError(f"{key}.{unknown[0]}: unknown setting (known: server, user, ca){hint}")
    server, user = raw.get("server"), raw.get("user")
    if not isinstance(server, str) or not protocol.matches(protocol.REGISTRY_RE, server):
        raise RegistryError(
            f"{key}.server: {server!r} is not a registry's host[:port] (e.g. ghcr.io, registry.example.com:5443)"
        )
    if not isinstance(user, str) or not protocol.matches(protocol.REGISTRY_USER_RE, user):
        raise RegistryError(f"{key}.user: {user!r} is not a user name ([A-Za-z0-9_.@+-], at most 128)")
    ca = raw.get("ca") or ""
    if not isinstance(ca, str):
        raise RegistryError(f"{key}.ca: expected the path of the registry's CA certificate (PEM)")
    return Registry(server, user, ca)


def ca_problem(data: bytes) -> str:
    """Why DATA is not a CA certificate Docker can read ('' when it is)."""
    return "" if data.lstrip().startswith(CERTIFICATE) else "is not a PEM certificate (-----BEGIN CERTIFICATE-----)"


def variable(env_name: str) -> str:
    """DEPLOY_<ENV>_REGISTRY_PASSWORD: the environment's name upper-cased, '-' as '_'."""
    return f"DEPLOY_{env_name.upper().replace('-', '_')}_REGISTRY_PASSWORD"


def password(values: Mapping[str, str], env_name: str) -> bytes | None:
    """The password to log in with (the environment's own variable first); None when neither
    is set: the hosts keep the login they have."""
    for name in (variable(env_name), GENERAL):
        if name in values:
            value = values[name]
            if not value:
                raise RegistryError(f"{name} is empty: set the registry's password (or token), or unset it")
            if "\n" in value or "\r" in value:
                raise RegistryError(f"{name} holds a line break: a registry password is one line")
            return value.encode()
    return None
