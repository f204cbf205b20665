"""What the client and the server agree on, read from lib/protocol.sh.

protocol.sh is the single source of truth (bash sources it); this module parses
its plain ``NAME='value'`` lines. The client (pushdeploy/protocol.py) imports this
very file, so both sides read the facts the same way.
"""

from __future__ import annotations

import os
import re

LIB = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTOCOL_FILE = os.path.join(LIB, "protocol.sh")

_ASSIGNMENT = re.compile(r"^(PD_[A-Z_]+)='([^']*)'$")


def read(path: str = PROTOCOL_FILE) -> dict:
    facts = {}
    with open(path) as file:
        text = file.read()
    for line in text.splitlines():
        match = _ASSIGNMENT.match(line)
        if match:
            facts[match.group(1)] = match.group(2)
    return facts


FACTS = read()

PREFIX = FACTS["PD_PREFIX"]
ETC = FACTS["PD_ETC"]
STATE = FACTS["PD_STATE"]
VERBS = tuple(FACTS["PD_VERBS"].split())
ADMIN_VERBS = tuple(FACTS["PD_ADMIN_VERBS"].split())
SERVER_VERBS = tuple(FACTS["PD_SERVER_VERBS"].split())  # the admin connection's too
KEY_RIGHTS = tuple(FACTS["PD_KEY_RIGHTS"].split())  # a named key's only if its verbs list them
REVIEW_VERBS = tuple(verb for verb in VERBS if verb.startswith("review-"))
REVIEW_RE = re.compile(FACTS["PD_REVIEW_RE"])
ENV_RE = re.compile(FACTS["PD_ENV_RE"])
VERSION_RE = re.compile(FACTS["PD_VERSION_RE"])
ARG_RE = re.compile(FACTS["PD_ARG_RE"])
ID_RE = re.compile(FACTS["PD_ID_RE"])
KEY_RE = re.compile(FACTS["PD_KEY_RE"])
IMAGE_RE = re.compile(FACTS["PD_IMAGE_RE"])
SECRET_NAME_RE = re.compile(FACTS["PD_SECRET_NAME_RE"])
SECRET_RESERVED = tuple(FACTS["PD_SECRET_RESERVED"].split())
REGISTRY_RE = re.compile(FACTS["PD_REGISTRY_RE"])
REGISTRY_USER_RE = re.compile(FACTS["PD_REGISTRY_USER_RE"])
CHANNEL_RE = re.compile(FACTS["PD_CHANNEL_RE"])
MANAGE_NAME_RE = re.compile(FACTS["PD_MANAGE_NAME_RE"])
MANAGE_FORBIDDEN = tuple(FACTS["PD_MANAGE_FORBIDDEN"].split())
MANAGE_FORBIDDEN_OPTIONS = tuple(FACTS["PD_MANAGE_FORBIDDEN_OPTIONS"].split())
MAX_COMMAND = int(FACTS["PD_MAX_COMMAND"])
MAX_WORDS = int(FACTS["PD_MAX_WORDS"])
MAX_ORDER_AHEAD = int(FACTS["PD_MAX_ORDER_AHEAD"])
EXIT_USAGE = int(FACTS["PD_EXIT_USAGE"])
EXIT_OLDER = int(FACTS["PD_EXIT_OLDER"])
EXIT_BUSY = int(FACTS["PD_EXIT_BUSY"])
EXIT_OUTDATED = int(FACTS["PD_EXIT_OUTDATED"])
EXIT_FULL = int(FACTS["PD_EXIT_FULL"])
RESULT_PREFIX = FACTS["PD_RESULT_PREFIX"]
SERVER_FILES = tuple(FACTS["PD_SERVER_FILES"].split())
SLOTS = tuple(FACTS["PD_SLOTS"].split())
ROUTING_DIR = FACTS["PD_ROUTING_DIR"]
PIN_HEX = int(FACTS["PD_PIN_HEX"])
KEYS_FILE = FACTS["PD_KEYS_FILE"]


def _folder_files(root: str, folders) -> tuple:
    """Every *.py file of FOLDERS (relative to ROOT), sorted."""
    found = []
    for folder in folders:
        try:
            names = os.listdir(os.path.join(root, folder))
        except FileNotFoundError:
            continue
        found += sorted(f"{folder}/{name}" for name in names if name.endswith(".py"))
    return tuple(found)


SERVER_FILES += _folder_files(os.path.dirname(LIB), FACTS["PD_SERVER_FOLDERS"].split())


def matches(pattern: re.Pattern, text: str) -> bool:
    """Match like bash's ``[[ text =~ ^...$ ]]``: whole string, no trailing newline."""
    return "\n" not in text and pattern.search(text) is not None
