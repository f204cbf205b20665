"""Settings: the environments from the Invoke config, local secrets from .env.

Everything is validated here, once, into plain frozen values, before any
connection is made. An error names the key and the file it came from.

The Invoke config (``invoke.yaml`` next to ``tasks.py``, overridable with
``INVOKE_DEPLOY_...`` variables) holds what is committed and shared. The dotenv
file (``.env``, or the file named by ``DEPLOY_DOTENV``) holds what belongs to
one machine or is secret; variables already in the process environment win.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pushdeploy import cron, management, protocol, pull, registry, rollout, sources, sshconfig
from pushdeploy import keys as deploy_keys
from pushdeploy import roles as roles_setting
from pushdeploy import tls as tls_setting

from pdserver import schema

CONFIG_FILE = "invoke.yaml"

_HOST = re.compile(
    r"^(?:(?P<user>[a-z_][a-z0-9_-]{0,31})@)?(?P<host>[A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\])(?::(?P<port>[0-9]{1,5}))?$"
)
# The choices and names the server checks again, from its own schema (pdserver/schema.py).
_PROJECT = re.compile(f"^{schema.PROJECT_RE}$")
_SERVICE = re.compile(f"^{schema.SERVICE_RE}$")
_SAFE_WORD = re.compile(r"^[A-Za-z0-9_./=:-]+$")
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_.@+-]+(/[A-Za-z0-9_.@+-]+)*$")
_DOCKER_HOST = re.compile(r"^(unix:///[A-Za-z0-9_./-]+|tcp://[A-Za-z0-9_.-]+:[0-9]+|ssh://[A-Za-z0-9_.@-]+)$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
COMPOSE_COMMANDS = schema.COMPOSE_COMMANDS
ORDERINGS, SWITCHES, PRIORITIES, ENGINES = schema.ORDERINGS, schema.SWITCHES, schema.PRIORITIES, schema.ENGINES
MIGRATE_ON = schema.MIGRATE_ON
ON_FAILURE = schema.ON_FAILURE


class ConfigError(Exception):
    """Bad or missing configuration: says which key, in which file, and what to do."""

    def __init__(self, source: str, key: str, problem: str):
        super().__init__(f"{source}: {key}: {problem}")
        self.source, self.key, self.problem = source, key, problem


@dataclass(frozen=True)
class Host:
    user: str
    hostname: str  # where to connect: an address, or the HostName an ssh config gives an alias
    port: int = 22
    via: tuple[Host, ...] = ()  # jump hosts, in the order they are reached (jump:, or ProxyJump)
    alias: str = ""  # the name invoke.yaml used, when an ssh config maps it to another HostName
    identities: tuple[str, ...] = ()  # the ssh config's IdentityFile (used when no key is set)
    config_user: str = ""  # the ssh config's User: the admin connection's when DEPLOY_ADMIN_USER is not set

    def __str__(self) -> str:
        if self.alias:
            return self.alias
        return self.hostname if self.port == 22 else f"{self.hostname}:{self.port}"


@dataclass(frozen=True)
class Environment:
    name: str
    hosts: tuple[Host, ...]
    app_dir: str
    project: str
    compose_command: str
    compose_files: tuple[str, ...]
    services: tuple[str, ...]
    web_service: str
    db_service: str
    proxy_service: str
    manage: str
    version_pattern: str
    require_tag: bool
    health_timeout: int
    backup: bool = False
    backup_keep: int = 10
    backup_image: str = ""  # an image with pg_dump, run beside web for backups (swarm; compose without db_service)
    drain_seconds: int = 1
    dns_valid: int = 1
    warm_rollback: int = 600  # seconds the previous version stays ready for an instant rollback
    warm_rollback_keep: str = "stopped"  # how: stopped, or running idle (a faster rollback)
    static_keep: int = 3
    ordering: str = "none"
    migrate_on: str = "first"
    batch_size: str = "100%"  # hosts per batch after the first: a number, or a share such as 25%
    on_failure: str = "rollback"  # a failed batch: switched batches go back (rollback), or stay (halt)
    switch: str = "slots"  # recreate: stop and recreate web in place (layouts the slots cannot serve)
    # the deploy's own work yields the CPU to the containers that serve (normal: it does not)
    deploy_priority: str = "low"
    docker_host: str = ""
    files: tuple[tuple[str, str], ...] = ()  # (path on the server, path in the project)
    server_env: str = ""  # local template for the server's .env, used by server.setup
    # management commands run before the switch (see pushdeploy/management.py)
    before_switch: tuple[tuple[str, ...], ...] = ()
    after_switch: tuple[tuple[str, ...], ...] = ()
    manage_commands: tuple[management.Allowed, ...] = ()  # what `inv manage` may run
    cron_jobs: tuple[cron.Job, ...] = ()  # `cron:`: management commands on a schedule (pushdeploy/cron.py)
    roles: tuple[roles_setting.Role, ...] = ()  # `roles:`: workers and a scheduler besides web (pushdeploy/roles.py)
    pull_channel: str = ""  # pull mode: the tag the server's agent follows (empty: push mode)
    pull_every: int = pull.DEFAULT_EVERY  # seconds between the agent's checks
    # a private registry (`registry:`): root's Docker on each host logs in to it (pushdeploy/registry.py)
    registry_server: str = ""
    registry_user: str = ""
    registry_ca: str = ""  # its CA certificate, a project file (a self-hosted registry's own CA)
    tls: tls_setting.Tls = tls_setting.OFF  # `tls:`: HTTPS at the proxy (pushdeploy/tls.py)
    engine: str = "compose"  # swarm: compose_files are a stack, deployed with `docker stack deploy` on a manager
    manager_compose_files: tuple[str, ...] = ()  # swarm: compose files run with compose on the manager (a proxy)
    converge_timeout: int = 300  # swarm: how long the services may take to converge
    scrub: str = ""  # after a restore of another environment's data: sql:FILE (in files) or manage:COMMAND
    review_template: bool = False  # a template of review environments NAME-N (see pushdeploy/review.py)
    review_domain: str = ""
    review_port: int = 8088
    review_max: int = 5
    review_seed: str = "fresh"
    # inv secrets.*: an age-encrypted file in the repository (to these recipients), or a command
    secrets_file: str = ""  # relative to the project: secrets/ENV.env.age unless set
    secrets_recipients: tuple[str, ...] = ()
    secrets_command: str = ""

    # ENV.conf's TLS keys (pdserver/schema.py), from `tls:`
    tls_mode = property(lambda self: self.tls.mode)
    tls_certificate = property(lambda self: self.tls.certificate)
    tls_key = property(lambda self: self.tls.key)
    tls_publish = property(lambda self: self.tls.publish)
    tls_hsts = property(lambda self: self.tls.hsts)
    tls_redirect = property(lambda self: self.tls.redirect)
    tls_acme_domains = property(lambda self: list(self.tls.domains))
    tls_acme_email = property(lambda self: self.tls.email)
    tls_acme_directory = property(lambda self: self.tls.directory)
    tls_acme_ca = property(lambda self: self.tls.ca_bundle)
    tls_acme_first = property(lambda self: self.tls.first)

    def accepts(self, version: str) -> bool:
        return protocol.matches(protocol.VERSION_RE, version) and (
            protocol.matches(re.compile(self.version_pattern), version) or pull.is_pinned(self.pull_channel, version)
        )


@dataclass(frozen=True)
class Access:
    """How this machine reaches the servers (from .env / the process environment)."""

    ssh_key: str = ""
    known_hosts: str = ""
    known_hosts_file: str = ""
    admin_user: str = ""  # DEPLOY_ADMIN_USER; unset: admin_for() asks the ssh config, else root
    admin_key: str = ""
    ci_public_key: str = ""
    age_identity: str = ""  # DEPLOY_AGE_IDENTITY: an age identity file (decrypts secrets/ENV.env.age)
    age_key: str = ""  # DEPLOY_AGE_KEY: the identity itself (a CI secret), when there is no file

    def admin_for(self, host: Host) -> str:
        """Who the admin connection logs in as on HOST: DEPLOY_ADMIN_USER, else the User the
        ssh config gives that host, else root."""
        return self.admin_user or host.config_user or "root"

    def as_root(self, host: Host) -> bool:
        """Whether the admin's commands on HOST run as root already (else through sudo -n)."""
        return self.admin_for(host) == "root"


