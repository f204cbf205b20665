"""The previous version's containers kept ready (pdserver/warm.py): where their memory and CPU
are read, what status says of them, and their CPU weight given back."""

import json
import time

import pytest

CID = "6fa541d0ef19"


@pytest.mark.parametrize(
    ("proc_cgroup", "memory", "cpu", "per_second"),
    [
        (  # cgroup v1 (and the hybrid layout: name=systemd and an empty unified line)
            f"9:name=systemd:/docker/{CID}\n4:memory:/docker/{CID}\n2:cpuacct:/docker/{CID}\n1:cpu:/docker/{CID}\n"
            f"0::/docker/{CID}\n",
            f"/sys/fs/cgroup/memory/docker/{CID}/memory.usage_in_bytes",
            f"/sys/fs/cgroup/cpuacct/docker/{CID}/cpuacct.usage",
            1e9,
        ),
        (  # v1 with cpu and cpuacct mounted together
            f"4:memory:/docker/{CID}\n2:cpu,cpuacct:/docker/{CID}\n",
            f"/sys/fs/cgroup/memory/docker/{CID}/memory.usage_in_bytes",
            f"/sys/fs/cgroup/cpuacct/docker/{CID}/cpuacct.usage",
            1e9,
        ),
        (  # v2 with systemd's cgroup driver (Debian 12's default)
            f"0::/system.slice/docker-{CID}.scope\n",
            f"/sys/fs/cgroup/system.slice/docker-{CID}.scope/memory.current",
            f"/sys/fs/cgroup/system.slice/docker-{CID}.scope/cpu.stat",
            1e6,
        ),
        ("0::/\n", "/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/cpu.stat", 1e6),
    ],
)
def test_memory_and_cpu_are_read_where_the_cgroup_layout_keeps_them(proc_cgroup, memory, cpu, per_second):
    from pdserver import warm

    assert warm.cgroup_files(proc_cgroup) == {"memory": memory, "cpu": cpu, "per_second": per_second}


def test_no_cgroup_line_is_an_error_not_a_guess():
    from pdserver import warm

    with pytest.raises(ValueError):
        warm.cgroup_files("")


def test_status_says_what_the_kept_containers_hold_and_for_how_long(server, monkeypatch):
    from pdserver import env as envs
    from pdserver import warm

    env = envs.load("staging")  # 1.4.0 serves
    kept = {"version": "1.3.0", "for": "1.4.0", "containers": ["c1", "c2"], "since": time.time() - 100, "cpu": 2.0}
    kept["mode"] = "running"  # warm_rollback_keep: running
    monkeypatch.setattr(warm, "usage", lambda env, ids: (150 * 2**20, 2.75))
    line, facts = warm.describe(env, {**kept, "migrations": ""})
    assert line.startswith("kept ready: 1.3.0 (2 container(s), running idle, holding 150 MiB, 0.8s CPU since) for 50")
    assert line.endswith("s more; a rollback to it is instant")
    assert facts["warm"] == "1.3.0" and facts["warm_memory"] == 150 * 2**20 and 495 <= facts["warm_seconds"] <= 500
    line, _ = warm.describe(env, {**kept, "migrations": "notes.0002_x"})
    assert line.endswith("migrations of 1.4.0 stand between: a rollback is a full one")
    monkeypatch.setattr(warm, "usage", lambda env, ids: (None, None))
    assert "memory unknown)" in warm.describe(env, {**kept, "migrations": ""})[0]
    assert warm.describe(env, {**kept, "for": "1.3.9"}) == ("", {})  # kept for what no longer serves
    assert warm.describe(env, {**kept, "since": time.time() - 601}) == ("", {})  # the window has passed
    assert warm.describe(env, {}) == ("", {})
    stopped, facts = warm.describe(env, {**kept, "mode": "stopped", "migrations": ""})
    assert "(2 container(s), stopped: holding no memory) for " in stopped and facts["warm_memory"] == 0


