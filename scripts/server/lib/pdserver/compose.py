"""Docker Compose commands, built: an environment and what to do in, argument lists out.

Pure: nothing here runs anything (run.py does). Each builder returns a Command: the
argument list, the directory it runs in and the variables it adds to the environment.
Compose reads VERSION from .env; a VERSION in the environment wins, which lets a
command run the new version before .env says so.
"""

from __future__ import annotations

import re

from . import tls
from .env import Env
from .run import Command

# What Docker says when a registry wants credentials it was not given, or refuses them
# (a pull, a login).
REGISTRY_REFUSED = re.compile(
    r"unauthorized|authentication required|no basic auth credentials|pull access denied|denied: requested access"
    r"|incorrect username or password",
    re.I,
)

# Compose's progress bars are noise in a deploy log; the steps say what happens.
QUIET = {"COMPOSE_PROGRESS": "quiet", "COMPOSE_ANSI": "never", "LC_ALL": "C"}


def docker(env: Env, *args: str) -> Command:
    """`docker ARGS`, at the environment's DOCKER_HOST if it names one, with its registry
    login (DOCKER_CONFIG) if it has one: every pull (deploys, review environments, the pull
    agent) and `stack deploy --with-registry-auth` read the credentials from there."""
    environ = {"DOCKER_HOST": env["DOCKER_HOST"]} if env["DOCKER_HOST"] else {}
    if env["REGISTRY"]:
        environ["DOCKER_CONFIG"] = env.docker_config
    return Command(["docker", *args], None, environ)


def compose_cli(env: Env, *args: str) -> Command:
    """The compose program itself, no project (`version --short`), at the environment's docker."""
    return Command([*env["COMPOSE"].split(), *args], None, docker(env).environ)


def compose(env: Env, *args: str, version: str = "") -> Command:
    """`COMPOSE -p PROJECT -f FILE... ARGS` in the app directory (at VERSION, if given); with
    tls:, the proxy's TLS file last (tls.py)."""
    files = [word for name in tls.compose_files(env) for word in ("-f", name)]
    environ = {**QUIET, **docker(env).environ, **({"VERSION": version} if version else {})}
    return Command([*env["COMPOSE"].split(), "-p", env["PROJECT"], *files, *args], env.app_dir, environ)


def one_off(env: Env, version: str, *command: str, extra: tuple = ()) -> Command:
    """A one-off container of the web service at VERSION: no dependencies started, no
    TTY, removed afterwards, output unbuffered so it streams. extra: more `run` options."""
    return compose(
        env,
        "run",
        "--rm",
        "--no-deps",
        "-T",
        "-e",
        "PYTHONUNBUFFERED=1",
        *extra,
        env["WEB_SERVICE"],
        *command,
        version=version,
    )


def manage(env: Env, version: str, words) -> Command:
    """`manage.py NAME ARGS...` (the environment's MANAGE prefix) in a one-off container."""
    return one_off(env, version, *env["MANAGE"].split(), *words)