@dataclass(frozen=True)
class Settings:
    app: str
    deploy_user: str
    environments: Mapping[str, Environment]
    access: Access = field(default_factory=Access)
    root: Path = protocol.PROJECT_ROOT  # the project's folder
    keys: tuple = ()  # deploy.keys: named deploy keys, each held to a scope (pushdeploy/keys.py)
    sources: sources.Sources | None = None  # which file set each key (Invoke's config files)

    def root_of(self, *keys) -> Path:
        """The folder a relative path in the first of KEYS that a file sets resolves against:
        that file's."""
        return self.sources.root_of(*keys) if self.sources else self.root

    def name_of(self, key) -> str:
        """The settings file that set KEY, for messages."""
        return self.sources.name_of(key) if self.sources else CONFIG_FILE

    def environment(self, name: str) -> Environment:
        try:
            return self.environments[name]
        except KeyError:
            known = ", ".join(sorted(self.environments)) or "none"
            raise ConfigError(
                self.name_of("deploy.environments"),
                f"deploy.environments.{name}",
                f"no such environment (configured: {known})",
            ) from None


# invoke.yaml's settings and their defaults: the one table both sides read (pdserver/schema.py).
DEFAULTS = schema.setting_defaults()

_SCRUB = re.compile(r"^(sql:[A-Za-z0-9_.@+-]+(/[A-Za-z0-9_.@+-]+)*|manage:[a-z][a-z0-9_]{0,63})$")
_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,200}[a-z0-9])?$")
_TEMPLATE_NAME = re.compile(r"^[a-z][a-z0-9]{0,15}$")
_SEED = re.compile(r"^(fresh|backup:[a-z][a-z0-9-]{0,31})$")


