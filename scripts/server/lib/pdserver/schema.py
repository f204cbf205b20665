"""The environment's settings as the server reads them (/etc/pushdeploy/ENV.conf): every
key, its default, and what its value must be. The one statement of these facts: the
server checks ENV.conf with it (env.py), and the client takes its choices and patterns
from it and checks the conf it renders with the server's own parser before it sends it
(deploy/plan.py), so neither side can accept what the other refuses.
"""

from __future__ import annotations

import collections

# The choices a setting offers (invoke.yaml's value is written to ENV.conf as is).
ORDERINGS = ("none", "semver", "build")
SWITCHES = ("slots", "recreate")
PRIORITIES = ("low", "normal")
ENGINES = ("compose", "swarm")

# Names (invoke.yaml's project and services), as both sides match them.
PROJECT_RE = r"[a-z0-9][a-z0-9_-]{0,62}"
SERVICE_RE = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"


class Key(collections.namedtuple("Key", "name default pattern what", defaults=(None, ""))):
    """One key of ENV.conf: its default ('' for none); pattern: what a value must match
    (whole), or None for any; what: the message when it does not."""

    __slots__ = ()


def _choice(options) -> str:
    return "|".join(options)


KEYS = (
    Key("APP_DIR", ""),  # an absolute path: checked on its own (env.py)
    Key("PROJECT", "", PROJECT_RE, "invalid PROJECT"),
    Key("COMPOSE", "docker compose"),
    Key("COMPOSE_FILES", "docker-compose.yml"),
    Key("SERVICES", "web proxy"),
    Key("WEB_SERVICE", "web", SERVICE_RE, "invalid WEB_SERVICE"),
    Key("DB_SERVICE", ""),
    Key("PROXY_SERVICE", ""),
    Key("MANAGE", "python manage.py"),
    Key("VERSION_RE", ""),
    Key("DOCKER_HOST", ""),
    Key("HEALTH_TIMEOUT", "60", r"[0-9]{1,5}", "HEALTH_TIMEOUT is a whole number"),
    Key("BACKUP", "no", "yes|no", "BACKUP is yes or no"),
    Key("BACKUP_KEEP", "10", r"[0-9]{1,5}", "BACKUP_KEEP is a whole number"),
    Key("DRAIN_SECONDS", "1", r"[0-9]{1,5}", "DRAIN_SECONDS is a whole number"),
    Key("DNS_VALID", "1", r"[0-9]{1,5}", "DNS_VALID is a whole number"),
    Key("STATIC_KEEP", "3", r"[0-9]{1,5}", "STATIC_KEEP is a whole number"),
    Key("ORDERING", "none", _choice(ORDERINGS), "ORDERING is none, semver or build"),
    Key("SWITCH", "slots", _choice(SWITCHES), "SWITCH is slots or recreate"),
    Key("PRIORITY", "low", _choice(PRIORITIES), "PRIORITY is low or normal"),
    Key("APP_FILES_SHA256", ""),
    Key("PULL_CHANNEL", ""),  # the channel pattern: facts.CHANNEL_RE (env.py)
    Key("PULL_EVERY", "60", r"[1-9][0-9]{0,5}", "PULL_EVERY is a whole number of seconds"),
    Key("ENGINE", "compose", _choice(ENGINES), "ENGINE is compose or swarm"),
    Key("MANAGER_COMPOSE_FILES", "", r"[A-Za-z0-9_. /-]*", "MANAGER_COMPOSE_FILES are relative paths"),
    Key("CONVERGE_TIMEOUT", "300", r"[0-9]{1,5}", "CONVERGE_TIMEOUT is a whole number"),
    Key("BACKUP_IMAGE", ""),  # an image reference: facts.IMAGE_RE (env.py)
    Key("REVIEW_TEMPLATE", "no", "yes|no", "REVIEW_TEMPLATE is yes or no"),
    Key("REVIEW_DOMAIN", ""),
    Key("REVIEW_MAX", "5"),
    Key("REVIEW_PORT", "8088"),
    Key("REVIEW_SEED", "fresh"),
    Key("SCRUB", ""),
    Key("KEYS_SHA256", ""),  # the named keys' scopes (keys.json), for the settings hash only
)

# Keys that may repeat, one value a line: the hooks and the manage allowlist.
LISTS = ("HOOK_BEFORE_SWITCH", "HOOK_AFTER_SWITCH", "MANAGE_COMMAND")

DEFAULTS = {key.name: key.default for key in KEYS}
