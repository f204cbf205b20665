"""An environment on this server: its settings (/etc/pushdeploy/ENV.conf) checked,
and where its files and state live. A file server.setup would not have written is
refused (exit 1) with what to do.
"""

from __future__ import annotations

import os

from . import conf, facts, schema
from .request import Refused, changes_django_setup

DEFAULTS, LISTS = schema.DEFAULTS, schema.LISTS


class Env:
    """An environment's name, its settings file and its values (KEY -> value; LISTS: KEY -> list)."""

    __slots__ = ("name", "conf_path", "values")

    def __init__(self, name: str, conf_path: str, values: dict):
        self.name, self.conf_path, self.values = name, conf_path, values

    def __getitem__(self, key: str):
        return self.values[key]

    @property
    def state_dir(self) -> str:
        return os.path.join(facts.STATE, self.name)

    @property
    def runs_dir(self) -> str:
        return os.path.join(self.state_dir, "runs")

    @property
    def history(self) -> str:
        return os.path.join(self.state_dir, "history.jsonl")

    @property
    def app_dir(self) -> str:
        return self.values["APP_DIR"]

    @property
    def docker_config(self) -> str:
        """Root's Docker client config for this environment's registry (its login), or ''.
        Beside the settings file: a review environment uses its template's."""
        return docker_config(self.conf_path) if self.values["REGISTRY"] else ""


def docker_config(conf_path: str) -> str:
    """ETC/ENV.docker for ETC/ENV.conf: the directory DOCKER_CONFIG names (config.json, 0600)."""
    return conf_path[: -len(".conf")] + ".docker"


def load(name: str, etc: str | None = None) -> Env:
    """The environment's settings, checked; Refused (64) when it is not set up here,
    exit 1 (Refused with code 1) when its file is not one server.setup writes."""
    if not facts.matches(facts.ENV_RE, name):
        raise Refused(f"invalid environment name '{name}'")
    path = conf.path(name, etc or facts.ETC)
    try:
        with open(path) as file:
            text = file.read()
    except FileNotFoundError:
        raise Refused(
            f"environment '{name}' is not set up on this server: run `inv server.setup --env {name}`"
        ) from None
    return Env(name, path, parse(text, path, name))


def parse(text: str, path: str, name: str) -> dict:
    values = dict(DEFAULTS, **{key: [] for key in LISTS})
    for key, found in conf.parse(text).items():
        if key not in DEFAULTS and key not in LISTS:
            raise Refused(f"{path}: unknown key '{key}': reinstall with `inv server.setup --env {name}`", 1)
        values[key] = found if key in LISTS else found[-1]
    if not values["APP_DIR"].startswith("/") or ".." in values["APP_DIR"]:
        raise Refused(f"{path}: APP_DIR must be an absolute path", 1)
    for key in schema.CONF_KEYS:
        why = key.kind != "list" and schema.problem(key, values[key.name])
        if why:
            raise Refused(f"{path}: {why}" + (f" '{values[key.name]}'" if why.startswith("invalid") else ""), 1)
    if values["PULL_CHANNEL"] and not facts.matches(facts.CHANNEL_RE, values["PULL_CHANNEL"]):
        raise Refused(f"{path}: invalid PULL_CHANNEL '{values['PULL_CHANNEL']}'", 1)
    if values["BACKUP_IMAGE"] and not facts.matches(facts.IMAGE_RE, values["BACKUP_IMAGE"]):
        raise Refused(f"{path}: invalid BACKUP_IMAGE", 1)
    if values["REGISTRY"] and not (
        facts.matches(facts.REGISTRY_RE, values["REGISTRY"])
        and facts.matches(facts.REGISTRY_USER_RE, values["REGISTRY_USER"])
    ):
        raise Refused(f"{path}: invalid REGISTRY or REGISTRY_USER", 1)
    if ".." in values["MANAGER_COMPOSE_FILES"]:
        raise Refused(f"{path}: MANAGER_COMPOSE_FILES are relative paths", 1)
    if values["TLS"] == "files" and not (values["TLS_CERTIFICATE"] and values["TLS_KEY"] and values["PROXY_SERVICE"]):
        raise Refused(f"{path}: TLS needs TLS_CERTIFICATE, TLS_KEY and PROXY_SERVICE", 1)
    if values["TLS"] == "acme" and not (
        values["TLS_ACME_DOMAINS"] and values["TLS_ACME_EMAIL"] and values["PROXY_SERVICE"]
    ):
        raise Refused(f"{path}: TLS=acme needs TLS_ACME_DOMAINS, TLS_ACME_EMAIL and PROXY_SERVICE", 1)
    if values["TLS"] != "off" and not 0 < int(values["TLS_PUBLISH"].rsplit(":", 1)[-1]) < 65536:
        raise Refused(f"{path}: TLS_PUBLISH's port is 1 to 65535", 1)
    for key in LISTS:
        for line in values[key]:
            if key == "CRON_JOB":  # NAME POLICY HOSTS and the schedule, then a command, checked as a hook's
                _check_management_line(path, name, "CRON_JOB", _cron_command(path, name, line))
            elif key == "ROLE":
                _check_role(path, name, line)
            else:
                _check_management_line(path, name, key, line)
    _check_roles_apart(path, name, values)
    return values