def _as_list(value, key: str) -> list:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ConfigError(CONFIG_FILE, key, f"expected a list or a comma-separated string, got {value!r}")


def _check(pattern: re.Pattern[str], value, key: str, what: str) -> str:
    if not isinstance(value, str) or not protocol.matches(pattern, value):
        raise ConfigError(CONFIG_FILE, key, f"{value!r} is not {what}")
    return value


def parse_host(
    text: str, default_user: str, key: str, lookup: sshconfig.Lookup = sshconfig.no_config, jump: str = "", where=""
) -> Host:
    """user@host[:port] as invoke.yaml names it, with what the ssh config (LOOKUP) says of it
    and its jump hosts (JUMP, the environment's `jump:`, else the config's ProxyJump)."""
    match = _HOST.match(text.strip()) if isinstance(text, str) else None
    if not match:
        raise ConfigError(CONFIG_FILE, key, f"{text!r} is not user@host[:port]")
    port = match.group("port")
    if port is not None and not 0 < int(port) < 65536:
        raise ConfigError(CONFIG_FILE, key, f"port {port} is out of range")
    name = match.group("host").strip("[]")
    hostname, port, identities, proxy = sshconfig.target(name, None if port is None else int(port), lookup)
    try:
        hops = sshconfig.hops(jump or proxy, lookup, [f"{hostname}:{port}"]) if jump or proxy else []
    except sshconfig.BadJump as error:
        raise ConfigError(CONFIG_FILE, where or key, f"{error}") from None
    via = tuple(Host(user, address, number, (), alias, ids) for user, address, number, ids, alias in hops)
    alias = name if hostname != name else ""
    user = match.group("user") or default_user
    # The ssh config's User, for the admin connection: not one a server could not have (a
    # `Host *` block's Jane.Doe), nor the deploy account (`ssh web1` as it: it has no sudo).
    config_user = str((lookup(name) or {}).get("user") or "")
    if not protocol.matches(_USER, config_user) or config_user == user:
        config_user = ""
    return Host(user, hostname, port, via, alias, identities, config_user)


