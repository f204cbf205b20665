"""The verbs bin/deploy answers in Python. The others still run in lib/deploy.sh
(bash), which main.py hands the checked request over to; each moves here in turn."""

from __future__ import annotations

import hashlib
import os

from . import facts
from .request import Request

HOME = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def server_hash(home: str = HOME) -> str:
    """The installed server side's hash: its files (PD_SERVER_FILES), in order."""
    digest = hashlib.sha256()
    for name in facts.SERVER_FILES:
        with open(os.path.join(home, name), "rb") as file:
            digest.update(file.read())
    return digest.hexdigest()[:16]


def version(request: Request) -> int:
    print(server_hash())
    return 0


HANDLERS = {"version": version}
