"""The environment's settings, one table for both sides: every setting of invoke.yaml
and every key of /etc/pushdeploy/ENV.conf, with its default, kind and check, and whether
the server needs it (a key in ENV.conf). The client takes invoke.yaml's defaults from it
(`setting_defaults`), checks every number and choice with it (`setting`), renders ENV.conf
from it in its order (`render`; pushdeploy/plan.py) and reads what it rendered back with the
server's own parser before sending it; the server checks ENV.conf with it (env.py,
`problem`). So neither side can accept what the other refuses. Checks that need more than
a kind (paths, hosts, hooks, the allowlist) are the client's own, in pushdeploy/settings.py.
"""

from __future__ import annotations

import collections
import re

from . import strategies

# The choices a setting offers (invoke.yaml's value is written to ENV.conf as is); the
# switches and engines are the strategies' modules (strategies/__init__.py), default first.
ORDERINGS = ("none", "semver", "build")
SWITCHES = ("slots",) + tuple(name for name in strategies.names("switch") if name != "slots")
PRIORITIES = ("low", "normal")
COMPOSE_COMMANDS = ("docker compose", "docker-compose")
MIGRATE_ON = ("first", "each")  # the client's: which hosts migrate
ON_FAILURE = ("rollback", "halt")  # the client's: what a failed batch does to the switched ones
ENGINES = ("compose",) + strategies.names("engine")

TLS_MODES = ("off", "files", "acme")  # tls: a certificate from files on the server, or from an ACME server
# What `tls.acme` names: host names with a dot (HTTP-01 validates no wildcard, no IP), an
# account's e-mail address, an ACME directory's https:// URL.
DOMAIN_RE = r"(?=[^ ]{1,253}( |$))([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?"
EMAIL_RE = r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})+"
# Where a fleet's other hosts reach the first host's proxy on plain HTTP: an IPv4 address or a
# host name, and a port.
PEER_RE = r"([0-9]{1,3}(\.[0-9]{1,3}){3}|[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?):[0-9]{1,5}"
ACME_DIRECTORY_RE = r"https://[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?(/[A-Za-z0-9._~%-]{1,128}){0,8}/?"
# An absolute path of plain names, none of them . or .. (a file the server reads as root).
SERVER_PATH_RE = r"(?!.*/\.\.?(/|$))(/[A-Za-z0-9_.+@-]{1,128}){1,16}"
PUBLISH_RE = r"([0-9]{1,3}(\.[0-9]{1,3}){3}:)?[0-9]{1,5}"  # where the proxy's 443 is published

# Names (invoke.yaml's project and services), as both sides match them.
PROJECT_RE = r"[a-z0-9][a-z0-9_-]{0,62}"
SERVICE_RE = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"


class Key(
    collections.namedtuple(
        "Key",
        "name default pattern what setting kind low high when value yaml",
        defaults=("", None, "", "", "text", 0, 0, "", None, True),
    )
):
    """One setting: its key in ENV.conf (name; '' for a setting only the client uses), in
    the order the client writes them.

    default: the server's value when the key is absent ('' for none); pattern: what a value
    must match (whole), or None for any; what: the message when it does not.
    setting: the Environment attribute whose value it carries, and the invoke.yaml setting
    of that name unless yaml is False (app_dir and project come from the app's name, the
    pull keys from `pull:`); '' for what the client derives (hashes). value: invoke.yaml's
    default where it is not the server's (None: the server's, typed by kind).
    kind: how a value is written and checked on both sides: text, words (a list,
    space-separated), flag (yes/no), number (a whole number from low to high), choice (one
    of pattern's |-separated options), list (one line per item). when: written only if
    the key named there is not at its default (a feature's keys stay out of the settings
    of setups without it).
    """

    __slots__ = ()

    @property
    def choices(self) -> tuple:
        return tuple(self.pattern.split("|")) if self.kind == "choice" else ()


def _choice(options) -> str:
    return "|".join(options)


def _either(options) -> str:
    return ", ".join(options[:-1]) + " or " + options[-1] if len(options) > 1 else options[0]


def _number(name, default, low, high, setting, when=""):
    what = f"{name or setting} is a whole number from {low} to {high}"
    return Key(name, default, r"[0-9]{1,7}", what, setting, "number", low, high, when)


def _choose(name, default, options, setting, when=""):
    return Key(
        name, default, _choice(options), f"{name or setting} is {_either(options)}", setting, "choice", when=when
    )


def _flag(name, default, setting, when=""):
    return Key(name, default, "yes|no", f"{name} is yes or no", setting, "flag", when=when)


def _client(setting, default="", **more):
    """A setting only the client uses (its rollout, its files): no key in ENV.conf."""
    return Key("", default, setting=setting, **more)