def _version_pattern(value, key: str) -> str:
    if not isinstance(value, str) or not value.startswith("^") or not value.endswith("$"):
        raise ConfigError(CONFIG_FILE, key, f"{value!r} must be an anchored POSIX regex (^...$)")
    if "\\" in value:
        raise ConfigError(
            CONFIG_FILE, key, "use POSIX classes such as [0-9], not backslash escapes: bash reads this pattern too"
        )
    try:
        re.compile(value)
    except re.error as error:
        raise ConfigError(CONFIG_FILE, key, f"not a valid regex: {error}") from None
    return value


# settings the server never sees
CLIENT_ONLY = ("app_dir", "hosts", "jump", "project", "secrets_command", "secrets_file", "secrets_recipients")


def _environment(
    name: str,
    raw: Mapping,
    defaults: Mapping,
    deploy_user: str,
    app: str,
    lookup: sshconfig.Lookup = sshconfig.no_config,
) -> Environment:
    prefix = f"deploy.environments.{name}"
    if not protocol.matches(protocol.ENV_RE, name):
        raise ConfigError(CONFIG_FILE, prefix, f"environment names match {protocol.ENV_RE.pattern}")
    if not isinstance(raw, Mapping):
        raise ConfigError(CONFIG_FILE, prefix, "expected a mapping of settings")
    unknown = sorted(set(raw) - set(DEFAULTS) - set(CLIENT_ONLY))
    if unknown:
        raise ConfigError(
            CONFIG_FILE,
            f"{prefix}.{unknown[0]}",
            f"unknown setting (known: {', '.join(sorted([*DEFAULTS, *CLIENT_ONLY]))})",
        )
    merged = {**DEFAULTS, **defaults, **raw}

    def key(k: str) -> str:
        """Where setting K's value came from: this environment's settings, or deploy.defaults."""
        return f"deploy.defaults.{k}" if k in defaults and k not in raw else f"{prefix}.{k}"

    hosts_raw = _as_list(merged.get("hosts") or [], key("hosts"))
    if not hosts_raw:
        raise ConfigError(CONFIG_FILE, key("hosts"), "missing: list at least one user@host[:port]")
    jump = merged.get("jump") or ""
    if not isinstance(jump, str):
        raise ConfigError(CONFIG_FILE, key("jump"), "expected [user@]bastion[:port], several separated by commas")
    hosts = tuple(
        parse_host(h, deploy_user, f"{key('hosts')}[{i}]", lookup, jump, key("jump") if jump else "")
        for i, h in enumerate(hosts_raw)
    )

    project = _check(
        _PROJECT, merged.get("project") or f"{app}-{name}", key("project"), "a compose project name ([a-z0-9_-])"
    )
    app_dir = merged.get("app_dir") or f"/srv/pushdeploy/{project}"
    if (
        not isinstance(app_dir, str)
        or not app_dir.startswith("/")
        or ".." in app_dir
        or not protocol.matches(_SAFE_PATH, app_dir.lstrip("/"))
    ):
        raise ConfigError(CONFIG_FILE, key("app_dir"), f"{app_dir!r} must be an absolute path of plain names")
    compose_files = tuple(
        _check(_SAFE_PATH, f, key("compose_files"), "a relative path")
        for f in _as_list(merged["compose_files"], key("compose_files"))
    )
    services = tuple(
        _check(_SERVICE, s, key("services"), "a service name") for s in _as_list(merged["services"], key("services"))
    )
    web_service = _check(_SERVICE, merged["web_service"], key("web_service"), "a service name")
    db_service = merged["db_service"] or ""
    if db_service:
        _check(_SERVICE, db_service, key("db_service"), "a service name")
    if merged["backup"] and not db_service and merged["engine"] != "swarm" and not merged["backup_image"]:
        raise ConfigError(
            CONFIG_FILE,
            key("backup"),
            "backups need db_service (the PostgreSQL service) to be set, or backup_image (an image with pg_dump, "
            "run beside web to reach the database server it names, e.g. postgres:16)",
        )
    if not compose_files or not services:
        raise ConfigError(CONFIG_FILE, key("services" if compose_files else "compose_files"), "must not be empty")
    manage = merged["manage"]
    if (
        not isinstance(manage, str)
        or not all(protocol.matches(_SAFE_WORD, w) for w in manage.split())
        or not manage.split()
    ):
        raise ConfigError(CONFIG_FILE, key("manage"), f"{manage!r} must be plain words, e.g. 'python manage.py'")
    # What the server checks again, by the same table (pdserver/schema.py): numbers and choices.
    checked = {}
    for schema_key in schema.CHECKED:
        checked[schema_key.setting], why = schema.setting(schema_key, merged[schema_key.setting])
        if why:
            raise ConfigError(CONFIG_FILE, key(schema_key.setting), why)
    batch_size = str(merged["batch_size"])
    try:
        rollout.batch_hosts(batch_size, 1)
    except ValueError as error:
        raise ConfigError(CONFIG_FILE, key("batch_size"), str(error)) from None
    proxy_service = merged["proxy_service"] or ""
    if proxy_service:
        _check(_SERVICE, proxy_service, key("proxy_service"), "a service name")
    docker_host = merged["docker_host"] or ""
    if docker_host and not protocol.matches(_DOCKER_HOST, docker_host):
        raise ConfigError(
            CONFIG_FILE, key("docker_host"), f"{docker_host!r} is not unix:///path, tcp://host:port or ssh://host"
        )
    pull_channel, pull_every = _parsed(pull.parse, merged["pull"], key("pull"))
    found = _parsed(registry.parse, merged["registry"], key("registry"))
    engine, manager_compose_files = _engine(merged, key)
    backup_image = merged["backup_image"] or ""
    external = engine == "swarm" or not merged["db_service"]  # the database server is outside the project
    if backup_image and (not external or not protocol.matches(protocol.IMAGE_RE, backup_image)):
        raise ConfigError(
            CONFIG_FILE,
            key("backup_image"),
            f"{backup_image!r}: an image reference (registry/name:tag), for engine: swarm only, or compose with "
            "db_service: '' (a database server outside the project); compose with a db_service backs up through it",
        )
    files_raw = merged["files"] or {}
    if not isinstance(files_raw, Mapping):
        raise ConfigError(CONFIG_FILE, key("files"), "expected a mapping of server path: project path")
    files = []
    for remote, local in sorted(files_raw.items()):
        if not protocol.matches(_SAFE_PATH, str(remote)) or ".." in str(remote).split("/") or remote == ".env":
            raise ConfigError(
                CONFIG_FILE,
                key(f"files.{remote}"),
                "the server path must be relative to app_dir, plain names, not .env",
            )
        if str(remote).split("/")[0] in ("tls", "acme"):
            first = str(remote).split("/")[0]
            raise ConfigError(
                CONFIG_FILE, key(f"files.{remote}"), f"{first}/ in app_dir is pushdeploy's (HTTPS: docs/https.md)"
            )
        files.append((str(remote), str(local)))
    hooks = {}
    for kind in management.HOOK_KINDS:
        try:
            hooks[kind] = management.hooks(merged[kind], kind)
        except management.Refused as error:
            raise ConfigError(CONFIG_FILE, key(kind), str(error)) from None
    try:
        manage_commands = management.allowlist(merged["manage_commands"])
    except management.Refused as error:
        raise ConfigError(CONFIG_FILE, key("manage_commands"), str(error)) from None
    cron_jobs = _parsed(cron.parse, merged["cron"], key("cron"), manage_commands)
    roles = _parsed(
        roles_setting.parse,
        merged["roles"],
        key("roles"),
        [str(h) for h in hosts_raw],
        tuple(name for name in (*services, web_service, db_service, merged["proxy_service"]) if name),
        engine,
    )
    tls = _parsed(
        tls_setting.parse,
        merged["tls"],
        key("tls"),
        engine,
        proxy_service,
        bool(merged["review_template"]),
        bool(merged["manager_compose_files"]),
    )
    tls = _parsed(tls_setting.across, tls, [h.hostname for h in hosts], key("tls.acme"))
    scrub = str(merged["scrub"] or "")
    if scrub and not protocol.matches(_SCRUB, scrub):
        raise ConfigError(
            CONFIG_FILE, key("scrub"), f"{scrub!r} must be sql:FILE (a server path under files:) or manage:COMMAND"
        )
    if scrub.startswith("sql:") and (".." in scrub or scrub[4:] not in dict(files)):
        raise ConfigError(
            CONFIG_FILE,
            key("scrub"),
            f"{scrub[4:]!r} is not a server path under files: (list it there so server.setup installs it)",
        )
    review_template = bool(merged["review_template"])
    if review_template and not protocol.matches(_TEMPLATE_NAME, name):
        raise ConfigError(
            CONFIG_FILE, prefix, "a review template's name is [a-z][a-z0-9]{0,15} (no '-'): its environments are NAME-N"
        )
    if review_template and len(hosts) != 1:
        raise ConfigError(
            CONFIG_FILE,
            key("hosts"),
            "a review template runs on one host (its front proxy routes to the review environments there)",
        )
    review_domain = _check(
        _DOMAIN, merged["review_domain"], key("review_domain"), "a domain name (review-N answers as pr-N.DOMAIN)"
    )
    review_seed = _check(_SEED, merged["review_seed"], key("review_seed"), "fresh or backup:ENV")
    return Environment(
        name=name,
        hosts=hosts,
        app_dir=app_dir.rstrip("/"),
        project=project,
        compose_files=compose_files,
        services=services,
        web_service=web_service,
        db_service=db_service,
        manage=" ".join(manage.split()),
        version_pattern=_version_pattern(merged["version_pattern"], key("version_pattern")),
        require_tag=bool(merged["require_tag"]),
        backup=bool(merged["backup"]),
        backup_image=backup_image,
        batch_size=batch_size,
        proxy_service=proxy_service,
        docker_host=docker_host,
        files=tuple(files),
        server_env=str(merged["server_env"] or ""),
        before_switch=hooks["before_switch"],
        after_switch=hooks["after_switch"],
        manage_commands=manage_commands,
        cron_jobs=cron_jobs,
        roles=roles,
        tls=tls,
        pull_channel=pull_channel,
        pull_every=pull_every,
        **(dict(registry_server=found.server, registry_user=found.user, registry_ca=found.ca) if found else {}),
        **{**checked, "engine": engine},
        manager_compose_files=manager_compose_files,
        scrub=scrub,
        review_template=review_template,
        review_domain=review_domain,
        review_seed=review_seed,
        **_secrets(merged, key, name),
    )


