"""Roles: the `roles:` setting, checked as the server checks it (pdserver/roles.py).

    roles:
      worker:                 # a compose service that runs the app's image, besides web
        kind: worker          # any number: new ones start, then the old finish their jobs and go
        quiesce: python3 -m celery -A app control cancel_consumer celery --destination celery@%h
      beat:
        kind: scheduler       # exactly one in the environment: the old stops, then the new starts
        hosts: [deploy@app2]  # default: every host for a worker, the first host for a scheduler

No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pdserver import roles as server_roles

Role = server_roles.Role
line_of = server_roles.line_of


class RolesError(ValueError):
    """A bad `roles:` setting; the message names the key and says what is expected."""


def parse(raw, key: str, hosts: Sequence[str], services: Sequence[str], engine: str) -> tuple[Role, ...]:
    """HOSTS: the environment's hosts as invoke.yaml lists them; SERVICES: those a deploy
    already switches or keeps up (web, the proxy, the database, `services`): a role is none of them."""
    if raw in (None, "", {}):
        return ()
    if not isinstance(raw, Mapping):
        raise RolesError(f"{key}: expected a mapping of service name: {{kind: worker|scheduler, hosts: [...]}}")
    found = []
    for name, role in sorted(raw.items(), key=lambda item: str(item[0])):
        where = f"{key}.{name}"
        if not isinstance(name, str) or not server_roles.NAME_RE.match(name):
            raise RolesError(f"{where}: a role is named as its compose service ([A-Za-z0-9][A-Za-z0-9_.-]*)")
        if name in services:
            raise RolesError(
                f"{where}: {name} is one of web, the proxy, the database or `services` ({' '.join(services)}): "
                "a role is another service"
            )
        role = role if role is not None else {}
        if not isinstance(role, Mapping):
            raise RolesError(f"{where}: expected {{kind: worker}} or {{kind: scheduler}}")
        unknown = sorted(set(role) - {"kind", "hosts", "quiesce"})
        if unknown:
            raise RolesError(f"{where}.{unknown[0]}: unknown setting (known: kind, hosts, quiesce)")
        kind = role.get("kind")
        if kind not in server_roles.KINDS:
            raise RolesError(
                f"{where}.kind: {kind!r} is worker (any number, e.g. celery worker) or scheduler (exactly one, e.g. celery beat)"
            )
        quiesce = tuple(str(role.get("quiesce") or "").split())
        why = server_roles.quiesce_problem(quiesce)
        if why:
            raise RolesError(f"{where}.quiesce: {why}")
        if quiesce and kind == "scheduler":
            raise RolesError(f"{where}.quiesce: a scheduler is stopped before its successor starts, not quiesced")
        positions = _positions(role.get("hosts"), f"{where}.hosts", kind, hosts, engine)
        found.append(Role(name, kind, positions, quiesce))
    return tuple(found)


def _positions(value, where: str, kind: str, hosts: Sequence[str], engine: str) -> str:
    if value is None:
        return "1" if kind == "scheduler" else "all"
    if engine == "swarm":
        raise RolesError(f"{where}: on swarm the stack file places services (deploy.placement), not `hosts`")
    if value == "all":
        chosen = list(range(1, len(hosts) + 1))
    elif value == "first":
        chosen = [1]
    elif isinstance(value, Sequence) and not isinstance(value, str) and value:
        chosen = []
        for item in value:
            if str(item) not in hosts:
                raise RolesError(f"{where}: {item!r} is not one of the environment's hosts ({', '.join(hosts)})")
            chosen.append(list(hosts).index(str(item)) + 1)
    else:
        raise RolesError(f"{where}: all, first, or a list of the environment's hosts")
    chosen = sorted(set(chosen))
    if kind == "scheduler" and len(chosen) != 1:
        raise RolesError(f"{where}: a scheduler runs on exactly one host, not {len(chosen)}: name one")
    return "all" if kind == "worker" and len(chosen) == len(hosts) else ",".join(map(str, chosen))
