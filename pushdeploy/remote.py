"""Running it: SSH connections with pinned host keys, output prefixed, hosts in parallel.

This is the only module that talks SSH: the deploy account's one-command
requests over paramiko's SSHClient (one command per request needs no more, and
it starts fastest), the admin's server.setup over a Fabric Connection; both pin
host keys the same way. It imports paramiko only once a connection is wanted
(after opening the TCP connection, so sshd starts its side meanwhile), and tasks
import this module inside the task body, so `inv --list` stays fast.
"""

from __future__ import annotations

import atexit
import codecs
import contextlib
import gc
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from pushdeploy import hostkeys
from pushdeploy.output import HostWriter, Timer, say, seconds
from pushdeploy.settings import Access, Host

CONNECT_TIMEOUT = 15
KEEPALIVE_SECONDS = 15  # notices a dead connection while a long step prints nothing

# The process ends soon after its requests. Without this, the interpreter's exit
# runs full garbage collections over every object of every loaded module
# (paramiko, cryptography, invoke): tens of milliseconds, an eighth of a short request.
atexit.register(gc.freeze)


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
    result: dict = field(default_factory=dict)  # a run's result, as data (deploy, rollback)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class Session:
    """An open, authenticated connection to one account on one host."""

    def __init__(self, client):
        self.client = client

    @property
    def transport(self):
        return self.client.get_transport()

    def sftp(self):
        return self.client.open_sftp()

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _PromptSocket(socket.socket):
    """A TCP socket that acknowledges what it reads at once (TCP_QUICKACK, Linux).

    sshd sends some replies as several small packets (a debug message, then the
    channel confirmation): Nagle on its side holds the next one until we
    acknowledge, and a delayed ACK makes that wait about 40 ms each time.
    """

    def recv(self, *args) -> bytes:
        data = super().recv(*args)
        with contextlib.suppress(OSError):
            self.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)  # the kernel clears it again: re-arm per read
        return data


def _dial(host: Host) -> socket.socket:
    """A TCP connection to host, tuned for SSH's small request/reply packets."""
    raw = socket.create_connection((host.hostname, host.port), timeout=CONNECT_TIMEOUT)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # our own small packets leave without waiting for an ACK
    if not hasattr(socket, "TCP_QUICKACK"):
        return raw
    sock = _PromptSocket(raw.family, raw.type, raw.proto, fileno=raw.detach())
    sock.settimeout(CONNECT_TIMEOUT)
    return sock


def _private_key(key_file: str):
    """The key in key_file, read once as its own type (paramiko would try each type in turn)."""
    import paramiko

    try:
        return paramiko.PKey.from_path(key_file)
    except Exception as error:  # unreadable, encrypted, or a type paramiko does not know
        raise RemoteError(f"cannot use the SSH key {key_file}: {error or type(error).__name__}") from None


@contextlib.contextmanager
def _explained(host: Host, user: str, key_file: str, access: Access, client):
    """Turns paramiko's connection errors into messages that say what to do."""
    import paramiko

    try:
        yield
    except paramiko.BadHostKeyException as error:
        raise RemoteError(hostkeys.changed_key_message(host, error.expected_key, error.key)) from None
    except paramiko.AuthenticationException:
        raise RemoteError(
            f"{user}@{host}: authentication failed: check the key ({key_file or 'ssh-agent / ~/.ssh'}) is authorized for {user}"
        ) from None
    except paramiko.SSHException as error:
        if "not found in known_hosts" in str(error):
            raise RemoteError(hostkeys.unknown_host_message(host, access, client.get_host_keys())) from None
        raise RemoteError(f"{user}@{host}: SSH failed: {error}", retryable=True) from None
    except OSError as error:
        raise RemoteError(
            f"{user}@{host}: cannot connect: {error}; check the address and that sshd runs", retryable=True
        ) from None


def _socket(host: Host, user: str) -> socket.socket:
    try:
        return _dial(host)
    except OSError as error:
        raise RemoteError(
            f"{user}@{host}: cannot connect: {error}; check the address and that sshd runs", retryable=True
        ) from None


