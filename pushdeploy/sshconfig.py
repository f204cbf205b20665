"""SSH as users have it: hosts named in an OpenSSH client config, and jump hosts.

``target`` gives a host as invoke.yaml names it its config's ``HostName``, ``Port`` (unless
the host names one), ``IdentityFile`` and ``ProxyJump``; ``hops`` expands that, or the
environment's ``jump:`` (which wins), into the jump hosts in the order they are reached, each
with its own config (``User`` too: the app hosts' accounts are the tool's own, a jump host's
are not), the first hop's own ``ProxyJump`` as well, as OpenSSH does; a loop is refused.
settings.parse_host puts them together. Both take the config as a lookup function; only
``load`` reads a file (paramiko's SSHConfig).
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Callable, Mapping
from pathlib import Path

_HOP = re.compile(
    r"^(?:(?P<user>[a-z_][a-z0-9_.-]{0,31})@)?(?P<host>[A-Za-z0-9._-]+|\[[0-9a-fA-F:]+\])(?::(?P<port>[0-9]{1,5}))?$"
)
DEFAULT_FILE = "~/.ssh/config"

Lookup = Callable[[str], Mapping]


class BadJump(ValueError):
    pass


def no_config(name: str) -> Mapping:
    return {}


def load(path: str, required: bool) -> Lookup:
    """PATH's lookup (paramiko's SSHConfig); no_config when PATH is absent and not REQUIRED."""
    found = Path(path).expanduser()
    if not found.is_file():
        if required:
            raise BadJump(f"{found} does not exist")
        return no_config
    import paramiko

    try:
        config = paramiko.SSHConfig.from_path(str(found))
    except Exception as error:  # paramiko's parse errors
        raise BadJump(f"cannot read {found}: {error}") from None
    return config.lookup


def target(name: str, port: int | None, lookup: Lookup) -> tuple[str, int, tuple[str, ...], str]:
    """(hostname, port, identity files, ProxyJump) of NAME as the config has it."""
    found = lookup(name) or {}
    hostname = str(found.get("hostname") or name)
    if port is None:
        port = int(found.get("port") or 22)
    identities = tuple(
        str(Path(p).expanduser()) for p in found.get("identityfile") or () if Path(p).expanduser().is_file()
    )
    jump = str(found.get("proxyjump") or "")
    return hostname, port, identities, "" if jump.lower() == "none" else jump


def hops(jump: str, lookup: Lookup, seen: list[str], user: Callable[[], str] = getpass.getuser) -> list[tuple]:
    """The jump hosts of JUMP ("[user@]host[:port],..."), in the order they are reached:
    (user, hostname, port, identities, alias) each. SEEN: host:port already on the path."""
    chain: list[tuple] = []
    for number, part in enumerate(p.strip() for p in jump.split(",")):
        match = _HOP.match(part)
        if not match:
            raise BadJump(f"{part!r} is not [user@]host[:port]")
        name, port = match.group("host").strip("[]"), match.group("port")
        if port is not None and not 0 < int(port) < 65536:
            raise BadJump(f"port {port} of {part!r} is out of range")
        hostname, port, identities, own = target(name, None if port is None else int(port), lookup)
        where = f"{hostname}:{port}"
        if where in seen:
            raise BadJump(f"ProxyJump loop: {' -> '.join([*seen, where])}")
        seen.append(where)
        if number == 0 and own:  # the first hop is itself reached through its own jump hosts
            chain += hops(own, lookup, seen, user)
        account = match.group("user") or str((lookup(name) or {}).get("user") or "") or user()
        chain.append((account, hostname, port, identities, name if name != hostname else ""))
    return chain
