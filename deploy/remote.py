"""Running it: Fabric connections, host keys pinned, output prefixed, hosts in parallel.

This is the only module that imports Fabric (and so paramiko); tasks import it
lazily, inside the task body, so `inv --list` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import paramiko
from fabric import Connection

from deploy import hostkeys
from deploy.output import HostWriter, Timer, say, seconds
from deploy.settings import Access, Host

CONNECT_TIMEOUT = 15
KEEPALIVE_SECONDS = 15  # notices a dead connection while a long step prints nothing


class RemoteError(Exception):
    """Could not reach or talk to a host; the message says what to do."""

    def __init__(self, message: str, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


@dataclass
class HostResult:
    host: Host
    exit_code: int
    seconds: float
    message: str = ""
    output: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def connect(host: Host, user: str, key_file: str, access: Access, pinned=None) -> Connection:
    """An open connection with the host key checked against the pinned keys."""
    kwargs: dict = {"look_for_keys": not key_file, "allow_agent": True}
    if key_file:
        kwargs["key_filename"] = [key_file]
    connection = Connection(host.hostname, user=user, port=host.port, connect_timeout=CONNECT_TIMEOUT, connect_kwargs=kwargs)
    hostkeys.pin(connection.client, pinned if pinned is not None else hostkeys.load(access))
    try:
        connection.open()
    except paramiko.BadHostKeyException as error:
        raise RemoteError(hostkeys.changed_key_message(host, error.expected_key, error.key)) from None
    except paramiko.AuthenticationException:
        raise RemoteError(f"{user}@{host}: authentication failed: check the key ({key_file or 'ssh-agent / ~/.ssh'}) is authorized for {user}") from None
    except paramiko.SSHException as error:
        if "not found in known_hosts" in str(error):
            raise RemoteError(hostkeys.unknown_host_message(host, access, connection.client.get_host_keys())) from None
        raise RemoteError(f"{user}@{host}: SSH failed: {error}", retryable=True) from None
    except (TimeoutError, OSError) as error:
        raise RemoteError(f"{user}@{host}: cannot connect: {error}; check the address and that sshd runs", retryable=True) from None
    connection.transport.set_keepalive(KEEPALIVE_SECONDS)
    return connection


def run(connection: Connection, command: str, writer: HostWriter) -> int:
    """Run one command, streaming its output through the writer; its exit code."""
    result = connection.run(command, warn=True, hide=False, pty=False, in_stream=False, out_stream=writer, err_stream=writer)
    writer.flush()
    return result.exited


def on_hosts(hosts: Sequence[Host], work: Callable[[Host, HostWriter], int], label: Callable[[Host], str] = str) -> list[HostResult]:
    """Run work(host, writer) on every host at once; gather one result per host."""

    def one(host: Host) -> HostResult:
        writer = HostWriter(label(host))
        timer = Timer()
        try:
            code = work(host, writer)
            return HostResult(host, code, timer.elapsed, output=tuple(writer.lines))
        except RemoteError as error:
            writer.line(f"error: {error}")
            return HostResult(host, 255, timer.elapsed, str(error), tuple(writer.lines))

    with ThreadPoolExecutor(max_workers=max(1, min(16, len(hosts)))) as pool:
        return list(pool.map(one, hosts))


def last_line(result: HostResult) -> str:
    """A host's last non-empty output line, for the summary."""
    lines = [line for line in result.output if line.strip()]
    return lines[-1].strip() if lines else result.message


def summary(results: Sequence[HostResult], describe: Callable[[HostResult], str], label: Callable[[Host], str] = str) -> None:
    for result in results:
        state = "ok" if result.ok else f"FAILED (exit {result.exit_code})"
        say(f"{label(result.host)} | {state} in {seconds(result.seconds)}: {describe(result)}")


def run_resumable(connect: Callable[[], Connection], command: str, writer: HostWriter, attempts: int = 3) -> int:
    """Run a request whose server side survives a dropped connection; reattach if it drops.

    A deploy request carries an id: sending it again follows the deploy already
    running (or prints the one that finished) instead of starting another.
    """
    import time

    for attempt in range(1, attempts + 1):
        try:
            with connect() as connection:
                code = run(connection, command, writer)
            if code != -1:
                return code
            reason = "the connection closed before the command ended"
        except (EOFError, OSError, paramiko.SSHException) as error:
            reason = f"connection lost ({error or type(error).__name__})"
        except RemoteError as error:
            if not error.retryable or attempt == attempts:
                raise
            reason = str(error)
        if attempt < attempts:
            writer.line(f"{reason}; reattaching ({attempt}/{attempts - 1})")
            time.sleep(2 * attempt)
    raise RemoteError(f"{reason}; the deploy goes on or rolls back on the server by itself: see `inv deploy.status` and `inv deploy.logs`")
