"""Connecting and running a request, against an in-process SSH server on 127.0.0.1."""

import socket
import threading

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pushdeploy import remote
from pushdeploy.output import Collector
from pushdeploy.settings import Access, Host


def _ed25519_file(path):
    key = Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    )
    path.chmod(0o600)
    return paramiko.Ed25519Key(filename=str(path))


class FakeSSHServer(paramiko.ServerInterface):
    """Accepts one user with one key; answers each command with `answer(channel, command)`."""

    def __init__(self, host_key, user_key, answer):
        self.host_key, self.user_key, self.answer = host_key, user_key, answer
        self.commands, self.offered = [], []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.transports = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(self.host_key)
            self.transports.append(transport)
            try:
                transport.start_server(server=self)
            except (paramiko.SSHException, EOFError, OSError):
                continue  # the client went away: a refused host key, an unusable key file
            self.started(transport)

    def started(self, transport):
        """A client connected (subclasses serve more than exec requests)."""

    def close(self):
        self.listener.close()
        for transport in self.transports:
            transport.close()

    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_publickey(self, username, key):
        self.offered.append(key.get_base64())
        return paramiko.AUTH_SUCCESSFUL if username == "deploy" and key == self.user_key else paramiko.AUTH_FAILED

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel, command):
        self.commands.append(command.decode())
        # Answer once paramiko has confirmed the exec request (it does so after this returns).
        threading.Timer(0.1, self.answer, args=(channel, command.decode())).start()
        return True


def answer_status(channel, command):
    channel.sendall(b"version: 1.4.0\n")
    channel.sendall_stderr("d\xe9j\xe0 vu\n".encode())
    channel.sendall(b"no newline at the end")
    channel.send_exit_status(3)
    channel.close()


@pytest.fixture
def keys(tmp_path):
    return _ed25519_file(tmp_path / "host"), _ed25519_file(tmp_path / "ci"), str(tmp_path / "ci")


@pytest.fixture
def server(keys):
    host_key, user_key, _ = keys
    fake = FakeSSHServer(host_key, user_key, answer_status)
    yield fake
    fake.close()


def pinned(server, key=None):
    key = key or server.host_key
    return Access(known_hosts=f"[127.0.0.1]:{server.port} {key.get_name()} {key.get_base64()}")


def test_a_request_runs_on_the_pinned_host_and_streams_its_output(server, keys):
    host = Host("deploy", "127.0.0.1", server.port)
    out = Collector()
    with remote.connect(host, "deploy", keys[2], pinned(server)) as session:
        code = remote.run(session, "status staging --expect=a.b", out)
    assert server.commands == ["status staging --expect=a.b"]
    assert code == 3
    out.flush()
    assert out.lines == ["version: 1.4.0", "d\xe9j\xe0 vu", "no newline at the end"]


def test_requests_go_out_without_waiting_for_acks(server, keys):
    host = Host("deploy", "127.0.0.1", server.port)
    with remote.connect(host, "deploy", keys[2], pinned(server)) as session:
        sock = session.transport.sock
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_an_unpinned_host_is_refused_before_authenticating(server, keys):
    host = Host("deploy", "127.0.0.1", server.port)
    elsewhere = Access(known_hosts=f"other.example {server.host_key.get_name()} {server.host_key.get_base64()}")
    with pytest.raises(remote.RemoteError, match="is not pinned") as error:
        remote.connect(host, "deploy", keys[2], elsewhere)
    assert not error.value.retryable
    assert server.offered == [] and server.commands == []


def test_a_changed_host_key_stops_with_both_fingerprints(server, keys, tmp_path):
    host = Host("deploy", "127.0.0.1", server.port)
    with pytest.raises(remote.RemoteError, match="HAS CHANGED") as error:
        remote.connect(host, "deploy", keys[2], pinned(server, _ed25519_file(tmp_path / "old")))
    assert not error.value.retryable
    assert server.offered == []


