#!/usr/bin/env python3
"""A userspace TCP relay for scripts/sandbox-hosts.

Every connection made to LISTEN is forwarded to CONNECT, both ways, keeping
half-closes. With --delay-ms, each chunk is held back that long before it is
passed on (in each direction), without limiting throughput: a slow link for
benchmarks, on a kernel that has no netem.

    sandbox_relay.py --listen HOST:PORT --connect HOST:PORT --pidfile FILE [--delay-ms MS]

The pid file is written once the socket listens, so its presence means ready;
SIGTERM or SIGINT stops the relay and removes it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
from pathlib import Path

CHUNK = 65536
CONNECT_TIMEOUT = 10.0


def address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def no_delay(writer: asyncio.StreamWriter) -> None:
    """Small SSH packets go out at once instead of waiting for Nagle."""
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copies reader to writer; each chunk (and the end of stream) arrives `delay` seconds late."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(CHUNK)
            queue.put_nowait((loop.time() + delay, data))
            if not data:
                break
        await sender
    finally:
        sender.cancel()


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def relay(
    client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter, target: tuple[str, int], delay: float
) -> None:
    try:
        upstream_reader, upstream_writer = await asyncio.wait_for(asyncio.open_connection(*target), CONNECT_TIMEOUT)
    except (TimeoutError, OSError):
        await close(client_writer)
        return
    no_delay(client_writer)
    no_delay(upstream_writer)
    tasks = [
        asyncio.create_task(pipe(client_reader, upstream_writer, delay)),
        asyncio.create_task(pipe(upstream_reader, client_writer, delay)),
    ]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in pending:
            task.cancel()
        for task in done:
            task.exception()  # a reset connection ends this relay, nothing else
    finally:
        await close(upstream_writer)
        await close(client_writer)


def write_pidfile(path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(f"{os.getpid()}\n")
    tmp.replace(path)


async def serve(listen: tuple[str, int], target: tuple[str, int], delay: float, pidfile: Path) -> None:
    server = await asyncio.start_server(
        lambda r, w: relay(r, w, target, delay), listen[0], listen[1], reuse_address=True
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    write_pidfile(pidfile)
    try:
        await stop.wait()
    finally:
        server.close()
        with contextlib.suppress(OSError):
            if pidfile.read_text().strip() == str(os.getpid()):
                pidfile.unlink()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", type=address, required=True, help="HOST:PORT to listen on")
    parser.add_argument("--connect", type=address, required=True, help="HOST:PORT every connection is forwarded to")
    parser.add_argument("--pidfile", type=Path, required=True, help="written once listening")
    parser.add_argument(
        "--delay-ms", type=float, default=0.0, help="hold each chunk back this long, in each direction (default 0)"
    )
    args = parser.parse_args(argv)
    if args.delay_ms < 0:
        parser.error("--delay-ms must not be negative")
    try:
        asyncio.run(serve(args.listen, args.connect, args.delay_ms / 1000, args.pidfile))
    except OSError as error:
        print(f"sandbox_relay: cannot listen on {args.listen[0]}:{args.listen[1]}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