def _parsed(parse, *args):
    """A setting's own module parsing it (pull, registry, cron, roles): its error, 'KEY: problem', as a ConfigError."""
    try:
        return parse(*args)
    except (
        pull.PullError,
        registry.RegistryError,
        cron.CronError,
        roles_setting.RolesError,
        tls_setting.TlsError,
    ) as error:
        where, _, problem = str(error).partition(": ")
        raise ConfigError(CONFIG_FILE, where, problem) from None


_RECIPIENT = re.compile(r"^(age1[0-9a-z]{58}|ssh-(ed25519|rsa) [A-Za-z0-9+/=]+)$")


def _secrets(merged: Mapping, key, name: str) -> dict:
    """secrets_file, secrets_recipients (age recipients), secrets_command: checked, never run here."""
    secrets_file = merged.get("secrets_file") or f"secrets/{name}.env.age"
    if not isinstance(secrets_file, str) or not protocol.matches(_SAFE_PATH, secrets_file) or ".." in secrets_file:
        raise ConfigError(CONFIG_FILE, key("secrets_file"), "a path relative to the project, without ..")
    recipients = tuple(_as_list(merged.get("secrets_recipients") or [], key("secrets_recipients")))
    for recipient in recipients:
        if not isinstance(recipient, str) or not _RECIPIENT.match(recipient.strip()):
            raise ConfigError(
                CONFIG_FILE,
                key("secrets_recipients"),
                f"{str(recipient)[:20]!r}... is not an age recipient (age1..., or an ssh-ed25519/ssh-rsa public key)",
            )
    command = merged.get("secrets_command") or ""
    if not isinstance(command, str):
        raise ConfigError(CONFIG_FILE, key("secrets_command"), "a command line that prints KEY=VALUE lines")
    return {
        "secrets_file": secrets_file,
        "secrets_recipients": tuple(r.strip() for r in recipients),
        "secrets_command": command,
    }


