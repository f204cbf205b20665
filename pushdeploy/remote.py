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
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from pushdeploy import hostkeys
from pushdeploy.output import HostWriter, Timer, say, seconds
from pushdeploy.settings import Access, Host

CONNECT_TIMEOUT = 15
# A path can go silent without a reset (a NAT entry dropped, a VPN gone): every ALIVE_EVERY
# seconds a keepalive that sshd must answer (as OpenSSH's ServerAliveInterval sends); none
# answered for QUIET_AFTER seconds and the connection is closed as lost: noticed within
# ALIVE_EVERY + QUIET_AFTER = 40 s, and a deploy reattaches to its run or ends `unknown`.
ALIVE_EVERY = 10
QUIET_AFTER = 30

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


class Watchdog:
    """Notices a connection whose path went silent: keepalives sshd must answer, in a thread
    of its own; when none is answered for QUIET_AFTER seconds, the transport is closed (what
    waits on it returns) and `quiet_since` says since when nothing came back."""

    def __init__(self, transport):
        self.transport, self.every, self.quiet_after = transport, ALIVE_EVERY, QUIET_AFTER
        self.quiet_since: float | None = None  # time.time() of the last answer, once it went quiet
        self.stopped = threading.Event()
        threading.Thread(target=self._watch, name="pushdeploy-keepalive", daemon=True).start()

    def _watch(self) -> None:
        last = time.time()
        while not self.stopped.wait(self.every) and self.transport.is_active():
            answered = threading.Event()
            threading.Thread(target=self._probe, args=(answered,), daemon=True).start()
            if answered.wait(self.quiet_after) or self.stopped.is_set():
                last = time.time()
                continue
            if self.transport.is_active():
                self.quiet_since = last
                self.transport.close()
            return

    def _probe(self, answered) -> None:
        try:
            self.transport.global_request("keepalive@openssh.com", wait=True)  # sshd answers: request failure
        except Exception:  # the transport closed meanwhile: the waiter sees that itself
            pass
        finally:
            if self.transport.is_active():
                answered.set()

    def stop(self) -> None:
        self.stopped.set()

    def why(self) -> str:
        """What happened, once it went quiet ('' before)."""
        if self.quiet_since is None:
            return ""
        since = time.strftime("%H:%M:%S", time.localtime(self.quiet_since))
        return f"the link went quiet: no answer to keepalives since {since} ({time.time() - self.quiet_since:.0f}s)"


class Session:
    """An open, authenticated connection to one account on one host, watched for silence."""

    def __init__(self, client):
        self.client = client
        self.watchdog = Watchdog(client.get_transport())

    @property
    def transport(self):
        return self.client.get_transport()

    def sftp(self):
        return self.client.open_sftp()

    def close(self) -> None:
        self.watchdog.stop()
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
        if "banner" in str(error) or "No existing session" in str(error):  # connected, and sshd never spoke
            raise RemoteError(
                f"{user}@{host}: no answer from sshd within {CONNECT_TIMEOUT}s of connecting (the path may be silent)",
                retryable=True,
            ) from None
        raise RemoteError(f"{user}@{host}: SSH failed: {error}", retryable=True) from None
    except OSError as error:
        raise RemoteError(
            f"{user}@{host}: cannot connect: {error}; check the address and that sshd runs", retryable=True
        ) from None


def _quiet_paramiko() -> None:
    """paramiko's transport threads log their errors (a banner that never came) as tracebacks
    on stderr when nobody configured logging; our messages say what happened instead."""
    import logging

    logger = logging.getLogger("paramiko")
    if not logger.handlers:  # a handler of the root logger, if someone set one, still gets them
        logger.addHandler(logging.NullHandler())


def stream(host: Host, user: str, key_file: str = "", access: Access | None = None, pinned=None):
    """A byte stream to host's sshd: a TCP connection, or a channel through its jump hosts."""
    if host.via:
        return _tunnel(host, user, key_file, access or Access(), pinned)
    try:
        return _dial(host)
    except OSError as error:
        raise RemoteError(
            f"{user}@{host}: cannot connect: {error}; check the address and that sshd runs", retryable=True
        ) from None


def _login(client, host: Host, user: str, key_file: str, access: Access, sock, pinned) -> None:
    """Authenticate CLIENT to HOST over SOCK, its host key checked against the pinned keys
    only (RejectPolicy). With a key file, only that key is offered; else the ssh config's
    IdentityFile for the host, and ssh-agent; else ssh-agent and ~/.ssh/id_*. Never forwards
    the agent."""
    with _explained(host, user, key_file, access, client):
        try:
            hostkeys.pin(client, pinned if pinned is not None else hostkeys.load(access))
            key = _private_key(key_file) if key_file else None
            client.connect(
                host.hostname,
                host.port,
                user,
                pkey=key,
                key_filename=list(host.identities) if not key and host.identities else None,
                allow_agent=not key,
                look_for_keys=not key and not host.identities,
                sock=sock,
                timeout=CONNECT_TIMEOUT,
            )
        except BaseException:
            client.close()
            sock.close()
            raise


# Jump hosts: one connection to each, shared by every app host behind it (a channel each).
_HOPS: dict = {}
_HOPS_LOCK = threading.Lock()


def _tunnel(host: Host, user: str, key_file: str, access: Access, pinned):
    """A direct-tcpip channel to host's sshd through its jump hosts (host.via), each hop
    reached through the one before, pinned like any host; connections to hops are opened
    once and reused for every host behind them. The jump accounts authenticate with the
    same key as the connection they carry (or their own IdentityFile, from the ssh config)."""
    import paramiko

    with _HOPS_LOCK:
        transport = None
        for number, hop in enumerate(host.via):
            cache = (host.via[: number + 1], key_file)
            client = _HOPS.get(cache)
            if client is None or client.get_transport() is None or not client.get_transport().is_active():
                sock = stream(hop, hop.user) if transport is None else _channel(transport, hop, host.via[number - 1])
                client = paramiko.SSHClient()
                _login(client, hop, hop.user, key_file, access, sock, pinned)
                client.watchdog = Watchdog(client.get_transport())
                _HOPS[cache] = client
            transport = client.get_transport()
    return _channel(transport, host, host.via[-1])