def test_with_a_key_file_only_that_key_is_offered(server, keys, tmp_path, monkeypatch):
    class NoAgent:
        def __init__(self):
            raise AssertionError("ssh-agent asked although a key file is configured")

    monkeypatch.setattr(paramiko.client, "Agent", NoAgent)
    host = Host("deploy", "127.0.0.1", server.port)
    other = _ed25519_file(tmp_path / "other")
    with pytest.raises(remote.RemoteError, match="authentication failed"):
        remote.connect(host, "deploy", str(tmp_path / "other"), pinned(server))
    assert server.offered == [other.get_base64()]


def test_an_unusable_key_file_is_named(server, tmp_path):
    (tmp_path / "broken").write_text("not a key\n")
    with pytest.raises(remote.RemoteError, match="cannot use the SSH key .*broken"):
        remote.connect(Host("deploy", "127.0.0.1", server.port), "deploy", str(tmp_path / "broken"), pinned(server))


def test_a_dropped_connection_is_told_apart_from_an_exit_code(keys):
    host_key, user_key, key_file = keys

    def drop(channel, command):
        channel.sendall(b"step one\n")
        channel.get_transport().close()

    fake = FakeSSHServer(host_key, user_key, drop)
    try:
        with remote.connect(Host("deploy", "127.0.0.1", fake.port), "deploy", key_file, pinned(fake)) as session:
            assert remote.run(session, "deploy staging abc1234", Collector()) == -1
    finally:
        fake.close()


def test_nothing_listening_is_a_retryable_error():
    port = socket.create_server(("127.0.0.1", 0))
    number = port.getsockname()[1]
    port.close()
    with pytest.raises(remote.RemoteError, match="cannot connect") as error:
        remote.connect(Host("deploy", "127.0.0.1", number), "deploy", "", Access(known_hosts=""))
    assert error.value.retryable


class FreezableRelay:
    """A TCP relay to PORT that can stop passing bytes on without closing anything, like a
    path whose NAT entry was dropped: the kernel still accepts, nothing comes back."""

    def __init__(self, port):
        self.target, self.flowing = port, threading.Event()
        self.flowing.set()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                near, _ = self.listener.accept()
            except OSError:
                return
            far = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((near, far), (far, near)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source, sink):
        while True:
            self.flowing.wait()
            try:
                data = source.recv(65536)
            except OSError:
                return
            self.flowing.wait()
            if not data:
                return
            try:
                sink.sendall(data)
            except OSError:
                return

    def close(self):
        self.listener.close()


def test_a_path_that_goes_silent_is_noticed_and_named(keys, monkeypatch):
    """Keepalives sshd must answer: while they are answered a quiet command is left alone;
    once none comes back for QUIET_AFTER, the request ends as a retryable error that says
    the link went quiet and since when (a deploy then reattaches to its run)."""
    host_key, user_key, key_file = keys
    monkeypatch.setattr(remote, "ALIVE_EVERY", 0.1)
    monkeypatch.setattr(remote, "QUIET_AFTER", 0.6)
    started = threading.Event()

    def slow(channel, command):
        channel.sendall(b"step one\n")
        started.set()

        def finish():
            try:
                channel.sendall(b"done\n")
                channel.send_exit_status(0)
                channel.close()
            except OSError:  # the client gave up on a silent path and closed the connection
                pass

        threading.Timer(1.5, finish).start()

    fake = FakeSSHServer(host_key, user_key, slow)
    relay = FreezableRelay(fake.port)
    pins = Access(known_hosts=f"[127.0.0.1]:{relay.port} {host_key.get_name()} {host_key.get_base64()}")
    try:
        with remote.connect(Host("deploy", "127.0.0.1", relay.port), "deploy", key_file, pins) as session:
            out = Collector()
            assert remote.run(session, "deploy staging abc1234", out) == 0  # 1.5 s quiet, keepalives answered
            assert "done" in out.lines
        with remote.connect(Host("deploy", "127.0.0.1", relay.port), "deploy", key_file, pins) as session:
            started.clear()
            threading.Thread(target=lambda: (started.wait(5), relay.flowing.clear()), daemon=True).start()
            with pytest.raises(
                remote.RemoteError, match=r"the link went quiet: no answer to keepalives since "
            ) as error:
                remote.run(session, "deploy staging abc1234", Collector())
            assert error.value.retryable
    finally:
        relay.flowing.set()
        relay.close()
        fake.close()