def _engine(merged: Mapping, key) -> tuple[str, tuple[str, ...]]:
    """engine and manager_compose_files, checked: swarm needs Compose v2 (to render the stack) and no db_service."""
    engine = merged["engine"]  # one of schema.ENGINES, checked with the other choices
    files = tuple(
        _check(_SAFE_PATH, f, key("manager_compose_files"), "a relative path")
        for f in _as_list(merged["manager_compose_files"] or [], key("manager_compose_files"))
    )
    if any(".." in f.split("/") for f in files):
        raise ConfigError(CONFIG_FILE, key("manager_compose_files"), "paths are relative to app_dir, without ..")
    if engine != "swarm":
        if files:
            raise ConfigError(CONFIG_FILE, key("manager_compose_files"), "only for engine: swarm")
        return engine, files
    if merged["compose_command"] != "docker compose":
        raise ConfigError(
            CONFIG_FILE,
            key("compose_command"),
            "engine: swarm needs `docker compose` (v2) on the manager: it renders the stack file as JSON",
        )
    if merged["db_service"]:
        raise ConfigError(
            CONFIG_FILE,
            key("db_service"),
            "engine: swarm runs no database service of its own: set db_service: '' (backups: backup_image)",
        )
    if merged["backup"] and not merged["backup_image"]:
        raise ConfigError(
            CONFIG_FILE,
            key("backup_image"),
            "engine: swarm backs up from the database server the web service names (POSTGRES_HOST...): set backup_image to an image with pg_dump, e.g. postgres:16",
        )
    return engine, files


