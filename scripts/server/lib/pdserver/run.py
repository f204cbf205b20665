"""Running commands: the one place the Python server side starts a process.

A command comes in built (compose.py): an argument list, never a shell line, with
the directory it runs in and the variables it adds to ours. subprocess is imported
on first use: most requests start no process, and bin/deploy starts once per request.
"""

from __future__ import annotations

import collections
import os
import sys

Command = collections.namedtuple("Command", "argv cwd environ", defaults=(None, {}))

LIB = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Stopped(BaseException):
    """A TERM or INT reached the deploy's worker: it undoes what it started, records, answers."""


def stop_on(*signums) -> None:
    """These signals raise Stopped (once: the next ones are ignored while it cleans up)."""
    import signal

    def stop(signum, frame):
        ignore_stops()
        raise Stopped(signum)

    for signum in signums:
        signal.signal(signum, stop)


def ignore_stops() -> None:
    """From here on a stop signal changes nothing: only the answer is left."""
    import signal

    for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)


def environ(command: Command) -> dict:
    return {**os.environ, **command.environ}


def wait(proc) -> int:
    """A started process's exit status. A stop that lands meanwhile lets it finish first
    (as bash runs a trap only after the command in hand): a docker command cut off half
    way leaves less to clean up than one that completed."""
    stopped = None
    while True:
        try:
            status = proc.wait()
            break
        except Stopped as error:
            stopped = error
    if stopped is not None:
        raise stopped
    return status


def output(command: Command, stderr: bool = True, timeout: float = 0) -> tuple[int, str]:
    """(exit status, what it printed): stdout, and stderr too unless stderr=False.
    A command that cannot start is exit 127 with the reason as its output; one that
    runs past TIMEOUT seconds (if given) is killed: exit 124, as timeout(1) says."""
    import subprocess
    import tempfile

    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(
                command.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT if stderr else subprocess.DEVNULL,
                env=environ(command),
                cwd=command.cwd,
            )
        except OSError as error:
            return 127, f"{command.argv[0]}: {error.strerror}"
        if timeout:
            try:
                status = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                wait(proc)
                status = 124
        else:
            status = wait(proc)
        out.seek(0)
        return status, out.read().decode(errors="replace")


def streamed(command: Command) -> int:
    """Run a command with its output going where ours goes; its exit status.
    stdin is empty: nothing on the server waits for input."""
    return to_file(command, None)


def from_file(command: Command, path: str) -> int:
    """Run a command reading the file PATH on stdin, its output where ours goes; its exit status."""
    import subprocess

    sys.stdout.flush()
    with open(path, "rb") as source:
        try:
            proc = subprocess.Popen(command.argv, cwd=command.cwd, env=environ(command), stdin=source)
        except OSError as error:
            print(f"pushdeploy: {command.argv[0]}: {error.strerror}", flush=True)
            return 127
        return wait(proc)


def to_file(command: Command, path) -> int:
    """Run a command with its stdout into the file PATH (root's alone), or where ours goes
    (None); its stderr where ours goes; its exit status."""
    import subprocess

    sys.stdout.flush()
    out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600) if path else None
    try:
        proc = subprocess.Popen(
            command.argv, cwd=command.cwd, env=environ(command), stdin=subprocess.DEVNULL, stdout=out
        )
    except OSError as error:
        print(f"pushdeploy: {command.argv[0]}: {error.strerror}", flush=True)
        return 127
    finally:
        if out is not None:
            os.close(out)
    return wait(proc)


def lib_module(name: str):
    """One of the Python scripts beside pdserver (history.py, pull.py), as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"pushdeploy_{name}", os.path.join(LIB, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
