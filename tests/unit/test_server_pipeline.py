"""The deploy's one sequence (pdserver/pipeline.py) with stand-in strategies: what every
deploy does whatever its strategy (steps in order, hooks, maintenance, backup,
notifications, the history, the build order, undo on failure) is done for each."""

from __future__ import annotations

import json
import os

import pytest

from pdserver import env as envs
from pdserver import pipeline


class Strategy:
    """Records what the pipeline asked of it; FAIL names a step that fails."""

    def __init__(self, switch: tuple, fail: str = "", where: str = ""):
        self.calls, self.fail, self.where = [], fail, where
        self.database_steps = (
            [("database", self._step("database"))] if "start" in switch or "recreate" in switch else []
        )
        self.switch_steps = [(name, self._step(name)) for name in switch]
        self.preflight, self.pull, self.backup = self._step("preflight"), self._step("pull"), self._step("backup")

    def _step(self, name):
        def action(run):
            self.calls.append(name)
            if name in ("switch", "up", "converge"):
                run.switched = name != self.fail
            return 1 if name == self.fail else 0

        return action

    def one_off(self, run, argv, environ):
        what = "hooks" if "PD_HOOKS" in environ else "release"
        self.calls.append(f"one-off {what} {environ.get('PD_HOOKS', '')}".strip())
        return 1 if what == self.fail else 0

    def finish(self, run):
        self.calls.append("finish")

    def undo(self, run):
        self.calls.append("undo")
        return 0

    def describe_failure(self, run):
        pass


SLOTS = ("start", "health", "admit", "switch")
RECREATE = ("recreate", "up")
SWARM = ("proxy", "deploy", "converge")


@pytest.fixture
def deploy(server, monkeypatch):
    events = []
    monkeypatch.setattr(pipeline, "notify", lambda run, event: events.append(event))
    conf = server / "etc/staging.conf"

    def run(strategy, extra_conf: str = "", **request):
        if extra_conf:
            conf.write_text(conf.read_text() + extra_conf)
        env = envs.load("staging")
        values = {"KIND": "deploy", "VERSION": "1.5.0", "BY": "ci", **request}
        the_run = pipeline.Run(env, "r1", values)
        open(the_run.file("log"), "w").close()
        answer = pipeline.deploy(the_run, strategy)
        steps = [line.split("\t")[0] for line in open(the_run.file("steps"))]
        records = [json.loads(line) for line in open(env.history)]
        return answer, steps, records, events

    return run


@pytest.mark.parametrize("switch", [SLOTS, RECREATE, SWARM], ids=["slots", "recreate", "swarm"])
def test_every_strategy_gets_the_same_hooks_notifications_and_history(deploy, switch, capsys):
    strategy = Strategy(switch)
    answer, steps, records, events = deploy(
        strategy, "HOOK_AFTER_SWITCH=clearsessions\nBACKUP=yes\n", MAINTENANCE="1", ORDER="17"
    )
    assert answer == 0
    before = [
        "preflight",
        "pull",
        *(["database"] if strategy.database_steps else []),
        "backup",
        "maintenance-on",
        "migrate",
    ]
    assert steps == before + ["hooks-before", *switch, "hooks-after", "maintenance-off"]
    assert strategy.calls.index("one-off hooks check --deploy") < strategy.calls.index(switch[0])
    assert strategy.calls[-2:] == ["finish", "one-off hooks clearsessions"]
    assert events == ["started", "finished"]
    assert [(r["version"], r["previous"], r["outcome"], r["by"]) for r in records] == [("1.5.0", "1.4.0", "ok", "ci")]
    assert open(os.path.join(envs.load("staging").state_dir, "order")).read() == "17\n"
    assert capsys.readouterr().out.splitlines()[-1].startswith("deployed 1.5.0 to staging in ")


