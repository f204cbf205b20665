"""The strategies are found by name (pdserver/strategies/): the built-in three, and a
fourth added by one file, with nothing else edited."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

from pushdeploy import protocol
from tests.unit.conftest import CONF

from pdserver import pipeline, schema, strategies

BUILT_IN = {
    ("compose", "slots"): "Slots",
    ("compose", "recreate"): "Recreate",
    ("swarm", "slots"): "Swarm",  # a swarm has no switch of its own: the engine decides
}


def test_the_built_in_strategies_are_their_settings_choices_and_are_shipped(server):
    from pdserver import env as envs

    assert (schema.SWITCHES, schema.ENGINES) == (("slots", "recreate"), ("compose", "swarm"))
    for (engine, switch), name in BUILT_IN.items():
        env = envs.Env("staging", "", dict(envs.DEFAULTS, APP_DIR="/srv/x", ENGINE=engine, SWITCH=switch))
        assert type(pipeline.strategy_for(env)).__name__ == name
    for kind in ("switch", "engine"):
        for name in strategies.names(kind):
            assert f"lib/pdserver/strategies/{kind}_{name}.py" in protocol.SERVER_FILES


CANARY = '''
"""`switch: canary`: a stand-in, to show that a strategy is one file."""

from ..env import write_version
from ..pipeline import Strategy as Base


class Strategy(Base):
    finish_steps = ["tidy"]

    def __init__(self, env):
        self.env = env
        self.switch_steps = [("canary", self.canary), ("promote", self.promote)]

    def preflight(self, run):
        return 0

    def pull(self, run):
        return 0

    def backup(self, run):
        return 0

    def one_off(self, run, argv, environ):
        print("one-off", environ.get("PD_HOOKS") or "release", flush=True)
        return 0

    def canary(self, run):
        print("canary: one request in ten", flush=True)
        return 0

    def promote(self, run):
        if not write_version(self.env, run.version):
            return 1
        run.switched = True
        return 0

    def finish(self, run):
        print("tidy", flush=True)

    def plan_migrations(self, version):
        return ["migrations=none"]
'''

DEPLOY = """
import json, sys
sys.path.insert(0, {lib!r})
from pdserver import env as envs, facts, pipeline, plan, schema
facts.ETC, facts.STATE = {etc!r}, {state!r}
pipeline.notify = lambda run, event: print("notify", event, flush=True)
env = envs.load("staging")
run = pipeline.Run(env, "r1", {{"KIND": "deploy", "VERSION": "1.5.0", "BY": "ci"}})
open(run.file("log"), "w").close()
code = pipeline.deploy(run, pipeline.strategy_for(env))
print(json.dumps({{
    "code": code,
    "switches": schema.SWITCHES,
    "shipped": "lib/pdserver/strategies/switch_canary.py" in facts.SERVER_FILES,
    "steps": [line.split("\\t")[0] for line in open(run.file("steps"))],
    "plan": plan.deploy_steps(env, False, False),
    "history": [json.loads(line)["outcome"] for line in open(env.history)],
}}))
"""


def test_a_fourth_strategy_is_one_file_and_the_pipeline_does_the_rest(tmp_path):
    server = tmp_path / "server"
    shutil.copytree(protocol.SERVER_DIR, server, ignore=shutil.ignore_patterns("__pycache__"))
    (server / "lib/pdserver/strategies/switch_canary.py").write_text(CANARY.lstrip())
    etc, state, app = tmp_path / "etc", tmp_path / "state", tmp_path / "app"
    for path in (etc, state / "staging" / "runs", app):
        path.mkdir(parents=True)
    (etc / "staging.conf").write_text(CONF.format(app=app) + "SWITCH=canary\n")
    (app / ".env").write_text("SECRET=x\nVERSION=1.4.0\n")
    script = textwrap.dedent(DEPLOY).format(lib=str(server / "lib"), etc=str(etc), state=str(state))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    said = json.loads(result.stdout.splitlines()[-1])
    assert said["code"] == 0 and said["shipped"] and "canary" in said["switches"]
    assert said["steps"] == ["preflight", "pull", "migrate", "hooks-before", "canary", "promote"]
    assert said["plan"] == said["steps"] + ["tidy"]  # plan lists what the deploy ran
    assert said["history"] == ["ok"]
    out = result.stdout
    assert out.index("notify started") < out.index("one-off check --deploy") < out.index("canary: one request")
    assert out.index("tidy") < out.index("notify finished")
    assert (app / ".env").read_text() == "SECRET=x\nVERSION=1.5.0\n"
