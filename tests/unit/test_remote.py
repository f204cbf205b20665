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
                pass  # the client went away: a refused host key, an unusable key file

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
