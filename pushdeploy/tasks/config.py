"""config.*: the settings in effect, and where each came from."""

from __future__ import annotations

import os

from invoke import Collection, task

from pushdeploy import provenance, settings
from pushdeploy.output import say
from pushdeploy.tasks.common import fail_on_errors, load_settings


@task(help={"env": "The environment (staging, production, ...)."})
def show(c, env="staging"):
    """Print an environment's settings in effect and where each came from.

    Each setting names the file that set it (the project's invoke.yaml or
    pushdeploy.yaml, a file given with `inv -f`, or deploy.defaults in one of
    them) or says it is the default; then the DEPLOY_* values from .env or the
    environment, secrets never shown. Changes nothing, connects nowhere.
    """
    with fail_on_errors():
        loaded = load_settings(c)
        environment = loaded.environment(env)
        values, dotenv = settings.dotenv_values_for(os.environ, loaded.root)
    rows = [("setting", "value", "from")] + provenance.environment_rows(loaded, environment)
    say(f"{environment.name} (app {loaded.app}, deploy user {loaded.deploy_user}):")
    say(provenance.table(rows))
    access = provenance.access_rows(values, os.path.relpath(dotenv), os.environ)
    say("\naccess (DEPLOY_* from .env or the environment):")
    say(provenance.table([("name", "value", "from"), *access]) if access else "(none set)")


namespace = Collection("config", show)