def test_waking_gives_each_container_its_own_cpu_weight_back(server, monkeypatch):
    from pdserver import env as envs
    from pdserver import warm

    env = envs.load("staging")
    ran = []
    monkeypatch.setattr(warm.runner, "output", lambda command, **kw: ran.append(command[0]) or (0, ""))
    assert warm.wake(env, {"mode": "running", "containers": ["a", "b", "c"], "shares": {"a": 0, "b": 512, "c": 1024}})
    assert ran == [
        ["docker", "update", "--cpu-shares", "512", "b"],
        ["docker", "update", "--cpu-shares", "1024", "a", "c"],  # 0: Docker's default weight
    ]
    ran.clear()
    assert warm.wake(env, {"mode": "stopped", "containers": ["a", "b"]})  # kept stopped: started again
    assert ran == [["docker", "start", "a", "b"]]


def test_a_record_that_is_not_ours_is_no_record(server):
    from pdserver import env as envs
    from pdserver import warm

    env = envs.load("staging")
    envs.write_text(warm.path(env), json.dumps({"containers": "c1"}) + "\n")
    assert warm.read(env) == {}
    envs.write_text(warm.path(env), "{not json\n")
    assert warm.read(env) == {}
    warm.forget(env)
    warm.forget(env)  # twice: nothing to forget is fine
    assert warm.read(env) == {}


def test_a_woken_container_is_admitted_with_the_weight_it_served_with(server, monkeypatch):
    """A container that served at its compose file's cpu_shares (512) gets 512 back at admit,
    not Docker's default."""
    from pdserver import containers as ct
    from pdserver import env as envs
    from pdserver import pipeline, slots, warm

    env = envs.load("staging")
    kept = {"mode": "running", "version": "1.3.0", "for": "1.4.0", "slot": "blue", "containers": ["c1"]}
    kept.update(since=time.time() - 5, shares={"c1": 512})
    ran = []
    monkeypatch.setattr(warm.runner, "output", lambda command, **kw: ran.append(command[0]) or (0, ""))
    monkeypatch.setattr(slots.runner, "output", lambda command, **kw: ran.append(command[0]) or (0, ""))
    monkeypatch.setattr(ct, "service_containers", lambda env, service, stopped=False: ["c0", "c1"])
    monkeypatch.setattr(slots, "live_slot", lambda env: "green")
    strategy = slots.Slots(env)
    strategy.kept = kept
    assert strategy.wake(pipeline.Run(env, "r", {"KIND": "rollback", "VERSION": "1.3.0"})) == 0
    assert strategy.old == ["c0"] and strategy.new == ["c1"]
    ran.clear()
    assert strategy.restore_cpu(strategy.new)
    assert ran == [["docker", "update", "--cpu-shares", "512", "c1"]]


def test_kept_stopped_they_stop_before_losing_their_name_kept_running_they_lose_it_first(server, monkeypatch):
    """Stopped: never a moment running under a name they no longer own. Running: renamed, then
    the lowest weight, and their removal scheduled for when the window ends."""
    from pdserver import containers as ct
    from pdserver import env as envs
    from pdserver import pipeline, warm

    env = envs.load("staging")
    done, scheduled = [], []
    monkeypatch.setattr(warm.runner, "output", lambda command, **kw: done.append(command[0][1]) or (0, ""))
    monkeypatch.setattr(
        ct, "docker_out", lambda env, *args: done.append(args[0]) or (0, "c1 0\n" if args[0] == "inspect" else "")
    )
    monkeypatch.setattr(warm, "schedule_expiry", lambda env, since: scheduled.append(since))
    monkeypatch.setattr(warm, "usage", lambda env, ids: (1, 2.0))
    run = pipeline.Run(env, "r", {"KIND": "deploy", "VERSION": "1.4.0"})
    run.previous = "1.3.0"
    assert warm.keep(env, run, "blue", ["c1"], lambda c: done.append("rename") or True)
    assert done == ["inspect", "stop", "rename"] and not scheduled
    assert warm.read(env)["mode"] == "stopped"
    done.clear()
    env.values["WARM_KEEP"] = "running"
    assert warm.keep(env, run, "blue", ["c1"], lambda c: done.append("rename") or True)
    assert done == ["inspect", "rename", "update"] and scheduled == [warm.read(env)["since"]]
    assert warm.read(env)["shares"] == {"c1": 0} and warm.read(env)["cpu"] == 2.0


