"""The environment's settings, one table for both sides (/etc/pushdeploy/ENV.conf): every
key, its default, its kind and check, and the invoke.yaml setting it carries. The client
checks invoke.yaml's numbers and choices with it (deploy/settings.py, `setting`), renders
ENV.conf from it in its order (deploy/plan.py, `render`) and reads what it rendered back
with the server's own parser before sending it; the server checks ENV.conf with it
(env.py, `problem`). So neither side can accept what the other refuses.
"""

from __future__ import annotations

import collections
import re

# The choices a setting offers (invoke.yaml's value is written to ENV.conf as is).
ORDERINGS = ("none", "semver", "build")
SWITCHES = ("slots", "recreate")
PRIORITIES = ("low", "normal")
ENGINES = ("compose", "swarm")

# Names (invoke.yaml's project and services), as both sides match them.
PROJECT_RE = r"[a-z0-9][a-z0-9_-]{0,62}"
SERVICE_RE = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"


class Key(
    collections.namedtuple(
        "Key", "name default pattern what setting kind low high when", defaults=("", None, "", "", "text", 0, 0, "")
    )
):
    """One key of ENV.conf, in the order the client writes them.

    default: the server's value when the key is absent ('' for none); pattern: what a value
    must match (whole), or None for any; what: the message when it does not.
    setting: the invoke.yaml setting (and Environment attribute) whose value it carries, ''
    for what the client derives (hashes) or checks on its own. kind: how a value is
    written and checked on both sides: text, words (a list, space-separated), flag (yes/no),
    number (a whole number from low to high), choice (one of pattern's |-separated
    options), list (one line per item). when: written only if the key named there is not
    at its default (a feature's keys stay out of the settings of setups without it).
    """

    __slots__ = ()

    @property
    def choices(self) -> tuple:
        return tuple(self.pattern.split("|")) if self.kind == "choice" else ()


def _choice(options) -> str:
    return "|".join(options)


def _number(name, default, low, high, setting, when=""):
    return Key(
        name,
        default,
        r"[0-9]{1,7}",
        f"{name} is a whole number from {low} to {high}",
        setting,
        "number",
        low,
        high,
        when,
    )


