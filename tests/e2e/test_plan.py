"""`inv deploy.plan`: what a deploy would do on each host, changing nothing: the versions,
the order check, the server side, the steps (the same the deploy then runs), the migrations
of the new image (`migrate --plan` in a one-off container) and an estimate."""

from __future__ import annotations

import re

import pytest

from tests.e2e import tools_env
from tests.e2e.conftest import STAGING_A, STAGING_B

pytestmark = pytest.mark.e2e

BAD_MIGRATION = "1.3.0-badmigration"  # an image with one migration more (example/variants/bad-migration)
HOOKS = dict(before_switch=["check --deploy --fail-level ERROR"], after_switch=["showmigrations notes"])


@pytest.fixture(scope="module")
def env(server):
    tools_env.configure(**HOOKS)
    if tools_env.served() not in (STAGING_A, STAGING_B):
        tools_env.ensure_deployed(STAGING_A)
    return tools_env


def state(env) -> tuple:
    """What a plan must leave as it was: .env, history, the app's containers, what is served."""
    return env.dotenv(), env.history(), env.containers(), env.served()


def plan(env, tag: str, *extra: str):
    return env.tools("deploy.plan", "--env", env.ENV, "--tag", tag, *extra)


def shown(result, key: str) -> str:
    match = re.search(rf"^{tools_env.ENV} 127\.0\.0\.1:2222 \| {key}:\s+(.*)$", result.stdout, re.MULTILINE)
    assert match, f"no {key}: line in\n{result.stdout}"
    return match.group(1)


def test_plan_shows_the_migrations_a_new_image_would_apply_and_changes_nothing(env):
    before = state(env)
    result = plan(env, BAD_MIGRATION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert shown(result, "migrations") == "1 to apply: notes.0002_broken"
    assert "Raw SQL operation" in result.stdout
    assert shown(result, "version") == f"{before[3]} -> {BAD_MIGRATION}"
    assert shown(result, "server side") == "current"
    assert shown(result, "order check").startswith("ok")
    assert "would go ahead" in result.stdout
    assert state(env) == before
    assert env.containers("label=com.docker.compose.oneoff=True") == []


def test_the_steps_planned_are_the_steps_the_deploy_runs(env):
    target = STAGING_B if env.served() == STAGING_A else STAGING_A
    result = plan(env, target)
    assert result.returncode == 0, result.stdout + result.stderr
    assert shown(result, "migrations") == "none to apply"
    assert (
        shown(result, "hooks")
        == "before_switch: check --deploy --fail-level ERROR   after_switch: showmigrations notes"
    )
    assert re.match(r"about [0-9]+s \(median of the last [0-9]+ successful deploy", shown(result, "estimate"))
    planned = shown(result, "steps").split(" > ")
    deployed = env.deploy(target)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert planned == [s["name"] for s in env.history()[-1]["steps"]]
    assert (
        planned[:3] == ["preflight", "pull", "database"] and "hooks-before" in planned and planned[-1] == "hooks-after"
    )


def test_an_outdated_server_side_is_reported_not_refused(env):
    before = state(env)
    env.CONFIG.write_text(env.CONFIG.read_text().replace("showmigrations notes", "showmigrations"))  # not installed
    result = plan(env, STAGING_A)
    assert result.returncode == 78, result.stdout + result.stderr
    assert shown(result, "server side").startswith("OUT OF DATE: the settings installed for 'tools' differ")
    assert "would NOT go ahead" in result.stderr
    assert state(env) == before