def test_what_was_kept_running_goes_when_the_window_ends_unless_a_run_decides(server, monkeypatch):
    from pdserver import env as envs
    from pdserver import warm
    from pdserver.lock import Lock

    env = envs.load("staging")
    removed = []
    monkeypatch.setattr(warm.runner, "output", lambda command, **kw: removed.append(command[0]) or (0, ""))
    since = time.time() - 601
    record = {"mode": "running", "version": "1.3.0", "for": "1.4.0", "containers": ["c1"], "since": since}
    envs.write_text(warm.path(env), json.dumps(record) + "\n")
    slept = []
    assert warm.expire(env, repr(since + 5), sleep=slept.append).startswith("nothing to remove")  # another keep
    assert slept and slept[0] <= 5 and removed == []
    held = Lock(env.state_dir)
    assert held.take() is None
    held.name("20261206T0000Z-1", "deploy of 1.5.0", "ci", "now")
    try:
        assert warm.expire(env, repr(since), sleep=lambda s: None).startswith("busy")
    finally:
        held.release()
    assert warm.expire(env, repr(since), sleep=lambda s: None) == (
        "removed 1 container(s) of 1.3.0: warm_rollback has passed"
    )
    assert removed == [["docker", "rm", "-f", "c1"]] and warm.read(env) == {}


def test_warm_expire_is_roots_own_and_checks_its_words(server, monkeypatch, capsys):
    from pdserver import facts, main

    monkeypatch.setenv("SUDO_USER", "pd-deploy")
    monkeypatch.setattr(main.os.path, "exists", lambda path: path == "/etc/sudoers.d/pushdeploy-pd-deploy")
    assert main.main(["warm-expire", "staging", "1796548364.5"]) == facts.EXIT_USAGE
    assert "not the deploy account's" in capsys.readouterr().err
    monkeypatch.delenv("SUDO_USER")
    assert main.main(["warm-expire", "staging", "soon"]) == facts.EXIT_USAGE
    assert "usage: bin/deploy warm-expire ENV SINCE" in capsys.readouterr().err


def test_a_restart_keeps_nothing_a_deploy_of_another_version_does(server, monkeypatch):
    """deploy.restart (the same version again, new secrets) keeps nothing: no rollback goes back
    to the version that serves, and kept running they would hold the rotated-out secrets."""
    from pdserver import drain, pipeline, slots, warm
    from pdserver import env as envs

    env = envs.load("staging")
    asked = []
    monkeypatch.setattr(drain, "retire", lambda env, ids, what, keep=False: asked.append(keep) or 0)
    monkeypatch.setattr(warm, "keep", lambda *args: True)
    for previous, kept in (("1.4.0", False), ("1.3.0", True)):
        strategy = slots.Slots(env)
        strategy.old = ["c1"]
        run = pipeline.Run(env, "r", {"KIND": "deploy", "VERSION": "1.4.0"})
        run.previous = previous
        strategy.retire_old(run)
        assert asked[-1] is kept


def test_the_expiry_runs_as_roots_own_word_not_in_the_deploy_accounts_sudo_session(server, monkeypatch):
    """Started from a run that the deploy account asked for through sudo, warm-expire must not
    carry SUDO_USER: main.roots would refuse it as the deploy account's (seen end to end)."""
    import subprocess

    from pdserver import env as envs
    from pdserver import warm

    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda argv, **kw: started.append((argv, kw)))
    monkeypatch.setenv("SUDO_USER", "pd-deploy")
    warm.schedule_expiry(envs.load("staging"), 1796554173.4910157)
    ((argv, kw),) = started
    assert argv[-3:] == ["warm-expire", "staging", "1796554173.4910157"] and argv[-4].endswith("/bin/deploy")
    assert kw["start_new_session"] and kw["close_fds"] and "SUDO_USER" not in kw["env"]
