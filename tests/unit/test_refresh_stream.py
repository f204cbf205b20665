"""db.refresh's transfer with in-memory channels: the source's bytes reach the target whole,
followed by the checksum trailer only if the source succeeded."""

from __future__ import annotations

import hashlib
import threading

from pushdeploy import refresh
from pushdeploy.output import Collector


class Source:
    def __init__(self, chunks, code=0, errors=b""):
        self.chunks, self.code, self.errors, self.command, self.closed = list(chunks), code, [errors, b""], None, False

    def exec_command(self, command):
        self.command = command

    def recv(self, _size):
        return self.chunks.pop(0) if self.chunks else b""

    def recv_stderr(self, _size):
        return self.errors.pop(0) if self.errors else b""

    def recv_exit_status(self):
        return self.code

    def close(self):
        self.closed = True


class Target:
    def __init__(self, refuse_after=None):
        self.received, self.command, self.refuse_after, self.done = b"", None, refuse_after, threading.Event()
        self.answered = False

    def set_combine_stderr(self, _flag):
        pass

    def exec_command(self, command):
        self.command = command

    def sendall(self, data):
        if self.refuse_after is not None and len(self.received) >= self.refuse_after:
            self.done.set()
            raise OSError("channel closed")
        self.received += data

    def shutdown_write(self):
        self.done.set()

    def recv(self, _size):
        self.done.wait(5)
        if self.answered:
            return b""
        self.answered = True
        return b"restored\n"

    def recv_exit_status(self):
        return 0 if self.received.endswith(b"\n") and b"pushdeploy-sha256:" in self.received else 1


class Transport:
    def __init__(self, channel):
        self.channel = channel

    def open_session(self):
        return self.channel


def run(source, target):
    return refresh.stream(
        Transport(source),
        "db-dump production",
        Transport(target),
        "db-restore staging --from=production",
        Collector(),
        Collector(),
    )


def test_the_dump_arrives_whole_with_its_checksum_and_nothing_else():
    chunks = [b"PGDMP", b"x" * 100_000, b"end"]
    source, target = Source(chunks, errors=b"sending the newest backup\n"), Target()
    assert run(source, target) == (0, 0, 100_008)
    dump = b"".join(chunks)
    assert target.received == dump + refresh.trailer(hashlib.sha256(dump).hexdigest())
    assert source.command == "db-dump production" and target.command == "db-restore staging --from=production"


def test_a_failed_source_sends_no_trailer_so_the_target_refuses_what_it_got():
    source, target = Source([b"PGDMP", b"partial"], code=1), Target()
    assert run(source, target) == (1, 1, 12)
    assert target.received == b"PGDMPpartial"


def test_a_target_that_refuses_stops_the_transfer():
    source, target = Source([b"a" * 10, b"b" * 10, b"c" * 10]), Target(refuse_after=10)
    code, target_code, _ = run(source, target)
    assert code == -1 and target_code == 1 and source.closed


def test_the_release_the_source_names_follows_the_dump_under_the_checksum():
    from pushdeploy import protocol
    from pushdeploy.output import HostWriter

    chunks = [b"PGDMP", b"data"]
    named = protocol.RESULT_PREFIX + '{"data_version": "1.4.0"}\n'
    source, target = Source(chunks, errors=b"sending the newest backup\n" + named.encode()), Target()
    source_out = HostWriter("production h1", grouped=True)
    code = refresh.stream(
        Transport(source), "db-dump production", Transport(target), "db-restore staging", source_out, Collector()
    )
    assert code == (0, 0, 9)
    sent = b"PGDMPdata" + b"\npushdeploy-data-version:1.4.0\n"
    assert target.received == sent + refresh.trailer(hashlib.sha256(sent).hexdigest())
    assert source_out.lines == ["sending the newest backup"]  # the data line is not shown


def test_the_server_takes_the_release_off_the_dump_it_checked(tmp_path, monkeypatch):
    import io
    import sys

    from pdserver import refresh as server_refresh

    sent = b"PGDMPdata" + refresh.data_version_line("1.4.0")
    stream = sent + refresh.trailer(hashlib.sha256(sent).hexdigest())
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stream)))
    found = {}
    assert server_refresh.receive(str(tmp_path / "dump"), found) == 0
    assert (tmp_path / "dump").read_bytes() == b"PGDMPdata" and found == {"data_version": "1.4.0"}
    unnamed = b"PGDMPdata" + refresh.trailer(hashlib.sha256(b"PGDMPdata").hexdigest())
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(unnamed)))
    assert server_refresh.receive(str(tmp_path / "dump"), {}) == 1  # no release named: refused, nothing restored