class FakeBastion(FakeSSHServer):
    """A jump host: lets the user open direct-tcpip channels to PERMITTED (host, port) only,
    and carries their bytes; counts its connections."""

    def __init__(self, host_key, user_key, permitted):
        self.permitted, self.tunnels = permitted, []
        super().__init__(host_key, user_key, answer_status)

    def started(self, transport):
        threading.Thread(target=self._carry, args=(transport,), daemon=True).start()

    def _carry(self, transport):
        while transport.is_active():
            channel = transport.accept(0.2)
            if channel is None:
                continue
            far = socket.create_connection(self.tunnels[-1])
            for a, b in ((channel, far), (far, channel)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source, sink):
        while True:
            try:
                data = source.recv(65536)
                if not data:
                    return
                sink.sendall(data)
            except OSError:
                return

    def check_channel_direct_tcpip_request(self, chanid, origin, destination):
        if tuple(destination) not in self.permitted:
            return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        self.tunnels.append(tuple(destination))
        return paramiko.OPEN_SUCCEEDED


def test_hosts_behind_a_jump_host_share_one_connection_to_it_and_every_key_is_pinned(keys):
    """Two app hosts behind one bastion: one connection to the bastion, a channel each; the
    bastion's key is pinned like any host's (an unpinned one stops before authenticating);
    a destination the bastion does not allow is named."""
    host_key, user_key, key_file = keys
    app = FakeSSHServer(host_key, user_key, answer_status)
    bastion = FakeBastion(host_key, user_key, {("127.0.0.1", app.port)})
    jump = Host("deploy", "127.0.0.1", bastion.port)
    lines = [f"[127.0.0.1]:{port} {host_key.get_name()} {host_key.get_base64()}" for port in (app.port, bastion.port)]
    pins = Access(known_hosts="\n".join(lines))
    remote._HOPS.clear()
    try:
        for _ in range(2):
            host = Host("deploy", "127.0.0.1", app.port, via=(jump,))
            with remote.connect(host, "deploy", key_file, pins) as session:
                out = Collector()
                assert remote.run(session, "status staging", out) == 3 and "version: 1.4.0" in out.lines
        assert len(bastion.transports) == 1 and len(app.transports) == 2 and len(bastion.tunnels) == 2
        with pytest.raises(remote.RemoteError, match=r"could not connect to 127\.0\.0\.1:1: .*permitopen"):
            remote.connect(Host("deploy", "127.0.0.1", 1, via=(jump,)), "deploy", key_file, pins)
        remote._HOPS.clear()
        with pytest.raises(remote.RemoteError, match=rf"host key of \[127\.0\.0\.1\]:{bastion.port} is not pinned"):
            remote.connect(host, "deploy", key_file, Access(known_hosts=lines[0]))
    finally:
        remote._HOPS.clear()
        bastion.close()
        app.close()


def test_the_admin_connection_reads_no_ssh_config_behind_the_pinned_path(server, keys, tmp_path, monkeypatch):
    """Fabric reads ~/.ssh/config on its own: a ProxyJump there would replace the pinned path
    with a gateway that trusts any key, and ForwardAgent would forward the agent. The admin
    connection goes where sshconfig.py said, through the pinned socket, forwarding nothing."""
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh/config").write_text(
        "Host *\n  ProxyJump nobody@127.0.0.9:1\n  ForwardAgent yes\n  IdentityFile ~/.ssh/elsewhere\n  Port 1\n"
    )
    monkeypatch.setenv("HOME", str(tmp_path))
    host = Host("deploy", "127.0.0.1", server.port)
    connection = remote.admin(host, "deploy", keys[2], pinned(server))
    try:
        assert connection.ssh_config == {"hostname": "127.0.0.1"}  # nothing of ~/.ssh/config was read
        assert connection.gateway is False and connection.forward_agent is False
        assert connection.port == server.port and "key_filename" not in connection.connect_kwargs
        assert connection.is_connected and connection.transport.getpeername()[1] == server.port
    finally:
        connection.close()
