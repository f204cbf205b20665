"""Refusals that read the server: the key's scope, the admin's verbs, templates, review targets.

Each returns a message (refused: exit 64, nothing changed) or None. They run in
bin/deploy before any verb, so no verb can forget one.
"""

from __future__ import annotations

import os
import pwd

from . import conf, facts, keys
from .request import Request

# The verbs a review template answers: it is no environment of its own.
TEMPLATE_VERBS = ("check", "review-list", "teardown")


def key_scope(request: Request, keys_file: str = facts.KEYS_FILE) -> str | None:
    if request.key is None:
        return None
    try:
        with open(keys_file) as file:
            scopes = keys.parse(file.read())
    except FileNotFoundError:
        scopes = {}
    except keys.BadScopes as error:
        return f"{keys_file}: {error}: run `inv server.setup` again"
    return keys.refusal(request, scopes)


def admin_only(request: Request) -> str | None:
    """The admin connection's verbs (db-dump, db-restore, teardown) are refused to an account
    whose keys are forced to the entrypoint (a deploy account), even if it found a way to
    ask sudo for them."""
    if request.verb not in facts.ADMIN_VERBS + facts.SERVER_VERBS:
        return None
    user = os.environ.get("SUDO_USER", "")
    if not user or user == "root":
        return None
    if request.verb.startswith("tls-") and os.path.exists(f"/etc/sudoers.d/pushdeploy-{user}"):
        return f"{request.verb} is for the admin connection only (it hands over a private key): not a deploy account"
    try:
        home = pwd.getpwnam(user).pw_dir
        with open(os.path.join(home, ".ssh", "authorized_keys"), errors="replace") as keys_file:
            forced = f'command="{facts.PREFIX}/bin/entrypoint' in keys_file.read()
    except (KeyError, OSError):
        return None
    if not forced:
        return None
    return (
        f"{request.verb} is for the admin connection only (it reads, replaces or removes a whole environment's data):"
        " a deploy account may not run it"
    )


# Verbs only root's own schedulers run, never the deploy account (with or without sudo).
ROOT_VERBS = {
    "pull": "pull runs as root from the pull agent's timer or cron entry",
    "cron": "cron runs as root from the environment's cron entry or timer",
}


def root_only(request: Request) -> str | None:
    said = ROOT_VERBS.get(request.verb)
    user = os.environ.get("SUDO_USER", "")
    if said and (os.geteuid() != 0 or (user and os.path.exists(f"/etc/sudoers.d/pushdeploy-{user}"))):
        return f"{said}, not through the deploy account"
    return None


def template(request: Request, etc: str = facts.ETC) -> str | None:
    """A template holds a review environment's files: no verb but check and review-* runs on it."""
    if request.verb in facts.REVIEW_VERBS or request.verb in TEMPLATE_VERBS or not request.env:
        return None
    settings = conf.read(request.env, etc)
    if settings is None or conf.value(settings, "REVIEW_TEMPLATE", "no") != "yes":
        return None
    return (
        f"'{request.env}' is a review template, not an environment: make one from it with "
        f"review-up {request.env}-N VERSION (inv review.up --pr N), then ask that one"
    )


def review_target(request: Request, etc: str = facts.ETC) -> str | None:
    """review-up and review-down reach only what review-up makes: TEMPLATE-N, in files no
    environment of its own uses (an ordinary environment qa-2 beside a template qa is left alone)."""
    if request.verb not in ("review-up", "review-down"):
        return None
    name, template_name = request.env, request.template
    if conf.read(name, etc) is not None:
        return f"'{name}' is an environment of its own on this server ({conf.path(name, etc)}), not a review environment of '{template_name}': review-up and review-down reach only what review-up made"
    template_conf = conf.read(template_name, etc)
    if template_conf is None:
        return None  # bin/deploy says the template is not set up
    number = name[len(template_name) + 1 :]
    app_dir = conf.value(template_conf, "APP_DIR") + "-" + number
    project = conf.value(template_conf, "PROJECT") + "-" + number
    for other in conf.environments(etc):
        settings = conf.read(other, etc) or {}
        if (
            os.path.normpath(conf.value(settings, "APP_DIR")) == os.path.normpath(app_dir)
            or conf.value(settings, "PROJECT") == project
        ):
            return f"'{name}' would use {app_dir} and the compose project {project}, which the environment '{other}' uses: rename one of them in invoke.yaml"
    return None


CHECKS: tuple = (key_scope, admin_only, root_only, template, review_target)


def refusal(request: Request, checks: tuple = CHECKS) -> str | None:
    for check in checks:
        why = check(request)
        if why:
            return why
    return None