KEYS = (
    Key("APP_DIR", "", setting="app_dir"),  # an absolute path: checked on its own (env.py)
    Key("PROJECT", "", PROJECT_RE, "invalid PROJECT", "project"),
    Key("COMPOSE", "docker compose", setting="compose_command"),
    Key("COMPOSE_FILES", "docker-compose.yml", setting="compose_files", kind="words"),
    Key("SERVICES", "web proxy", setting="services", kind="words"),
    Key("WEB_SERVICE", "web", SERVICE_RE, "invalid WEB_SERVICE", "web_service"),
    Key("DB_SERVICE", "", setting="db_service"),
    Key("PROXY_SERVICE", "", setting="proxy_service"),
    Key("MANAGE", "python manage.py", setting="manage"),
    Key("VERSION_RE", "", setting="version_pattern"),
    Key("DOCKER_HOST", "", setting="docker_host"),
    _number("HEALTH_TIMEOUT", "60", 1, 3600, "health_timeout"),
    _number("DRAIN_SECONDS", "1", 0, 300, "drain_seconds"),
    _number("DNS_VALID", "1", 1, 60, "dns_valid"),
    _number("STATIC_KEEP", "3", 0, 100, "static_keep"),
    Key("BACKUP", "no", "yes|no", "BACKUP is yes or no", "backup", "flag"),
    _number("BACKUP_KEEP", "10", 1, 1000, "backup_keep"),
    Key("ORDERING", "none", _choice(ORDERINGS), "ORDERING is none, semver or build", "ordering", "choice"),
    Key("SWITCH", "slots", _choice(SWITCHES), "SWITCH is slots or recreate", "switch", "choice"),
    Key("PRIORITY", "low", _choice(PRIORITIES), "PRIORITY is low or normal", "deploy_priority", "choice"),
    Key("APP_FILES_SHA256", ""),
    # The hooks and the manage allowlist: one value a line (the client renders them: deploy/management.py).
    Key("HOOK_BEFORE_SWITCH", kind="list"),
    Key("HOOK_AFTER_SWITCH", kind="list"),
    Key("MANAGE_COMMAND", kind="list"),
    # Pull mode: the channel pattern is facts.CHANNEL_RE (env.py); the client checks both (deploy/pull.py).
    Key("PULL_CHANNEL", "", setting="pull_channel", when="PULL_CHANNEL"),
    Key(
        "PULL_EVERY",
        "60",
        r"[1-9][0-9]{0,5}",
        "PULL_EVERY is a whole number of seconds",
        "pull_every",
        when="PULL_CHANNEL",
    ),
    Key("ENGINE", "compose", _choice(ENGINES), "ENGINE is compose or swarm", "engine", "choice", when="ENGINE"),
    Key(
        "MANAGER_COMPOSE_FILES",
        "",
        r"[A-Za-z0-9_. /-]*",
        "MANAGER_COMPOSE_FILES are relative paths",
        "manager_compose_files",
        "words",
        when="ENGINE",
    ),
    _number("CONVERGE_TIMEOUT", "300", 10, 3600, "converge_timeout", when="ENGINE"),
    Key("BACKUP_IMAGE", "", setting="backup_image", when="BACKUP_IMAGE"),  # an image reference: facts.IMAGE_RE (env.py)
    Key("SCRUB", "", setting="scrub", when="SCRUB"),
    Key(
        "REVIEW_TEMPLATE",
        "no",
        "yes|no",
        "REVIEW_TEMPLATE is yes or no",
        "review_template",
        "flag",
        when="REVIEW_TEMPLATE",
    ),
    Key("REVIEW_DOMAIN", "", setting="review_domain", when="REVIEW_TEMPLATE"),
    _number("REVIEW_PORT", "8088", 1, 65535, "review_port", when="REVIEW_TEMPLATE"),
    _number("REVIEW_MAX", "5", 1, 999, "review_max", when="REVIEW_TEMPLATE"),
    Key("REVIEW_SEED", "fresh", setting="review_seed", when="REVIEW_TEMPLATE"),
    Key("KEYS_SHA256", "", when="KEYS_SHA256"),  # the named keys' scopes (keys.json), for the settings hash only
)

# Keys that may repeat, one value a line: the hooks and the manage allowlist.
LISTS = tuple(key.name for key in KEYS if key.kind == "list")
DEFAULTS = {key.name: key.default for key in KEYS if key.kind != "list"}
CHECKED = tuple(key for key in KEYS if key.setting and key.kind in ("number", "choice"))


def problem(key: Key, text: str):
    """Why ENV.conf's text for KEY is refused (the server's reading), or None."""
    if key.pattern is not None and not re.fullmatch(key.pattern, text):
        return key.what
    if key.kind == "number" and not key.low <= int(text) <= key.high:
        return key.what
    return None


def setting(key: Key, value):
    """invoke.yaml's value for KEY as the client takes it, checked as the server will check
    it: (value, None) or (None, the problem)."""
    if key.kind == "number":
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or not key.low <= value <= key.high:
            return None, f"must be a whole number from {key.low} to {key.high}"
    elif key.kind == "choice" and value not in key.choices:
        return None, f"{value!r} must be one of: {', '.join(key.choices)}"
    return value, None


def render(values: dict) -> list:
    """ENV.conf's lines, in the table's order, from each key's value (the client's side):
    a flag as yes/no, words space-separated, a list one line per item; a key whose `when`
    key is at its default is left out."""
    lines = []
    for key in KEYS:
        if key.when and str(_text(KEYS_BY_NAME[key.when], values.get(key.when, ""))) == DEFAULTS[key.when]:
            continue
        value = values.get(key.name, [] if key.kind == "list" else key.default)
        items = value if key.kind == "list" else [value]
        lines += [f"{key.name}={_text(key, item)}" for item in items]
    return lines


def _text(key: Key, value) -> str:
    if key.kind == "flag" and isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return " ".join(str(item) for item in value)
    return str(value)


KEYS_BY_NAME = {key.name: key for key in KEYS}
