"""--expect=SERVERHASH.SETTINGSHASH: the client's server side and settings must be what
is installed here, or the request is refused (78) with what to run."""

from __future__ import annotations

import hashlib
import os

from . import facts
from .request import Refused

HOME = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def server_hash(home: str = HOME) -> str:
    """The installed server side's hash: its files (PD_SERVER_FILES), in order."""
    digest = hashlib.sha256()
    for name in facts.SERVER_FILES:
        with open(os.path.join(home, name), "rb") as file:
            digest.update(file.read())
    return digest.hexdigest()[:16]


def conf_hash(path: str) -> str:
    with open(path, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest()[:16]


def check(expected: str, conf_path: str, env: str, setup_env: str = "", home: str = HOME) -> None:
    """setup_env: what `inv server.setup --env` installs, if not env (a review environment's template)."""
    setup_env = setup_env or env
    if not expected:
        return
    server, settings = server_hash(home), conf_hash(conf_path)
    if expected == f"{server}.{settings}":
        return
    if expected.split(".", 1)[0] != server:
        raise Refused(
            f"the server side here ({server}) differs from your project's ({expected.split('.', 1)[0]}): run `inv server.setup --env {setup_env}`",
            facts.EXIT_OUTDATED,
        )
    raise Refused(
        f"the settings installed for '{env}' differ from your invoke.yaml and project files: run `inv server.setup --env {setup_env}`",
        facts.EXIT_OUTDATED,
    )