KEYS = (
    Key("APP_DIR", "", setting="app_dir", yaml=False),  # an absolute path: checked on its own (env.py)
    Key("PROJECT", "", PROJECT_RE, "invalid PROJECT", "project", yaml=False),
    _choose("COMPOSE", "docker compose", COMPOSE_COMMANDS, "compose_command"),
    Key("COMPOSE_FILES", "docker-compose.yml", setting="compose_files", kind="words"),
    Key("SERVICES", "web proxy", setting="services", kind="words"),
    Key("WEB_SERVICE", "web", SERVICE_RE, "invalid WEB_SERVICE", "web_service"),
    Key("DB_SERVICE", "", setting="db_service"),
    Key("PROXY_SERVICE", "", setting="proxy_service", value="proxy"),
    Key("MANAGE", "python manage.py", setting="manage"),
    Key("VERSION_RE", "", setting="version_pattern", value=r"^[0-9a-f]{7,40}$"),
    Key("DOCKER_HOST", "", setting="docker_host"),
    _number("HEALTH_TIMEOUT", "60", 1, 3600, "health_timeout"),
    _number("DRAIN_SECONDS", "1", 0, 300, "drain_seconds"),
    _number("DNS_VALID", "1", 1, 60, "dns_valid"),
    _number("STATIC_KEEP", "3", 0, 100, "static_keep"),
    # Seconds the previous version's containers stay ready for an instant rollback, and how:
    # stopped (no CPU, no memory; the app server starts again) or running idle (warm.py).
    _number("WARM_ROLLBACK", "600", 0, 86400, "warm_rollback", when="WARM_ROLLBACK"),
    _choose("WARM_KEEP", "stopped", ("stopped", "running"), "warm_rollback_keep", when="WARM_KEEP"),
    _flag("BACKUP", "no", "backup"),
    _number("BACKUP_KEEP", "10", 1, 1000, "backup_keep"),
    _choose("ORDERING", "none", ORDERINGS, "ordering"),
    _choose("SWITCH", "slots", SWITCHES, "switch"),
    _choose("PRIORITY", "low", PRIORITIES, "deploy_priority"),
    Key("APP_FILES_SHA256", ""),
    # The hooks and the manage allowlist: one value a line (their checks: pushdeploy/management.py).
    Key("HOOK_BEFORE_SWITCH", setting="before_switch", kind="list", value=[]),
    Key("HOOK_AFTER_SWITCH", setting="after_switch", kind="list", value=[]),
    Key("MANAGE_COMMAND", setting="manage_commands", kind="list"),  # None: management.DEFAULT_COMMANDS
    # Cron jobs (`cron:`): NAME POLICY HOSTS and five schedule fields, then a management command (cron.py).
    _client("cron", value={}),
    Key("CRON_JOB", setting="cron_jobs", kind="list", yaml=False),
    # Roles (`roles:`): NAME KIND HOSTS, the services besides web on the app's image (roles.py).
    _client("roles", value={}),
    Key("ROLE", setting="roles", kind="list", yaml=False),
    # Pull mode (`pull:`): the channel pattern is facts.CHANNEL_RE (env.py; the client: pushdeploy/pull.py).
    _client("pull", value={}),
    Key("PULL_CHANNEL", "", setting="pull_channel", when="PULL_CHANNEL", yaml=False),
    # Whole seconds: cron checks at most once a minute, a timer every 10 s.
    Key(
        "PULL_EVERY",
        "60",
        r"[0-9]{1,7}",
        "PULL_EVERY is a whole number from 10 to 86400",
        "pull_every",
        "number",
        10,
        86400,
        when="PULL_CHANNEL",
        yaml=False,
    ),
    # A private registry (`registry:`): root's Docker logged in to it (ETC/ENV.docker; pushdeploy/registry.py).
    _client("registry", value={}),
    Key("REGISTRY", "", setting="registry_server", when="REGISTRY", yaml=False),  # facts.REGISTRY_RE (env.py)
    Key("REGISTRY_USER", "", setting="registry_user", when="REGISTRY", yaml=False),
    # HTTPS at the proxy (`tls:`): a certificate and key on the server, root-only (tls.py; pushdeploy/tls.py).
    _client("tls", value={}),
    Key("TLS", "off", _choice(TLS_MODES), f"TLS is {_either(TLS_MODES)}", "tls_mode", "choice", when="TLS", yaml=False),
    Key(
        "TLS_CERTIFICATE",
        "",
        f"({SERVER_PATH_RE})?",
        "TLS_CERTIFICATE is an absolute path",
        "tls_certificate",
        when="TLS",
        yaml=False,
    ),
    Key("TLS_KEY", "", f"({SERVER_PATH_RE})?", "TLS_KEY is an absolute path", "tls_key", when="TLS", yaml=False),
    Key(
        "TLS_ACME_DOMAINS",
        "",
        f"({DOMAIN_RE}( {DOMAIN_RE}){{0,19}})?",
        "TLS_ACME_DOMAINS are host names",
        "tls_acme_domains",
        "words",
        when="TLS_ACME_DOMAINS",
        yaml=False,
    ),
    Key(
        "TLS_ACME_EMAIL",
        "",
        f"({EMAIL_RE})?",
        "TLS_ACME_EMAIL is an e-mail address",
        "tls_acme_email",
        when="TLS_ACME_DOMAINS",
        yaml=False,
    ),
    Key(
        "TLS_ACME_DIRECTORY",
        "",
        f"({ACME_DIRECTORY_RE})?",
        "TLS_ACME_DIRECTORY is an https:// URL",
        "tls_acme_directory",
        when="TLS_ACME_DOMAINS",
        yaml=False,
    ),
    Key(
        "TLS_ACME_CA",
        "",
        f"({SERVER_PATH_RE})?",
        "TLS_ACME_CA is an absolute path",
        "tls_acme_ca",
        when="TLS_ACME_DOMAINS",
        yaml=False,
    ),
    Key(
        "TLS_ACME_FIRST",
        "",
        rf"({PEER_RE})?",
        "TLS_ACME_FIRST is ADDRESS:PORT",
        "tls_acme_first",
        when="TLS_ACME_DOMAINS",
        yaml=False,
    ),
    Key("TLS_PUBLISH", "443", PUBLISH_RE, "TLS_PUBLISH is [ADDRESS:]PORT", "tls_publish", when="TLS", yaml=False),
    Key(
        "TLS_HSTS",
        "0",
        r"[0-9]{1,8}",
        "TLS_HSTS is 0 to 63072000 (seconds)",
        "tls_hsts",
        "number",
        0,
        63072000,
        "TLS",
        yaml=False,
    ),
    Key("TLS_REDIRECT", "yes", "yes|no", "TLS_REDIRECT is yes or no", "tls_redirect", "flag", when="TLS", yaml=False),
    _choose("ENGINE", "compose", ENGINES, "engine", when="ENGINE"),
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
    Key("BACKUP_IMAGE", "", setting="backup_image", when="BACKUP_IMAGE"),  # an image: facts.IMAGE_RE (env.py)
    Key("SCRUB", "", setting="scrub", when="SCRUB"),
    _flag("REVIEW_TEMPLATE", "no", "review_template", when="REVIEW_TEMPLATE"),
    Key("REVIEW_DOMAIN", "", setting="review_domain", when="REVIEW_TEMPLATE", value="review.localhost"),
    _number("REVIEW_PORT", "8088", 1, 65535, "review_port", when="REVIEW_TEMPLATE"),
    _number("REVIEW_MAX", "5", 1, 999, "review_max", when="REVIEW_TEMPLATE"),
    Key("REVIEW_SEED", "fresh", setting="review_seed", when="REVIEW_TEMPLATE"),
    Key("KEYS_SHA256", "", when="KEYS_SHA256"),  # the named keys' scopes (keys.json), for the settings hash only
    # The client's own: how it rolls out across hosts, what it installs.
    _choose("", "first", MIGRATE_ON, "migrate_on"),
    Key("", "100%", setting="batch_size"),  # hosts per batch after the first (pushdeploy/rollout.py checks it)
    _choose("", "rollback", ON_FAILURE, "on_failure"),
    _client("require_tag", "no", kind="flag"),
    _client("files", value={}),
    _client("server_env"),
)

