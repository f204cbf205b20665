"""init: the starting files a Django project needs, written once, never overwritten."""

from __future__ import annotations

import sys
from pathlib import Path

from invoke import task
from invoke.exceptions import Exit

from pushdeploy import init as starter
from pushdeploy.output import say

QUESTIONS = {  # option: (question, default or None)
    "image": ("The image repository, without a tag (e.g. registry.example.com/shop)", None),
    "staging_hosts": ("Staging hosts, user@host[:port], comma-separated", None),
    "production_hosts": ("Production hosts, user@host[:port], comma-separated", None),
    "settings": ("The Django settings module", None),
}


@task(
    help={
        "image": "The image repository, without a tag (asked if not given).",
        "staging_hosts": "Staging's hosts, user@host[:port], comma-separated (asked if not given).",
        "production_hosts": "Production's hosts, likewise (asked if not given).",
        "settings": "The Django settings module (default: the one manage.py names).",
        "app": "The app's name (default: this folder's name).",
        "db": "A PostgreSQL `db` service in the compose file (default: yes; --no-db for none).",
    }
)
def init(c, image=None, staging_hosts=None, production_hosts=None, settings=None, app=None, db=True):
    """Write what a Django project needs to be deployed: settings, compose, nginx, CI.

    In the current folder: pushdeploy.yaml (invoke.yaml when run by inv: staging
    and production, commented),
    deploy/docker-compose.yml (web with its health check, the proxy with the
    routing and maintenance mounts, PostgreSQL unless --no-db),
    deploy/nginx/app.conf (the zero-downtime slot switch), deploy/server.env.example
    (the server's .env), and CircleCI and GitHub Actions configs. It asks only
    what it cannot find out; a file that exists is never overwritten. Then it
    prints the two lines of Django it cannot write for you.
    """
    root = Path.cwd()
    facts = starter.found(root)
    given = {"image": image, "staging_hosts": staging_hosts, "production_hosts": production_hosts}
    given["settings"] = settings or facts.get("settings_module")
    answers = starter.Answers(
        app=starter.app_name(app) if app else facts["app"],
        image=_answer("image", given),
        settings_module=_answer("settings", given),
        staging_hosts=_answer("staging_hosts", given),
        production_hosts=_answer("production_hosts", given),
        database=bool(db),
    )
    # The settings file the program that runs this reads: pushdeploy.yaml, or inv's invoke.yaml.
    settings_file = f"{getattr(c.config, 'file_prefix', None) or c.config.prefix}.yaml"
    new, kept = starter.writes(root, starter.render(answers, settings_file))
    for path, text in new.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
        say(f"wrote {path}")
    for path in kept:
        say(f"kept  {path} (it exists: init never overwrites)")
    say("")
    say(starter.DJANGO_LINES)
    say(
        "\nNext: copy deploy/server.env.example to deploy/staging.env and deploy/production.env (keep them out of"
        " git), fill them in, then `pushdeploy server.trust --env staging`, `pushdeploy server.setup --env staging`,"
        " `pushdeploy deploy.staging --tag <an image tag>`."
    )


def _answer(name: str, given: dict) -> str:
    if given.get(name):
        return str(given[name]).strip()
    question, default = QUESTIONS[name]
    if not sys.stdin.isatty():
        flag = "--" + name.replace("_", "-")
        raise Exit(f"error: init needs {flag} (no terminal to ask on): {question.lower()}", code=2)
    while True:
        reply = input(f"{question}: ").strip() or default
        if reply:
            return reply
