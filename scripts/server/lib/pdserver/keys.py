"""What each deploy key may ask for. Pure: the scopes come in as text.

invoke.yaml's ``deploy.keys`` names keys, each with the environments and verbs
it may use; `inv server.setup` writes them to PD_KEYS_FILE (JSON) and gives each
key's authorized_keys line ``--key=NAME``. A request that names no key came from
the unnamed key (DEPLOY_CI_PUBLIC_KEY), root or an admin: today's full scope.
A review template in a key's environments covers its review environments.
"""

from __future__ import annotations

import collections

from . import facts
from .request import Request

ANY_KEY_VERBS = ("version",)  # harmless for any key: the server side's hash


Scope = collections.namedtuple("Scope", "environments verbs")


class BadScopes(ValueError):
    pass


def parse(text: str) -> dict[str, Scope]:
    """PD_KEYS_FILE's text: {"NAME": {"environments": [...], "verbs": [...]}, ...}."""
    import json  # only a request of a named key reads the scopes

    try:
        data = json.loads(text)
    except ValueError as error:
        raise BadScopes(f"not JSON: {error}") from None
    if not isinstance(data, dict):
        raise BadScopes("not an object of key names")
    scopes = {}
    for name, scope in data.items():
        if not facts.matches(facts.KEY_RE, name) or not isinstance(scope, dict):
            raise BadScopes(f"invalid key {name!r}")
        environments, verbs = scope.get("environments"), scope.get("verbs")
        if (
            not _names(environments, facts.ENV_RE)
            or not _names(verbs, None)
            or not set(verbs) <= set(facts.VERBS + facts.KEY_RIGHTS)
        ):
            raise BadScopes(f"key {name!r}: environments and verbs are lists of names")
        scopes[name] = Scope(tuple(environments), tuple(verbs))
    return scopes


def _names(value, pattern) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, str) and (pattern is None or facts.matches(pattern, item)) for item in value
    )


def refusal(request: Request, scopes: dict[str, Scope]) -> str | None:
    """Why the request's key may not make it, or None when it may."""
    if request.key is None or request.verb in ANY_KEY_VERBS:
        return None
    scope = scopes.get(request.key)
    if scope is None:
        return f"the key '{request.key}' has no scope on this server: run `inv server.setup` with the invoke.yaml that declares it"
    if request.verb in facts.ADMIN_VERBS + facts.SERVER_VERBS or request.verb not in scope.verbs:
        return f"the key '{request.key}' may not run {request.verb} (it may run: {' '.join(scope.verbs) or 'nothing'})"
    rights = [right for right in facts.KEY_RIGHTS if request.option(right) and right not in scope.verbs]
    if rights:
        return f"the key '{request.key}' may not use --{rights[0]} (list {rights[0]} in its verbs to allow it)"
    target = request.template or request.env
    if target not in scope.environments:
        what = f"review environments of '{target}'" if request.template else f"'{target}'"
        return (
            f"the key '{request.key}' may not reach {what} (its environments: {' '.join(scope.environments) or 'none'})"
        )
    return None
