"""Copying one environment's database into another's (`inv db.refresh`), through this machine's memory.

The dump goes from the source host's `db-dump` channel straight into the target
host's `db-restore` channel (the same host works alike: two channels), a chunk
at a time: it is never written to this machine's disk. A SHA-256 trailer lets
the target tell a whole dump from one cut short before it changes anything.

The source names the release its data is of (a data line on its stderr); that line
follows the dump, under the checksum: the target migrates and scrubs the data with
that release (one production ran), never with whatever the target's deploy account
last deployed there.
"""

from __future__ import annotations

import codecs
import hashlib
import threading

from pushdeploy import protocol

CHUNK = 256 * 1024
TRAILER = b"\npushdeploy-sha256:%s\n"  # 84 bytes with the digest: pdserver/refresh.py TRAILER_BYTES


DATA_VERSION = b"\npushdeploy-data-version:%s\n"


def trailer(digest: str) -> bytes:
    return TRAILER % digest.encode()


def data_version_line(version: str) -> bytes:
    """What follows the dump when the source named its data's release (checked by the target)."""
    if not protocol.matches(protocol.VERSION_RE, version):
        return b""
    return DATA_VERSION % version.encode()


def dump_command(env: str, *, fresh: bool) -> str:
    """``db-dump ENV [--fresh]`` (admin only)"""
    return protocol.command("db-dump", env, fresh=fresh)


def restore_command(env: str, *, source: str, by: str, url: str = "") -> str:
    """``db-restore ENV --from=SOURCE --by=WHO [--url=BUILD_URL]`` (admin only)"""
    return protocol.command("db-restore", env, **{"from": source}, by=by, url=url or None)


def _pump_output(channel, writer, stderr: bool = False) -> None:
    decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
    read = channel.recv_stderr if stderr else channel.recv
    while data := read(32768):
        writer.write(decode(data))
    writer.write(decode(b"", final=True))
    writer.flush()


def stream(source_transport, dump: str, target_transport, restore: str, source_out, target_out) -> tuple[int, int, int]:
    """Run dump on the source and restore on the target, the first's stdout into the second's stdin.

    Returns (source exit code, target exit code, bytes sent). If the source fails,
    the target gets no trailer and refuses what it received.
    """
    target = target_transport.open_session()
    target.set_combine_stderr(True)
    target.exec_command(restore)
    target_reader = threading.Thread(target=_pump_output, args=(target, target_out), daemon=True)
    target_reader.start()

    source = source_transport.open_session()
    source.exec_command(dump)
    source_errors = threading.Thread(target=_pump_output, args=(source, source_out, True), daemon=True)
    source_errors.start()

    digest, sent, target_alive = hashlib.sha256(), 0, True
    while data := source.recv(CHUNK):
        digest.update(data)
        sent += len(data)
        try:
            target.sendall(data)
        except OSError:  # the target refused (busy, bad request) and closed its side
            target_alive = False
            break
    if not target_alive:
        source.close()
    source_code = source.recv_exit_status() if target_alive else -1
    source_errors.join(timeout=10)
    if target_alive:
        try:
            if source_code == 0 and sent:
                data = data_version_line(getattr(source_out, "result", {}).get("data_version", ""))
                digest.update(data)
                target.sendall(data + trailer(digest.hexdigest()))
            target.shutdown_write()
        except OSError:
            pass
    target_reader.join()
    return source_code, target.recv_exit_status(), sent
