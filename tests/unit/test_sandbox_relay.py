"""scripts/sandbox_relay.py: the TCP relay and delay proxy of the multi-host sandbox."""

from __future__ import annotations

import socket
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

RELAY = Path(__file__).resolve().parents[2] / "scripts/sandbox_relay.py"


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(65536):
            self.request.sendall(data)
        self.request.shutdown(socket.SHUT_WR)  # the end of stream goes back too


@pytest.fixture
def echo_server():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def relay(echo_server, tmp_path):
    started = []

    def start(delay_ms: float) -> int:
        port, pidfile = free_port(), tmp_path / f"relay-{len(started)}.pid"
        argv = [
            sys.executable,
            str(RELAY),
            "--listen",
            f"127.0.0.1:{port}",
            "--connect",
            f"127.0.0.1:{echo_server}",
            "--pidfile",
            str(pidfile),
            "--delay-ms",
            str(delay_ms),
        ]
        process = subprocess.Popen(argv)
        started.append((process, pidfile))
        deadline = time.monotonic() + 10
        while not pidfile.exists():
            assert process.poll() is None and time.monotonic() < deadline, "the relay did not start"
            time.sleep(0.02)
        assert pidfile.read_text().strip() == str(process.pid)
        return port

    yield start
    for process, pidfile in started:
        process.terminate()
        assert process.wait(timeout=5) == 0
        assert not pidfile.exists()  # removed on SIGTERM


def round_trip(port: int, payload: bytes) -> tuple[bytes, float]:
    """Sends payload, half-closes, reads everything back until the relay passes the end of stream on."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        start = time.monotonic()
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received, time.monotonic() - start


def test_relay_forwards_both_ways_and_passes_half_closes_on(relay):
    payload = bytes(range(256)) * 4096  # 1 MiB, many chunks
    received, _ = round_trip(relay(0), payload)
    assert received == payload


def test_delay_holds_each_direction_back(relay):
    received, took = round_trip(relay(100), b"ping")
    assert received == b"ping"
    assert 0.2 <= took < 1.5  # 100 ms there, 100 ms back


def test_bad_address_is_a_usage_error():
    result = subprocess.run(
        [sys.executable, str(RELAY), "--listen", "nowhere", "--connect", "127.0.0.1:1", "--pidfile", "/dev/null"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "is not HOST:PORT" in result.stderr
