"""What the client and the server agree on, read from the server's own file.

``scripts/server/lib/protocol.sh`` is the single source of truth for the verbs the
deploy account may send, the patterns every word must match, the server paths
and the exit codes. This module parses it (plain ``NAME='value'`` lines) so the
client validates exactly what the server will validate again.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SERVER_DIR = PROJECT_ROOT / "scripts" / "server"
PROTOCOL_FILE = SERVER_DIR / "lib" / "protocol.sh"

_ASSIGNMENT = re.compile(r"^(PD_[A-Z_]+)='([^']*)'$")


def _read_facts(path: Path) -> dict[str, str]:
    facts = {}
    for line in path.read_text().splitlines():
        match = _ASSIGNMENT.match(line)
        if match:
            facts[match.group(1)] = match.group(2)
    return facts


FACTS = _read_facts(PROTOCOL_FILE)

PREFIX = FACTS["PD_PREFIX"]
ETC = FACTS["PD_ETC"]
STATE = FACTS["PD_STATE"]
VERBS = tuple(FACTS["PD_VERBS"].split())
ADMIN_VERBS = tuple(FACTS["PD_ADMIN_VERBS"].split())  # the admin connection's only (inv db.refresh)
REVIEW_RE = re.compile(FACTS["PD_REVIEW_RE"])
ENV_RE = re.compile(FACTS["PD_ENV_RE"])
VERSION_RE = re.compile(FACTS["PD_VERSION_RE"])
ARG_RE = re.compile(FACTS["PD_ARG_RE"])
ID_RE = re.compile(FACTS["PD_ID_RE"])
IMAGE_RE = re.compile(FACTS["PD_IMAGE_RE"])
MAX_COMMAND = int(FACTS["PD_MAX_COMMAND"])
MAX_WORDS = int(FACTS["PD_MAX_WORDS"])
EXIT_USAGE = int(FACTS["PD_EXIT_USAGE"])
EXIT_OLDER = int(FACTS["PD_EXIT_OLDER"])
EXIT_BUSY = int(FACTS["PD_EXIT_BUSY"])
EXIT_OUTDATED = int(FACTS["PD_EXIT_OUTDATED"])
EXIT_FULL = int(FACTS["PD_EXIT_FULL"])
# The server side's files: installed by bin/install, hashed in this order by both sides.
SERVER_FILES = tuple(FACTS["PD_SERVER_FILES"].split())
SLOTS = tuple(FACTS["PD_SLOTS"].split())
ROUTING_DIR = FACTS["PD_ROUTING_DIR"]
CHANNEL_RE = re.compile(FACTS["PD_CHANNEL_RE"])
PIN_HEX = int(FACTS["PD_PIN_HEX"])

DEPLOY_BIN = f"{PREFIX}/bin/deploy"
ENTRYPOINT_BIN = f"{PREFIX}/bin/entrypoint"


class InvalidRequest(ValueError):
    """A command the server would refuse; raised before anything is sent."""


def matches(pattern: re.Pattern[str], text: str) -> bool:
    """Match like bash's ``[[ text =~ ^...$ ]]``: whole string, no trailing newline."""
    return "\n" not in text and pattern.search(text) is not None


def command(verb: str, *words: str, **options: str | int | bool | None) -> str:
    """Build the one-line request the entrypoint accepts, or raise InvalidRequest.

    ``command("deploy", "staging", "1.4.0", id="x")`` -> ``"deploy staging 1.4.0 --id=x"``.
    Options set to None or False are left out; True gives a bare ``--flag``.
    """
    if verb not in VERBS + ADMIN_VERBS:
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