def connect(host: Host, user: str, key_file: str, access: Access, pinned=None) -> Session:
    """An open connection, the host key checked against the pinned keys only (RejectPolicy).

    With a key file, only that key is offered; without one, ssh-agent and ~/.ssh/id_*.
    """
    sock = _socket(host, user)
    import paramiko

    client = paramiko.SSHClient()
    with _explained(host, user, key_file, access, client):
        try:
            hostkeys.pin(client, pinned if pinned is not None else hostkeys.load(access))
            key = _private_key(key_file) if key_file else None
            client.connect(
                host.hostname,
                host.port,
                user,
                pkey=key,
                allow_agent=not key,
                look_for_keys=not key,
                sock=sock,
                timeout=CONNECT_TIMEOUT,
            )
        except BaseException:
            client.close()
            sock.close()
            raise
    client.get_transport().set_keepalive(KEEPALIVE_SECONDS)
    return Session(client)


def admin(host: Host, user: str, key_file: str, access: Access, pinned=None):
    """The admin connection, a Fabric Connection (server.setup pushes the server side
    with it), pinned exactly as the deploy account's: the same known hosts, RejectPolicy."""
    from fabric import Connection

    sock = _socket(host, user)
    key = _private_key(key_file) if key_file else None
    connection = Connection(
        host.hostname,
        user=user,
        port=host.port,
        connect_timeout=CONNECT_TIMEOUT,
        connect_kwargs={"pkey": key, "allow_agent": not key, "look_for_keys": not key, "sock": sock},
    )
    with _explained(host, user, key_file, access, connection.client):
        try:
            hostkeys.pin(connection.client, pinned if pinned is not None else hostkeys.load(access))
            connection.open()
        except BaseException:
            connection.close()
            sock.close()
            raise
    connection.transport.set_keepalive(KEEPALIVE_SECONDS)
    return connection


def run(connection: Session, command: str, writer: HostWriter) -> int:
    """Run one command, streaming its output (stdout and stderr as they come) through the writer.

    Its exit code, or -1 if the connection closed before the command ended.
    """
    channel = connection.transport.open_session()
    channel.set_combine_stderr(True)
    channel.exec_command(command)
    decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
    while data := channel.recv(32768):
        writer.write(decode(data))
    writer.write(decode(b"", final=True))
    writer.flush()
    return channel.recv_exit_status()


def on_hosts(
    hosts: Sequence[Host],
    work: Callable[[Host, HostWriter], int],
    label: Callable[[Host], str] = str,
    grouped: bool = False,
) -> list[HostResult]:
    """Run work(host, writer) on every host at once; gather one result per host.

    grouped: each host's output is printed as one block when it is done (for short answers).
    """

    def one(host: Host) -> HostResult:
        writer = HostWriter(label(host), grouped=grouped and len(hosts) > 1)
        timer = Timer()
        try:
            code = work(host, writer)
            return HostResult(host, code, timer.elapsed, output=tuple(writer.lines), result=writer.result)
        except RemoteError as error:
            writer.line(f"error: {error}")
            return HostResult(host, 255, timer.elapsed, str(error), tuple(writer.lines), writer.result)
        finally:
            writer.release()

    with ThreadPoolExecutor(max_workers=max(1, min(16, len(hosts)))) as pool:
        return list(pool.map(one, hosts))


def last_line(result: HostResult) -> str:
    """A host's last non-empty output line, for the summary."""
    lines = [line for line in result.output if line.strip()]
    return lines[-1].strip() if lines else result.message


def summary(
    results: Sequence[HostResult], describe: Callable[[HostResult], str], label: Callable[[Host], str] = str
) -> None:
    for result in results:
        state = "ok" if result.ok else f"FAILED (exit {result.exit_code})"
        say(f"{label(result.host)} | {state} in {seconds(result.seconds)}: {describe(result)}")


def run_resumable(connect: Callable[[], Session], command: str, writer: HostWriter, attempts: int = 3) -> int:
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
        except RemoteError as error:
            if not error.retryable or attempt == attempts:
                raise
            reason = str(error)
        except Exception as error:
            import paramiko  # loaded by connect() by now

            if not isinstance(error, (EOFError, OSError, paramiko.SSHException)):
                raise
            reason = f"connection lost ({error or type(error).__name__})"
        if attempt < attempts:
            writer.line(f"{reason}; reattaching ({attempt}/{attempts - 1})")
            time.sleep(2 * attempt)
    raise RemoteError(
        f"{reason}; the deploy goes on or rolls back on the server by itself: see `inv deploy.status` and `inv deploy.logs`"
    )
