"""Running commands: the one place the Python server side starts a process.

Commands come in as argument lists (never a shell line). subprocess is imported on
first use: most requests start no process, and bin/deploy starts once per request.
"""

from __future__ import annotations


def output(argv: list, env: dict | None = None, cwd: str | None = None, stderr: bool = True) -> tuple[int, str]:
    """(exit status, what it printed): stdout, and stderr too unless stderr=False.
    A command that cannot start is exit 127 with the reason as its output."""
    import subprocess

    try:
        done = subprocess.run(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if stderr else subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            check=False,
        )
    except OSError as error:
        return 127, f"{argv[0]}: {error.strerror}"
    return done.returncode, done.stdout.decode(errors="replace")


def streamed(command) -> int:
    """Run a built Command (compose.py) with its output going where ours goes; its exit status.
    stdin is empty: nothing on the server waits for input."""
    import os
    import subprocess

    try:
        return subprocess.run(
            command.argv, cwd=command.cwd, env={**os.environ, **command.environ}, stdin=subprocess.DEVNULL, check=False
        ).returncode
    except OSError as error:
        print(f"pushdeploy: {command.argv[0]}: {error.strerror}", flush=True)
        return 127
