"""Deploy keys, least privilege: which key may ask what, of which environments.

invoke.yaml may name several deploy keys, each held to some environments and verbs:

    deploy:
      keys:
        review:     {environments: [review], verbs: [review-up, review-down, review-list]}
        staging:    {environments: [staging]}                 # every verb, staging only
        production: {environments: [production], verbs: [deploy, rollback, status, history, logs, plan, check]}

Beyond verbs, a key may be given rights (protocol.KEY_RIGHTS), which "every verb" does not
include: ``restore-db`` lets its rollbacks replace the database (--restore-db).

A key's public key comes from ``public_key:`` there (the key line, or a .pub file
relative to the project) or from DEPLOY_KEY_<NAME>_PUBLIC_KEY (.env or the process
environment), which wins. `inv server.setup` writes one authorized_keys line per key
(``command="/opt/pushdeploy/bin/entrypoint --key=NAME"``) and the scopes to the
server's PD_KEYS_FILE, where bin/deploy holds every request to its key's scope.
The unnamed key, DEPLOY_CI_PUBLIC_KEY, keeps every verb on every environment.
No I/O here but reading a .pub file the settings name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from pushdeploy import protocol


class BadKeys(ValueError):
    """A key's settings are wrong: where (the setting) and what to do."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")
        self.where, self.message = where, message


@dataclass(frozen=True)
class DeployKey:
    name: str
    environments: tuple[str, ...]
    verbs: tuple[str, ...]
    public_key: str = ""  # from invoke.yaml: the key line or a .pub path

    @property
    def env_var(self) -> str:
        return env_var(self.name)


def env_var(name: str) -> str:
    """Where .env may give the public key of the named key NAME."""
    return f"DEPLOY_KEY_{name.upper().replace('-', '_')}_PUBLIC_KEY"


def from_config(raw, environments: Mapping) -> tuple[DeployKey, ...]:
    """deploy.keys, checked against the configured environments; sorted by name."""
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise BadKeys("deploy.keys", "expected a mapping of key name: {environments: [...], verbs: [...]}")
    keys = []
    for name, spec in sorted(raw.items()):
        where = f"deploy.keys.{name}"
        if not isinstance(name, str) or not protocol.matches(protocol.KEY_RE, name):
            raise BadKeys(f"{where}", f"a key name is {protocol.KEY_RE.pattern}")
        if not isinstance(spec, Mapping):
            raise BadKeys(f"{where}", "expected {environments: [...], verbs: [...], public_key: ...}")
        unknown = sorted(set(spec) - {"environments", "verbs", "public_key"})
        if unknown:
            raise BadKeys(f"{where}.{unknown[0]}", "unknown setting (known: environments, verbs, public_key)")
        envs = _names(spec.get("environments"), f"{where}.environments")
        if not envs:
            raise BadKeys(
                f"{where}.environments",
                "name the environments this key may reach (a review template covers its review environments)",
            )
        missing = [env for env in envs if env not in environments]
        if missing:
            raise BadKeys(
                f"{where}.environments",
                f"{missing[0]!r} is not an environment of deploy.environments ({', '.join(sorted(environments))})",
            )
        verbs = _names(spec.get("verbs"), f"{where}.verbs") if spec.get("verbs") is not None else protocol.VERBS
        wrong = [verb for verb in verbs if verb not in protocol.VERBS + protocol.KEY_RIGHTS]
        if wrong:
            raise BadKeys(
                f"{where}.verbs",
                f"{wrong[0]!r} is not a verb of the deploy account ({', '.join(protocol.VERBS)}) "
                f"nor a right ({', '.join(protocol.KEY_RIGHTS)})",
            )
        public_key = spec.get("public_key") or ""
        if not isinstance(public_key, str):
            raise BadKeys(f"{where}.public_key", "the key line, or a .pub file")
        keys.append(DeployKey(name, tuple(envs), tuple(verbs), public_key))
    return tuple(keys)


def _names(value, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BadKeys(f"{where}", "expected a list of names")
    return value


def scopes_json(keys) -> str:
    """The server's PD_KEYS_FILE: each key's environments and verbs (no key material)."""
    scopes = {key.name: {"environments": list(key.environments), "verbs": list(key.verbs)} for key in keys}
    return json.dumps(scopes, indent=1, sort_keys=True) + "\n"


def authorized_line(key_line: str, name: str | None = None) -> str:
    """One authorized_keys line: the key forced to the entrypoint (with its name, if it has one)."""
    command = protocol.ENTRYPOINT_BIN if name is None else f"{protocol.ENTRYPOINT_BIN} --key={name}"
    return f'restrict,command="{command}" {key_line}'
