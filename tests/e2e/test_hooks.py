"""before_switch and after_switch hooks: management commands in a one-off container of
the new version. A failing before_switch hook rolls the deploy back (the old version
serves on, the step is recorded); a failing after_switch hook is a warning."""

from __future__ import annotations

import pytest

from tests.e2e import tools_env
from tests.e2e.conftest import STAGING_A, STAGING_B

pytestmark = pytest.mark.e2e

STRICT = "check --deploy --fail-level WARNING"  # fails on the example app: it has security warnings
LENIENT = "check --deploy --fail-level ERROR"


@pytest.fixture(scope="module")
def env(server):
    tools_env.configure()
    tools_env.ensure_deployed(STAGING_A)
    return tools_env


def test_a_failing_before_switch_hook_rolls_back(env):
    env.configure(before_switch=[STRICT])
    before = env.dotenv()
    result = env.deploy(STAGING_B)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "--- manage.py check --deploy --fail-level WARNING" in out
    assert "security.W004" in out  # the hook's own output reached the user
    assert "FAILED at hooks-before" in out
    assert env.served() == STAGING_A
    assert env.dotenv() == before
    record = env.history()[-1]
    assert (record["version"], record["outcome"], record["failed_step"]) == (STAGING_B, "failed", "hooks-before")
    assert [s["name"] for s in record["steps"]][-2:] == ["hooks-before", "rollback"]
    assert env.containers("label=com.docker.compose.oneoff=True") == []  # the hook's container is gone


def test_after_switch_hooks_run_and_a_failing_one_only_warns(env):
    env.configure(before_switch=[LENIENT], after_switch=["showmigrations notes", STRICT])
    result = env.deploy(STAGING_B)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert env.served() == STAGING_B
    assert "[X] 0001_initial" in out  # showmigrations ran against the database, after the switch
    assert "warning: an after_switch hook failed" in out
    record = env.history()[-1]
    assert (record["version"], record["outcome"], record["failed_step"]) == (STAGING_B, "ok", "")
    steps = {s["name"]: s["ok"] for s in record["steps"]}
    assert steps["hooks-before"] is True and steps["hooks-after"] is False
    names = [s["name"] for s in record["steps"]]
    assert names.index("migrate") < names.index("hooks-before") < names.index("start") and names[-1] == "hooks-after"