# Keys that may repeat, one value a line: the hooks and the manage allowlist.
CONF_KEYS = tuple(key for key in KEYS if key.name)  # what the server reads
LISTS = tuple(key.name for key in CONF_KEYS if key.kind == "list")
DEFAULTS = {key.name: key.default for key in CONF_KEYS if key.kind != "list"}
# What the client checks in invoke.yaml's settings of the same name (the pull keys: pull.py).
CHECKED = tuple(key for key in KEYS if key.setting and key.yaml and key.kind in ("number", "choice"))


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
        if isinstance(value, str) and value.isascii() and value.isdigit():
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
    for key in CONF_KEYS:
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


def setting_defaults() -> dict:
    """invoke.yaml's defaults: every setting of the table that is one of its own, typed
    (a fresh copy each time: the caller may keep and change it)."""
    import copy

    return {key.setting: copy.deepcopy(_typed(key)) for key in KEYS if key.setting and key.yaml}


def _typed(key: Key):
    if key.value is not None or key.kind == "list":
        return key.value
    if key.kind == "number":
        return int(key.default)
    if key.kind == "flag":
        return key.default == "yes"
    if key.kind == "words":
        return key.default.split()
    return key.default


KEYS_BY_NAME = {key.name: key for key in CONF_KEYS}