def _check_roles_apart(path: str, name: str, values: dict) -> None:
    """A role is a service of its own: named once, none of web, the proxy, the database or `services`."""
    names = [line.split()[0] for line in values["ROLE"]]
    taken = {values["WEB_SERVICE"], values["PROXY_SERVICE"], values["DB_SERVICE"], *values["SERVICES"].split()}
    clash = sorted({n for n in names if names.count(n) > 1 or n in taken})
    if clash:
        raise Refused(
            f"{path}: ROLE {clash[0]}: a role is named once and is none of web, proxy, db or services: "
            f"fix invoke.yaml and run `inv server.setup --env {name}`",
            1,
        )


def _check_role(path: str, name: str, line: str) -> None:
    from . import roles

    try:
        roles.parse_line(line)
    except ValueError as error:
        raise Refused(f"{path}: ROLE: {error}: fix invoke.yaml and run `inv server.setup --env {name}`", 1) from None


def _cron_command(path: str, name: str, line: str) -> str:
    from . import cron

    try:
        return " ".join(cron.parse_line(line).words)
    except ValueError as error:
        raise Refused(
            f"{path}: CRON_JOB: {error}: fix invoke.yaml and run `inv server.setup --env {name}`", 1
        ) from None


def _check_management_line(path: str, name: str, key: str, line: str) -> None:
    """A hook (HOOK_*: a command and PD_ARG_RE words) or an allowlist entry (MANAGE_COMMAND:
    a command and argument patterns), with the client's rules (pushdeploy/management.py)."""
    words = line.split()
    command = words[0] if words else ""
    if not facts.matches(facts.MANAGE_NAME_RE, command) or command in facts.MANAGE_FORBIDDEN:
        raise Refused(
            f"{path}: {key}: '{command}' is not a permitted management command: fix invoke.yaml and run `inv server.setup --env {name}`",
            1,
        )
    for word in words[1:]:
        if key == "MANAGE_COMMAND":
            if "\\" in word:
                raise Refused(f"{path}: {key}: backslash in pattern '{word}'", 1)
        elif not facts.matches(facts.ARG_RE, word) or changes_django_setup(word):
            raise Refused(f"{path}: {key}: invalid argument '{word}'", 1)


def current_version(env: Env) -> str:
    """VERSION= of the app's .env ('' when there is none)."""
    try:
        with open(os.path.join(env.app_dir, ".env"), errors="replace") as file:
            for line in file:
                if line.startswith("VERSION="):
                    return line[len("VERSION=") :].rstrip("\n")
    except FileNotFoundError:
        pass
    return ""


def write_version(env: Env, version: str) -> bool:
    """VERSION=version in the app's .env, through a temp file and a rename: every other
    line stays byte for byte, and a crash leaves either the old file or the new one."""
    path = os.path.join(env.app_dir, ".env")
    try:
        with open(path, "rb") as file:
            lines = file.read().split(b"\n")
        for number, line in enumerate(lines):
            if line.startswith(b"VERSION="):
                lines[number] = b"VERSION=" + version.encode()
                break
        else:
            if lines[-1] == b"":
                lines.pop()
            lines += [b"VERSION=" + version.encode(), b""]
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "wb") as file:
            file.write(b"\n".join(lines))
            file.flush()
            os.fsync(file.fileno())
        os.chown(tmp, 0, 0)
        os.replace(tmp, path)
    except OSError:
        return False
    return True


def write_text(path: str, text: str) -> None:
    """A state file's text, root's alone (0600) whatever the umask."""
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
        file.write(text)


def load_checked(request) -> Env:
    """The request's environment, its settings checked, and --expect if it sent one."""
    from . import expect

    env = load(request.env)
    expect.check(str(request.option("expect", "")), env.conf_path, env.name)
    return env


def read_text(path: str) -> str:
    """A small state file's text, stripped ('' when it is not there)."""
    try:
        with open(path, errors="replace") as file:
            return file.read().strip()
    except FileNotFoundError:
        return ""