def access_from(values: Mapping[str, str], source: str, environ: Mapping[str, str] = os.environ) -> Access:
    """The DEPLOY_* access settings; a relative path from the .env file resolves against
    its folder (one from the process's environment, against the current folder)."""
    admin_user = values.get("DEPLOY_ADMIN_USER") or ""
    if admin_user and not protocol.matches(_USER, admin_user):
        raise ConfigError(source, "DEPLOY_ADMIN_USER", f"{admin_user!r} is not a user name")

    def path(name: str) -> str:
        if not values.get(name):
            return ""
        found = Path(values[name]).expanduser()
        if not found.is_absolute() and name not in environ:
            found = Path(source).parent / found
        return str(found)

    for name in ("DEPLOY_SSH_KEY", "DEPLOY_ADMIN_KEY", "DEPLOY_KNOWN_HOSTS_FILE", "DEPLOY_AGE_IDENTITY"):
        if values.get(name) and not Path(path(name)).is_file():
            raise ConfigError(source, name, f"file {values[name]} does not exist")

    return Access(
        ssh_key=path("DEPLOY_SSH_KEY"),
        known_hosts=values.get("DEPLOY_KNOWN_HOSTS", ""),
        known_hosts_file=path("DEPLOY_KNOWN_HOSTS_FILE"),
        admin_user=admin_user,
        admin_key=path("DEPLOY_ADMIN_KEY"),
        age_identity=path("DEPLOY_AGE_IDENTITY"),
        age_key=values.get("DEPLOY_AGE_KEY", ""),
        ci_public_key=values.get("DEPLOY_CI_PUBLIC_KEY", ""),
    )


