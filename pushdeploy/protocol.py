"""What the client and the server agree on, read from the server's own file.

``scripts/server/lib/protocol.sh`` is the single source of truth for the verbs the
deploy account may send, the patterns every word must match, the server paths
and the exit codes. This module reads it through the server's own reader
(scripts/server/lib/pdserver/facts.py), so the client validates exactly what the
server will validate again, with the same code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent  # a checkout of pushdeploy (its tests, its demo)
# The server side: package data in an installed pushdeploy, scripts/server in a checkout.
SERVER_DIR = (
    PACKAGE_DIR / "server" if (PACKAGE_DIR / "server" / "bin").is_dir() else PROJECT_ROOT / "scripts" / "server"
)
PROTOCOL_FILE = SERVER_DIR / "lib" / "protocol.sh"


def _server_package():
    """The server's own Python package (scripts/server/lib/pdserver), imported as ``pdserver``:
    the client reads the shared facts with the very module the server runs."""
    if "pdserver" not in sys.modules:
        init = SERVER_DIR / "lib" / "pdserver" / "__init__.py"
        spec = importlib.util.spec_from_file_location("pdserver", init, submodule_search_locations=[str(init.parent)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["pdserver"] = module
        spec.loader.exec_module(module)
    return sys.modules["pdserver"]


_server_package()
from pdserver import facts as server_facts  # noqa: E402
from pdserver import request as server_request  # noqa: E402,F401  (the server's request parser, for tests and plan)

FACTS = server_facts.FACTS

PREFIX = server_facts.PREFIX
ETC = server_facts.ETC
STATE = server_facts.STATE
VERBS = server_facts.VERBS
ADMIN_VERBS = server_facts.ADMIN_VERBS  # the admin connection's only (inv db.refresh)
SERVER_VERBS = server_facts.SERVER_VERBS  # the admin connection's too (inv server.teardown, secrets.push)
KEY_RIGHTS = server_facts.KEY_RIGHTS  # a named key's only when its verbs list them (restore-db)
REVIEW_RE = server_facts.REVIEW_RE
ENV_RE = server_facts.ENV_RE
VERSION_RE = server_facts.VERSION_RE
ARG_RE = server_facts.ARG_RE
ID_RE = server_facts.ID_RE
KEY_RE = server_facts.KEY_RE
IMAGE_RE = server_facts.IMAGE_RE
SECRET_NAME_RE = server_facts.SECRET_NAME_RE  # inv secrets.*: what a secret may be called
REGISTRY_RE = server_facts.REGISTRY_RE  # registry: its server, host[:port]
REGISTRY_USER_RE = server_facts.REGISTRY_USER_RE
SECRET_RESERVED = server_facts.SECRET_RESERVED  # and what it may not (the deploy's own: VERSION, IMAGE)
MAX_COMMAND = server_facts.MAX_COMMAND
MAX_WORDS = server_facts.MAX_WORDS
EXIT_USAGE = server_facts.EXIT_USAGE
EXIT_OLDER = server_facts.EXIT_OLDER
EXIT_BUSY = server_facts.EXIT_BUSY
EXIT_OUTDATED = server_facts.EXIT_OUTDATED
EXIT_FULL = server_facts.EXIT_FULL
RESULT_PREFIX = server_facts.RESULT_PREFIX
# The server side's files: installed by bin/install, hashed in this order by both sides.
SERVER_FILES = server_facts.SERVER_FILES
SLOTS = server_facts.SLOTS
ROUTING_DIR = server_facts.ROUTING_DIR
CHANNEL_RE = server_facts.CHANNEL_RE
PIN_HEX = server_facts.PIN_HEX
matches = server_facts.matches

DEPLOY_BIN = f"{PREFIX}/bin/deploy"
ENTRYPOINT_BIN = f"{PREFIX}/bin/entrypoint"


class InvalidRequest(ValueError):
    """A command the server would refuse; raised before anything is sent."""


def command(verb: str, *words: str, **options: str | int | bool | None) -> str:
    """Build the one-line request the entrypoint accepts, or raise InvalidRequest.

    ``command("deploy", "staging", "1.4.0", id="x")`` -> ``"deploy staging 1.4.0 --id=x"``.
    Options set to None or False are left out; True gives a bare ``--flag``.
    """
    if verb not in VERBS + ADMIN_VERBS + SERVER_VERBS:
        raise InvalidRequest(f"unknown verb {verb!r}; the server accepts {', '.join(VERBS)}")
    parts = [verb]
    for word in words:
        parts.append(str(word))
    for name, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        parts.append(flag if value is True else f"{flag}={value}")
    for word in parts[1:]:
        if not matches(ARG_RE, word):
            raise InvalidRequest(f"{word!r} is not a word the server accepts")
    line = " ".join(parts)
    if len(parts) > MAX_WORDS or len(line) > MAX_COMMAND:
        raise InvalidRequest("request too long for the server")
    return line


@dataclass(frozen=True)
class ServerSide:
    """The files `inv server.setup` installs under PREFIX, and their hash."""

    files: dict[str, bytes]

    @property
    def hash(self) -> str:
        digest = hashlib.sha256(b"".join(self.files[name] for name in SERVER_FILES))
        return digest.hexdigest()[:16]


def server_side(root: Path = SERVER_DIR) -> ServerSide:
    return ServerSide({name: (root / name).read_bytes() for name in SERVER_FILES})


def short_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]