@pytest.mark.parametrize("switch", [SLOTS, RECREATE, SWARM], ids=["slots", "recreate", "swarm"])
def test_a_failed_step_is_undone_recorded_and_notified_for_every_strategy(deploy, switch, capsys):
    failing = switch[-1]
    strategy = Strategy(switch, fail=failing)
    answer, steps, records, events = deploy(strategy, MAINTENANCE="1", ORDER="18")
    assert answer == 1
    assert steps[-2:] == ["rollback", "maintenance-off"] and "hooks-after" not in steps
    assert strategy.calls[-1] == "undo" and "finish" not in strategy.calls
    assert events == ["started", "finished"]
    assert [(r["outcome"], r["failed_step"]) for r in records] == [("failed", failing)]
    assert not os.path.exists(os.path.join(envs.load("staging").state_dir, "order")), "a failed deploy sets no order"
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith(f"deploy of 1.5.0 to staging FAILED at {failing} after ") and last.endswith(
        "; staging serves 1.4.0"
    )


def test_a_failing_after_switch_hook_is_a_warning_not_a_failed_deploy(deploy, capsys):
    strategy = Strategy(SLOTS)
    strategy.one_off = lambda run, argv, environ: 5 if environ.get("PD_HOOKS") == "clearsessions" else 0
    answer, steps, records, _ = deploy(strategy, "HOOK_AFTER_SWITCH=clearsessions\n")
    assert answer == 0 and records[0]["outcome"] == "ok" and records[0]["failed_step"] == ""
    assert "warning: an after_switch hook failed (see the log above); 1.5.0 serves" in capsys.readouterr().out


def test_skip_migrate_runs_static_and_no_backup(deploy):
    _, steps, _, _ = deploy(Strategy(SLOTS), "BACKUP=yes\n", SKIP_MIGRATE="1")
    assert steps[:5] == ["preflight", "pull", "database", "static", "hooks-before"]


@pytest.mark.parametrize("switch", [SLOTS, RECREATE, SWARM], ids=["slots", "recreate", "swarm"])
@pytest.mark.parametrize("fail", ["", "last"])
def test_a_rollback_with_restore_db_saves_restores_and_puts_the_data_back_if_it_fails(deploy, switch, fail, capsys):
    """--restore-db: the loss stated first, maintenance on, the data as it is now saved, the
    older backup restored (no unmigrate), recorded; a failure after the restore restores the
    saved data for the version that serves on."""
    strategy = Strategy(switch, fail=switch[-1] if fail else "")
    restored = []

    def restore(run, path):
        restored.append(path)
        return 0

    def backup(run):
        run.backup = "/state/backups/20261205T120000Z-1.4.0.dump"
        return 0

    strategy.restore, strategy.backup, strategy.warm_steps = restore, backup, lambda run: None
    request = {"KIND": "rollback", "VERSION": "1.3.0", "MAINTENANCE": "1"}
    request.update(RESTORE="/state/backups/20261201T100000Z-1.3.0.dump", LOST_SINCE="2026-12-01T10:00:00Z")
    answer, steps, records, _ = deploy(strategy, "BACKUP=yes\n", **request, RESTORE_FOR="1.4.0")
    out = capsys.readouterr().out
    assert out.index("restoring the database: the database goes back to 20261201T100000Z-1.3.0.dump") < out.index(
        "==> preflight"
    )
    start = steps.index("maintenance-on")
    assert steps[start : start + 4] == ["maintenance-on", "backup", "restore", "migrate"]
    assert "unmigrate" not in steps and steps[-1] == "maintenance-off"
    record = records[-1]
    assert record["backup"] == "20261205T120000Z-1.4.0.dump"
    if not fail:
        assert answer == 0 and restored == ["/state/backups/20261201T100000Z-1.3.0.dump"]
        assert (record["restored"], record["lost_since"]) == ("20261201T100000Z-1.3.0.dump", "2026-12-01T10:00:00Z")
    else:
        assert answer == 1 and steps[-3:] == ["rollback", "restore-back", "maintenance-off"]
        assert restored == ["/state/backups/20261201T100000Z-1.3.0.dump", "/state/backups/20261205T120000Z-1.4.0.dump"]
        assert "restored" not in record  # it was put back