def from_config(
    deploy: Mapping | None,
    values: Mapping[str, str],
    source: str = ".env",
    root: Path = protocol.PROJECT_ROOT,
    environ: Mapping[str, str] = os.environ,
    ssh_root: Path | None = None,
) -> Settings:
    """Validate the ``deploy`` section of the Invoke config plus the dotenv values. SSH_ROOT:
    the folder a relative deploy.ssh_config resolves against (the file's that set it; ROOT)."""
    if not deploy:
        raise ConfigError(
            CONFIG_FILE, "deploy", "missing: add a `deploy:` section with `environments:` (see README, Configuration)"
        )
    app = _check(_PROJECT, deploy.get("app", "app"), "deploy.app", "an app name ([a-z0-9_-])")
    deploy_user = _check(_USER, deploy.get("deploy_user", "deploy"), "deploy.deploy_user", "a user name")
    defaults = deploy.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise ConfigError(CONFIG_FILE, "deploy.defaults", "expected a mapping")
    environments_raw = deploy.get("environments") or {}
    if not isinstance(environments_raw, Mapping) or not environments_raw:
        raise ConfigError(
            CONFIG_FILE, "deploy.environments", "missing: define at least one environment (staging, production, ...)"
        )
    ssh_config = deploy.get("ssh_config", "")
    if not isinstance(ssh_config, str):
        raise ConfigError(CONFIG_FILE, "deploy.ssh_config", "expected the path of an OpenSSH client config, or none")
    try:
        lookup = (
            sshconfig.no_config
            if ssh_config == "none"
            else sshconfig.load(
                str(_relative(ssh_config, ssh_root or root)) if ssh_config else sshconfig.DEFAULT_FILE,
                bool(ssh_config),
            )
        )
    except sshconfig.BadJump as error:
        raise ConfigError(CONFIG_FILE, "deploy.ssh_config", str(error)) from None
    environments = {
        name: _environment(name, raw, defaults, deploy_user, app, lookup) for name, raw in environments_raw.items()
    }
    _check_review_names(environments)
    try:
        keys = deploy_keys.from_config(deploy.get("keys"), environments)
    except deploy_keys.BadKeys as error:
        raise ConfigError(CONFIG_FILE, error.where, error.message) from None
    return Settings(
        app=app,
        deploy_user=deploy_user,
        environments=environments,
        access=access_from(values, source, environ),
        root=root,
        keys=keys,
    )


def _relative(path: str, root: Path) -> Path:
    found = Path(path).expanduser()
    return found if found.is_absolute() else root / found


def _check_review_names(environments: Mapping[str, Environment]) -> None:
    """An environment named like a template's review environment (qa-2 beside a template qa)
    would share its name, state and files with what `review-up qa-2` makes."""
    for name in environments:
        match = protocol.REVIEW_RE.search(name)
        if match and match.group(1) in environments and environments[match.group(1)].review_template:
            raise ConfigError(
                CONFIG_FILE,
                f"deploy.environments.{name}",
                f"named like a review environment of the template {match.group(1)!r} (TEMPLATE-N): rename it",
            )


def dotenv_values_for(environ: Mapping[str, str], root: Path = protocol.PROJECT_ROOT) -> tuple[dict[str, str], str]:
    """The dotenv file's DEPLOY_* values, overridden by the process environment."""
    from dotenv import dotenv_values

    path = Path(environ.get("DEPLOY_DOTENV") or root / ".env")
    if environ.get("DEPLOY_DOTENV") and not path.is_file():
        raise ConfigError("environment", "DEPLOY_DOTENV", f"file {path} does not exist")
    values = {k: v for k, v in dotenv_values(path).items() if v is not None} if path.is_file() else {}
    values.update({k: v for k, v in environ.items() if k.startswith("DEPLOY_")})
    return values, str(path)


def load(config, environ: Mapping[str, str] = os.environ) -> Settings:
    """Settings from an Invoke config object (or mapping) and the environment. Relative
    paths resolve against the file that names them; errors name that file."""
    deploy = config.get("deploy") if hasattr(config, "get") else None
    found = sources.of(config)
    values, source = dotenv_values_for(environ, found.fallback)
    try:
        loaded = from_config(
            _plain(deploy), values, source, found.fallback, environ, found.root_of("deploy.ssh_config")
        )
    except ConfigError as error:
        if error.source != CONFIG_FILE or not found.files:
            raise
        raise ConfigError(found.name_of(error.key), error.key, error.problem) from None
    return dataclasses.replace(loaded, sources=found)


def _plain(value):
    """Invoke's DataProxy -> plain dicts and lists."""
    if hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
