"""Small things a new user met: Django's shell kept quiet, the "older than" hint."""

from __future__ import annotations

import json

from pdserver import env as envs
from pdserver import pipeline, plan, release


def test_the_release_scripts_run_in_a_quiet_shell(server):
    run = pipeline.Run(envs.load("staging"), "r1", {"VERSION": "1.5.0"})
    assert release.manage_py(run, "print(1)") == ["python", "manage.py", "shell", "-c", "print(1)", "-v", "0"]


def test_the_older_than_hint_names_a_version_only_if_it_served_here(server):
    env = envs.load("staging")
    records = [{"version": "1.3.0", "outcome": "ok"}, {"version": "1.3.5", "outcome": "failed"}]
    with open(env.history, "w") as history:
        history.writelines(json.dumps(record) + "\n" for record in records)
    assert plan._going_back(env, "1.3.0") == (
        "to go back to it, `inv deploy.rollback --env staging --to 1.3.0`; or --force"
    )
    for never in ("1.3.5", "0.9.0"):  # failed there, or never deployed: no rollback to suggest
        assert plan._going_back(env, never) == (
            f"{never} never served here: deploy a newer version, or pass --force to deploy it anyway"
        )
