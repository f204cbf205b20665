"""Running commands: the one place the Python server side starts a process.

A command comes in built (compose.py): an argument list, never a shell line, with
the directory it runs in and the variables it adds to ours. subprocess is imported
on first use: most requests start no process, and bin/deploy starts once per request.
"""

from __future__ import annotations

import collections
import os

Command = collections.namedtuple("Command", "argv cwd environ", defaults=(None, {}))

# A verb's answer that says: run the request in bash, lib/deploy.sh (main.py does).
HAND_OVER = object()
LIB = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def output(command: Command, stderr: bool = True) -> tuple[int, str]:
    """(exit status, what it printed): stdout, and stderr too unless stderr=False.
    A command that cannot start is exit 127 with the reason as its output."""
    import subprocess

    try:
        done = subprocess.run(
            command.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if stderr else subprocess.DEVNULL,
            env={**os.environ, **command.environ},
            cwd=command.cwd,
            check=False,
        )
    except OSError as error:
        return 127, f"{command.argv[0]}: {error.strerror}"
    return done.returncode, done.stdout.decode(errors="replace")


def streamed(command: Command) -> int:
    """Run a command with its output going where ours goes; its exit status.
    stdin is empty: nothing on the server waits for input."""
    import subprocess

    try:
        environ = {**os.environ, **command.environ}
        return subprocess.run(
            command.argv, cwd=command.cwd, env=environ, stdin=subprocess.DEVNULL, check=False
        ).returncode
    except OSError as error:
        print(f"pushdeploy: {command.argv[0]}: {error.strerror}", flush=True)
        return 127


def lib_module(name: str):
    """One of the Python scripts beside pdserver (history.py, pull.py), as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"pushdeploy_{name}", os.path.join(LIB, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
