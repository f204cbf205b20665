"""Pinned host keys: only keys we were given are trusted; trusting a new one is explicit.

Every connection (pushdeploy/remote.py) is a paramiko SSHClient with RejectPolicy
(Fabric, left alone, would accept any key) that knows only the keys loaded here,
from DEPLOY_KNOWN_HOSTS (the lines themselves, handy as a CI secret) or
DEPLOY_KNOWN_HOSTS_FILE (default ~/.ssh/known_hosts).
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from pushdeploy.settings import Access, ConfigError, Host

DEFAULT_FILE = "~/.ssh/known_hosts"


def host_entry(host: Host) -> str:
    """How known_hosts names a host: plain for port 22, else [host]:port."""
    return host.hostname if host.port == 22 else f"[{host.hostname}]:{host.port}"


def known_hosts_path(access: Access) -> Path:
    return Path(access.known_hosts_file or DEFAULT_FILE).expanduser()


def load(access: Access):
    """A paramiko HostKeys with every pinned key."""
    import paramiko

    keys = paramiko.HostKeys()
    path = known_hosts_path(access)
    if access.known_hosts_file or path.is_file():
        try:
            keys.load(str(path))
        except (OSError, paramiko.SSHException) as error:
            raise ConfigError(".env", "DEPLOY_KNOWN_HOSTS_FILE", f"cannot read {path}: {error}") from None
    for number, line in enumerate(access.known_hosts.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line, number)
        except (paramiko.SSHException, ValueError):
            entry = None
        if entry is None:
            raise ConfigError(".env", "DEPLOY_KNOWN_HOSTS", f"line {number} is not a known_hosts line")
        for name in entry.hostnames:
            keys.add(name, entry.key.get_name(), entry.key)
    return keys


def unpinned(hosts, keys) -> list:
    """The hosts and jump hosts (each once, in the order they are reached) with no pinned key
    in KEYS: a connection to any of them would be refused, so work on several hosts checks
    this first instead of changing the hosts it reaches before the one it cannot."""
    seen, missing = set(), []
    for host in hosts:
        for one in (*host.via, host):
            entry = host_entry(one)
            if entry not in seen:
                seen.add(entry)
                if not keys.lookup(entry):
                    missing.append(one)
    return missing


def pinning_problem(hosts, access: Access) -> str:
    """Why work on HOSTS must not start ('' if it may): a host or jump host with no pinned key
    (`inv server.trust` pins them)."""
    missing = unpinned(hosts, load(access))
    if not missing:
        return ""
    others = f" Not pinned either: {', '.join(host_entry(h) for h in missing[1:])}." if missing[1:] else ""
    return f"{unknown_host_message(missing[0], access)}{others} Nothing was changed on any host."


def pin(client, keys) -> None:
    """Make a paramiko SSHClient accept exactly the pinned keys."""
    import paramiko

    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    ours = client.get_host_keys()
    for name in keys.keys():
        for key_type, key in keys[name].items():
            ours.add(name, key_type, key)


def fingerprint(key) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def unknown_host_message(host: Host, access: Access, pinned=None) -> str:
    where = "DEPLOY_KNOWN_HOSTS" if access.known_hosts else str(known_hosts_path(access))
    other = pinned.lookup(host_entry(host)) if pinned is not None else None
    if other:
        return (
            f"HOST KEY OF {host_entry(host)} HAS CHANGED: pinned {', '.join(other.keys())} key(s) in {where}, but the server "
            f"offered another type. Deploy stopped. If the change is legitimate, verify the new fingerprint out of band, "
            f"remove the old line (ssh-keygen -R '{host_entry(host)}' -f FILE) and run `inv server.trust --env ENV`."
        )
    return (
        f"host key of {host_entry(host)} is not pinned in {where}. "
        f"Check the server's fingerprint out of band (on the server: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), "
        f"then pin it with `inv server.trust --env ENV`, or add its known_hosts line to DEPLOY_KNOWN_HOSTS."
    )


def changed_key_message(host: Host, expected, got) -> str:
    return (
        f"HOST KEY OF {host_entry(host)} HAS CHANGED: pinned {fingerprint(expected)}, server offered {fingerprint(got)}. "
        f"Someone may be intercepting the connection, or the server was reinstalled. Deploy stopped. "
        f"If the change is legitimate, verify the new fingerprint out of band, remove the old line "
        f"(ssh-keygen -R '{host_entry(host)}' -f FILE) and run `inv server.trust --env ENV`."
    )


def scan(host: Host, timeout: float = 10.0, sock=None):
    """The host key the server offers (like ssh-keyscan), without authenticating; over
    SOCK if given (a channel through its jump hosts)."""
    import socket

    import paramiko

    sock = sock or socket.create_connection((host.hostname, host.port), timeout=timeout)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    finally:
        transport.close()


def known_hosts_line(host: Host, key) -> str:
    return f"{host_entry(host)} {key.get_name()} {key.get_base64()}"
