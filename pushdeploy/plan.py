"""What to run where: pure functions from settings and a request to commands and files.

No I/O here (callers read files and the environment and pass them in), so every
rule is checked by fast table tests.
"""

from __future__ import annotations

import io
import re
import secrets
import shlex
import tarfile
import time
from collections.abc import Mapping
from dataclasses import dataclass

from pushdeploy import cron, management, protocol, roles, rollout
from pushdeploy import keys as deploy_keys
from pushdeploy.settings import Environment, Settings

_PUBLIC_KEY = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}( [^\n\"]{0,200})?$"
)
_UNSAFE_ACTOR = re.compile(r"[^A-Za-z0-9_.:/@+-]")


class BadRequest(ValueError):
    """A request the tool refuses before connecting; the message says what to do."""


# ------------------------------------------------------------------ versions


def check_version(env: Environment, version: str) -> str:
    """The version if the server will accept it for env, else BadRequest."""
    if not version:
        raise BadRequest(f"no version given for {env.name}: pass --tag VERSION")
    if not protocol.matches(protocol.VERSION_RE, version):
        raise BadRequest(f"{version!r} is not a valid Docker tag ([A-Za-z0-9_][A-Za-z0-9_.-], at most 128 characters)")
    if not env.accepts(version):
        raise BadRequest(f"{version!r} does not match {env.name}'s version_pattern {env.version_pattern} (invoke.yaml)")
    return version


def build_version(environ: Mapping[str, str], git_head: str | None) -> str:
    """The exact build to deploy when no tag is given: CI's commit, else the local HEAD."""
    for name in ("CIRCLE_SHA1", "GITHUB_SHA", "CI_COMMIT_SHA"):
        if environ.get(name):
            return environ[name]
    if git_head:
        return git_head
    raise BadRequest(
        "no --tag given and no commit found (not in CI, and `git rev-parse HEAD` failed): pass --tag VERSION"
    )


# ------------------------------------------------------------------ who and why


def _clean(text: str) -> str:
    return _UNSAFE_ACTOR.sub("_", text.strip())[:200].lstrip("_.:/@+-")


def actor(environ: Mapping[str, str], git_user: str | None) -> tuple[str, str]:
    """(who, build URL) for the history: the CI user and build, else the local git user."""
    if environ.get("CIRCLECI"):
        who = "circleci:" + (environ.get("CIRCLE_USERNAME") or environ.get("CIRCLE_PROJECT_USERNAME") or "unknown")
        return _clean(who), _clean(environ.get("CIRCLE_BUILD_URL", ""))
    if environ.get("GITHUB_ACTIONS"):
        who = "github:" + environ.get("GITHUB_ACTOR", "unknown")
        url = ""
        if environ.get("GITHUB_RUN_ID"):
            url = f"{environ.get('GITHUB_SERVER_URL', 'https://github.com')}/{environ.get('GITHUB_REPOSITORY', '')}/actions/runs/{environ['GITHUB_RUN_ID']}"
        return _clean(who), _clean(url)
    who = git_user or environ.get("USER") or "unknown"
    return _clean("local:" + who), ""


def run_id(now: float | None = None, token: str | None = None) -> str:
    """One id per deploy request, shared by all its hosts; resending it reattaches."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now if now is not None else time.time()))
    return f"{stamp}-{token or secrets.token_hex(4)}"


def phases(env: Environment, hosts=None) -> list[tuple[tuple, bool]]:
    """Which hosts deploy together, in order, and whether they skip backup and migrations.

    The first host backs up, migrates and switches alone (with `migrate_on:
    first`, for hosts sharing one database); the rest follow in batches of
    `batch_size`, each only once the one before succeeded. See pushdeploy/rollout.py.
    """
    return [
        (batch.hosts, not batch.migrate)
        for batch in rollout.batches(hosts or env.hosts, batch_size(env), env.migrate_on)
    ]


def batch_size(env: Environment) -> str:
    """`batch_size`, or 1 while a worker role with a `quiesce` command runs on several hosts: the
    hosts of a batch would tell their workers to stop consuming at the same moment, and Celery's
    Redis transport can drop a job handed back by two such workers at once (docs/roles.md). One
    host at a time, each host's workers one after another, never two."""
    spread = [
        role
        for role in env.roles
        if role.kind == "worker" and role.quiesce and (role.hosts == "all" or "," in role.hosts)
    ]
    return "1" if spread and len(env.hosts) > 1 else env.batch_size


# ------------------------------------------------------------------ the server's settings


def server_conf(env: Environment, app_files: Mapping[str, bytes], keys=()) -> str:
    """The text of /etc/pushdeploy/ENV.conf, read by bin/deploy: the settings schema's keys
    (pdserver/schema.py), in its order, from the environment's values.

    keys: the named deploy keys; their scopes' hash is a line here, so a request of a
    client whose keys differ from the server's is refused as outdated (run server.setup).
    """
    from pdserver import schema

    digest = protocol.short_hash(b"".join(name.encode() + b"\0" + data for name, data in sorted(app_files.items())))
    values = {key.name: getattr(env, key.setting) for key in schema.CONF_KEYS if key.setting}
    values.update(management.conf_values(env.before_switch, env.after_switch, env.manage_commands))
    values["CRON_JOB"] = [cron.line_of(job) for job in env.cron_jobs]
    values["ROLE"] = [roles.line_of(role) for role in env.roles]
    values.update(
        APP_FILES_SHA256=digest,
        KEYS_SHA256=protocol.short_hash(deploy_keys.scopes_json(keys).encode()) if keys else "",
    )
    lines = ["# Written by `inv server.setup` from invoke.yaml: do not edit here.", *schema.render(values)]
    text = "\n".join(lines) + "\n"
    _server_accepts(text, env.name)
    return text


def _server_accepts(text: str, name: str) -> None:
    """The conf as the server will read it, by the server's own parser: what it would
    refuse is refused here, before anything is sent."""
    from pdserver import env as server_env
    from pdserver.request import Refused

    try:
        server_env.parse(text, f"{protocol.ETC}/{name}.conf", name)
    except Refused as refused:
        raise BadRequest(f"the server would refuse these settings: {refused}") from None


_RESOLVER = re.compile(r"^\s*resolver\s+([^;]*);", re.MULTILINE)
_VALID = re.compile(r"\bvalid=([0-9]+)s?\b")


def proxy_config_problems(env: Environment, app_files: Mapping[str, bytes]) -> list[str]:
    """What in the environment's nginx files would break the zero-downtime switch.

    The proxy must route to the slots (WEB-blue, or WEB-green while the routing
    flag exists) and forget a DNS answer after exactly dns_valid seconds: the
    switch waits that long before a slot's name may point elsewhere.
    """
    if getattr(env, "switch", "slots") != "slots" or getattr(env, "engine", "compose") == "swarm":
        return []
    first, second = protocol.SLOTS
    problems = []
    for name, data in sorted(app_files.items()):
        text = data.decode(errors="replace")
        if not name.endswith(".conf") or "proxy_pass" not in text:
            continue
        for slot in (first, second):
            if f"{env.web_service}-{slot}" not in text:
                problems.append(
                    f"{name}: does not route to {env.web_service}-{slot}: pushdeploy switches traffic between {env.web_service}-{first} and {env.web_service}-{second} (see the README, 'The switch')"
                )
                break
        if f"{protocol.ROUTING_DIR}/{second}" not in text:
            problems.append(
                f"{name}: never checks the routing flag {protocol.ROUTING_DIR}/{second} (mount <app dir>/{protocol.ROUTING_DIR} into the proxy and test it per request)"
            )
        resolvers = _RESOLVER.findall(text)
        if not resolvers:
            problems.append(
                f"{name}: no `resolver` directive: nginx would resolve {env.web_service}-{first} once, at start"
            )
        for resolver in resolvers:
            valid = _VALID.search(resolver)
            if not valid or int(valid.group(1)) != env.dns_valid:
                found = f"valid={valid.group(1)}s" if valid else "no valid="
                problems.append(
                    f"{name}: `resolver {resolver.strip()}` has {found}, but dns_valid is {env.dns_valid}: make them agree (resolver ... valid={env.dns_valid}s)"
                )
    return problems


def expected(server: protocol.ServerSide, conf: str) -> str:
    """What the client tells bin/deploy to expect: server-side hash . settings hash."""
    return f"{server.hash}.{protocol.short_hash(conf.encode())}"


def authorized_keys(public_keys: str, named: Mapping[str, str] | None = None) -> str:
    """authorized_keys for the deploy account: every key forced to the entrypoint.

    public_keys: the unnamed key(s), every verb everywhere; named: {key name: its key
    line(s)}, each line passing the key's name to the entrypoint, which holds it to its scope.
    """
    lines = [deploy_keys.authorized_line(line) for line in _key_lines(public_keys)]
    for name, text in sorted((named or {}).items()):
        key_lines = _key_lines(text)
        if not key_lines:
            raise BadRequest(
                f"no public key for the deploy key {name!r}: set deploy.keys.{name}.public_key in invoke.yaml or {deploy_keys.env_var(name)} in .env"
            )
        lines += [deploy_keys.authorized_line(line, name) for line in key_lines]
    if not lines:
        raise BadRequest(
            "no public key for the deploy account: set DEPLOY_CI_PUBLIC_KEY (a .pub file or its content) or pass --public-key"
        )
    return "\n".join(lines) + "\n"


def _key_lines(text: str) -> list[str]:
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not _PUBLIC_KEY.match(line):
            raise BadRequest(f"not an OpenSSH public key line: {line[:40]!r}... (give the .pub file's content)")
        lines.append(line)
    return lines


@dataclass(frozen=True)
class Bundle:
    """Everything server.setup uploads for one environment, as a tar archive."""

    files: Mapping[str, bytes]

    def tar(self) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            for name, data in sorted(self.files.items()):
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o755 if name.startswith("bin/") else 0o644, 0
                archive.addfile(info, io.BytesIO(data))
        return buffer.getvalue()


def bundle(
    env: Environment,
    server: protocol.ServerSide,
    app_files: Mapping[str, bytes],
    dotenv: bytes | None,
    public_keys: str,
    webhooks: bytes | None = None,
    keys=(),
    named_keys: Mapping[str, str] | None = None,
    registry_password: bytes | None = None,
    registry_ca: bytes | None = None,
) -> Bundle:
    """webhooks: the server's ENV.webhooks (b"" removes it; None leaves the server's as it is).
    keys: the named deploy keys (their scopes go to keys.json); named_keys: their key lines.
    registry_password: root's Docker logs in again with it (None: the login it has stays);
    registry_ca: the registry's CA certificate, for Docker's certs.d."""
    files: dict[str, bytes] = dict(server.files)
    files["env.conf"] = server_conf(env, app_files, keys).encode()
    files["authorized_keys"] = authorized_keys(public_keys, named_keys).encode()
    if keys:
        files["keys.json"] = deploy_keys.scopes_json(keys).encode()
    for name, data in app_files.items():
        files[f"app/{name}"] = data
    if dotenv is not None:
        files["dotenv"] = dotenv
    if webhooks is not None:
        files["webhooks"] = webhooks
    if registry_password is not None:
        files["registry-password"] = registry_password
    if registry_ca is not None:
        files["registry-ca.crt"] = registry_ca
    return Bundle(files)


def install_command(settings: Settings, env: Environment, archive: str, as_root: bool, position: int = 0) -> str:
    """The admin's shell command that unpacks the bundle and runs bin/install as root
    (POSITION: the host's in the environment's hosts, 1 the first: where its `hosts: first`
    cron jobs run; its roles are the ones that name it)."""
    q = shlex.quote
    script = (
        f'set -e; trap \'rm -rf "$d" {q(archive)}\' EXIT; d=$(mktemp -d); tar -C "$d" -xf {q(archive)}; rm -f {q(archive)}; '
        f'"$d/bin/install" "$d" {q(env.name)} {q(settings.deploy_user)} {q(env.app_dir)}'
        + (f" --host={position}" if position else "")
    )
    return f"bash -c {q(script)}" if as_root else f"sudo -n bash -c {q(script)}"


def admin_command(command: str, as_root: bool) -> str:
    return command if as_root else f"sudo -n {command}"