def _channel(transport, host: Host, hop: Host):
    """A channel from HOP (its transport) to host's sshd."""
    import paramiko

    try:
        return transport.open_channel(
            "direct-tcpip", (host.hostname, host.port), ("127.0.0.1", 0), timeout=CONNECT_TIMEOUT
        )
    except (paramiko.SSHException, OSError, EOFError) as error:
        raise RemoteError(
            f"{host}: the jump host {hop.user}@{hop} could not connect to {host.hostname}:{host.port}: "
            f"{error or type(error).__name__}; check that it reaches that address and that its sshd allows TCP "
            f"forwarding there (AllowTcpForwarding, permitopen)",
            retryable=True,
        ) from None


def connect(host: Host, user: str, key_file: str, access: Access, pinned=None) -> Session:
    """An open connection, the host key checked against the pinned keys only (RejectPolicy).

    With a key file, only that key is offered; without one, ssh-agent and ~/.ssh/id_*.
    """
    sock = stream(host, user, key_file, access, pinned)
    import paramiko

    _quiet_paramiko()
    client = paramiko.SSHClient()
    _login(client, host, user, key_file, access, sock, pinned)
    return Session(client)


def admin(host: Host, user: str, key_file: str, access: Access, pinned=None):
    """The admin connection, a Fabric Connection (server.setup pushes the server side
    with it), pinned exactly as the deploy account's: the same known hosts, RejectPolicy."""
    from fabric import Config, Connection
    from paramiko import SSHConfig

    sock = stream(host, user, key_file, access, pinned)
    _quiet_paramiko()
    key = _private_key(key_file) if key_file else None
    connection = Connection(
        host.hostname,
        user=user,
        port=host.port,
        # What the ssh config says was read once, by sshconfig.py, into HOST and the pinned
        # SOCK's hops: Fabric must not read it again (a ProxyJump there would replace SOCK
        # with a gateway of its own that trusts any host key; ForwardAgent would forward).
        config=Config(ssh_config=SSHConfig()),
        gateway=False,
        forward_agent=False,
        connect_timeout=CONNECT_TIMEOUT,
        connect_kwargs={
            "pkey": key,
            "allow_agent": not key,
            "look_for_keys": not key and not host.identities,
            "sock": sock,
            **({"key_filename": list(host.identities)} if not key and host.identities else {}),
        },
    )
    with _explained(host, user, key_file, access, connection.client):
        try:
            hostkeys.pin(connection.client, pinned if pinned is not None else hostkeys.load(access))
            connection.open()
        except BaseException:
            connection.close()
            sock.close()
            raise
    connection.watchdog = Watchdog(connection.transport)  # stops with the transport it watches
    return connection


def run(connection: Session, command: str, writer: HostWriter, data: bytes | None = None) -> int:
    """Run one command, streaming its output (stdout and stderr as they come) through the writer;
    with DATA, that on its stdin, then end of file.

    Its exit code, or -1 if the connection closed before the command ended.
    """
    try:
        channel = connection.transport.open_session()
        channel.set_combine_stderr(True)
        channel.exec_command(command)
        if data is not None:
            channel.sendall(data)
            channel.shutdown_write()
        decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
        while chunk := channel.recv(32768):
            writer.write(decode(chunk))
        writer.write(decode(b"", final=True))
        writer.flush()
        code = channel.recv_exit_status()
    except Exception:
        if connection.watchdog.why():  # closed by the watchdog: say why
            raise RemoteError(connection.watchdog.why(), retryable=True) from None
        raise
    if code == -1 and connection.watchdog.why():
        raise RemoteError(connection.watchdog.why(), retryable=True)
    return code


def capture(connection: Session, command: str, writer: HostWriter, limit: int = 1 << 20) -> tuple[int, bytes]:
    """Run one command keeping its stdout (bytes, up to LIMIT: a secret, never shown) and
    streaming its stderr through the writer, both read to their end: (exit code, stdout)."""
    decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
    kept = bytearray()
    try:
        channel = connection.transport.open_session()
        channel.exec_command(command)
        while True:
            if channel.recv_stderr_ready():
                writer.write(decode(channel.recv_stderr(32768)))
            elif channel.recv_ready():
                kept += channel.recv(32768)
                if len(kept) > limit:
                    channel.close()
                    raise RemoteError(f"more than {limit} bytes on stdout: not what was asked for")
            elif channel.eof_received or channel.closed:  # nothing more will come on either stream
                while channel.recv_ready() or channel.recv_stderr_ready():  # what arrived with the end
                    kept += channel.recv(32768) if channel.recv_ready() else b""
                    if channel.recv_stderr_ready():
                        writer.write(decode(channel.recv_stderr(32768)))
                if len(kept) > limit:
                    raise RemoteError(f"more than {limit} bytes on stdout: not what was asked for")
                break
            else:
                time.sleep(0.02)
        writer.write(decode(b"", final=True))
        writer.flush()
        code = channel.recv_exit_status()
    except RemoteError:
        raise
    except Exception:
        if connection.watchdog.why():
            raise RemoteError(connection.watchdog.why(), retryable=True) from None
        raise
    if code == -1 and connection.watchdog.why():
        raise RemoteError(connection.watchdog.why(), retryable=True)
    return code, bytes(kept)


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
