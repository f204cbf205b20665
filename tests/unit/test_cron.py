"""Cron jobs: the `cron:` setting checked as the server checks it, its lines in ENV.conf, the
schedule in cron's and systemd's words, what bin/install puts on which host, and a failed
run's notification. The runs themselves are e2e (tests/e2e/test_cron.py)."""

from __future__ import annotations

import pytest

from pushdeploy import plan
from pushdeploy.settings import ConfigError, from_config

from pdserver import cron as server_cron
from pdserver import env as envs
from pdserver import install

ALLOW = {"clearsessions": [], "pixel_job": ["--seconds=[0-9]+", "--exit=[0-9]"]}


def settings(cron, **more):
    env = {"hosts": ["a.example", "b.example"], "manage_commands": ALLOW, "cron": cron, **more}
    return from_config({"environments": {"production": env}}, {}).environment("production")


def test_jobs_become_lines_of_the_servers_settings_which_it_reads_back():
    env = settings(
        {
            "sessions": {"schedule": "17 3 * * *", "command": "clearsessions"},
            "long": {
                "schedule": "*/5 * * * 1-5",
                "command": "pixel_job --seconds=30",
                "policy": "replace",
                "hosts": "all",
            },
        }
    )
    assert [(j.name, j.policy, j.hosts) for j in env.cron_jobs] == [
        ("long", "replace", "all"),
        ("sessions", "forbid", "first"),
    ]
    text = plan.server_conf(env, {})
    assert (
        "CRON_JOB=long replace all */5 * * * 1-5 pixel_job --seconds=30\nCRON_JOB=sessions forbid first 17 3 * * * clearsessions\n"
        in text
    )
    values = envs.parse(text.replace("APP_DIR=", "APP_DIR=", 1), "production.conf", "production")
    assert [server_cron.parse_line(line).words for line in values["CRON_JOB"]] == [
        ("pixel_job", "--seconds=30"),
        ("clearsessions",),
    ]


@pytest.mark.parametrize(
    ("job", "key", "says"),
    [
        ({"schedule": "* * * *", "command": "clearsessions"}, "cron.j.schedule", "five cron fields"),
        ({"schedule": "61 * * * *", "command": "clearsessions"}, "cron.j.schedule", "minute '61': from 0 to 59"),
        ({"schedule": "@daily", "command": "clearsessions"}, "cron.j.schedule", "five cron fields"),
        ({"schedule": "1-5/2 * * * *", "command": "clearsessions"}, "cron.j.schedule", "use *, */N, N, A-B"),
        ({"schedule": "5-1 * * * *", "command": "clearsessions"}, "cron.j.schedule", "from low to high"),
        ({"schedule": "* * * * *", "command": "shell"}, "cron.j.command", "can never run through pushdeploy"),
        (
            {"schedule": "* * * * *", "command": "migrate"},
            "cron.j.command",
            "not in this environment's manage_commands",
        ),
        ({"schedule": "* * * * *", "command": "pixel_job --seconds=x"}, "cron.j.command", "does not accept"),
        ({"schedule": "* * * * *", "command": "pixel_job --settings=x"}, "cron.j.command", "never passed"),
        ({"schedule": "* * * * *", "command": "clearsessions", "policy": "allow"}, "cron.j.policy", "forbid"),
        ({"schedule": "* * * * *", "command": "clearsessions", "hosts": "h1"}, "cron.j.hosts", "first"),
        ({"schedule": "* * * * *", "command": "clearsessions", "every": 5}, "cron.j.every", "unknown setting"),
    ],
)
def test_a_bad_job_is_refused_naming_its_key(job, key, says):
    with pytest.raises(ConfigError) as error:
        settings({"j": job})
    assert error.value.key == f"deploy.environments.production.{key}"
    assert says in str(error.value)


def test_a_bad_job_name_is_refused():
    with pytest.raises(ConfigError, match="a job's name"):
        settings({"Nightly Job": {"schedule": "* * * * *", "command": "clearsessions"}})


def test_the_server_refuses_a_job_line_it_would_not_write(tmp_path):
    base = f"APP_DIR={tmp_path}\nPROJECT=p\n"
    for line, says in (
        ("j forbid first * * * * * shell", "not a permitted management command"),
        ("j sometimes first * * * * * clearsessions", "policy is forbid or replace"),
        ("j forbid first 99 * * * * clearsessions", "from 0 to 59"),
        ("j forbid first * * * * * clearsessions --settings=x", "invalid argument"),
    ):
        with pytest.raises(envs.Refused, match=says):
            envs.parse(base + f"CRON_JOB={line}\n", "p.conf", "production")


@pytest.mark.parametrize(
    ("schedule", "calendar"),
    [
        ("*/5 * * * *", "*-*-* *:0/5:00"),
        ("17 3 * * *", "*-*-* 3:17:00"),
        ("0 9-17 * * 1-5", "Mon..Fri *-*-* 9..17:0:00"),
        ("0,30 * 1,15 */2 *", "*-1/2-1,15 *:0,30:00"),
        ("0 0 * * 0,6", "Sun,Sat *-*-* 0:0:00"),
        ("0 0 * * 7", "Sun *-*-* 0:0:00"),
    ],
)
def test_a_schedule_reads_the_same_to_systemd(schedule, calendar):
    assert server_cron.calendar(schedule.split()) == calendar


def conf(root, *lines):
    (root / "bundle/env.conf").write_text("APP_DIR=/x\nPROJECT=p\n" + "".join(f"CRON_JOB={line}\n" for line in lines))


def test_the_first_host_gets_every_job_the_others_only_those_for_all_hosts(root, capsys):
    conf(root, "sessions forbid first 17 3 * * * clearsessions", "tick replace all */5 * * * * pixel_job --seconds=1")
    entry = root / "cron.d/pushdeploy-cron-production"
    install.Installer(str(root / "bundle"), "production", "root", "/x", first=True).install_cron()
    text = entry.read_text()
    assert (
        "17 3 * * * root " in text
        and f"/bin/deploy cron production sessions >>{root}/state/production/cron/sessions.log 2>&1" in text
    )
    assert "*/5 * * * * root " in text and oct(entry.stat().st_mode & 0o777) == "0o644"
    assert (root / "state/production/cron").is_dir()
    assert "cron jobs of production on this host: sessions (17 3 * * *), tick (*/5 * * * *)" in capsys.readouterr().out
    install.Installer(str(root / "bundle"), "production", "root", "/x", first=False).install_cron()
    assert " sessions " not in entry.read_text() and " tick " in entry.read_text()
    assert server_cron.installed_jobs("production", str(root / "cron.d"), str(root / "none")) == {"tick"}
    conf(root)
    gone = install.Installer(str(root / "bundle"), "production", "root", "/x", first=True)
    gone.install_cron()
    assert not entry.exists() and gone.changed == 1


def test_a_failed_run_notifies_naming_the_job_and_its_exit():
    from pdserver import run

    notify = run.lib_module("notify")
    record = {"kind": "cron", "job": "broken", "command": "pixel_job --exit=3", "outcome": "failed", "exit": 3}
    record.update(version="1.4.0", duration=2.5, message="exit 3")
    facts = notify.facts_for("finished", record, {"env": "production", "project": "pixel", "host": "web1"})
    text = notify.summary(facts)
    assert text == "cron job broken (manage.py pixel_job --exit=3) FAILED on pixel on web1: exit 3 in 2.5s, on 1.4.0"
    body = notify.payload("json", facts)
    assert (body["event"], body["kind"], body["job"], body["exit"]) == ("failed", "cron", "broken", 3)
    assert "serving" not in facts


def test_under_systemd_each_job_is_a_timer_on_its_schedule(root, monkeypatch):
    (root / "no-systemd").mkdir()  # systemd runs as PID 1
    monkeypatch.setattr(install, "SYSTEMD_DIR", str(root / "systemd"))
    (root / "bin").mkdir()
    (root / "bin/systemctl").write_text(f'#!/bin/sh\necho "$@" >>{root}/systemctl.log\n')
    (root / "bin/systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{root / 'bin'}:/usr/bin:/bin")
    conf(root, "sessions forbid first 17 3 * * 1-5 clearsessions")
    install.Installer(str(root / "bundle"), "production", "root", "/x", first=True).install_cron()
    timer = (root / "systemd/pushdeploy-cron-production-sessions.timer").read_text()
    assert "OnCalendar=Mon..Fri *-*-* 3:17:00\n" in timer
    service = (root / "systemd/pushdeploy-cron-production-sessions.service").read_text()
    assert "ExecStart=" + f"{root}/prefix/bin/deploy cron production sessions\n" in service
    assert "restart pushdeploy-cron-production-sessions.timer" in (root / "systemctl.log").read_text()
    assert not (root / "cron.d/pushdeploy-cron-production").exists()
    conf(root)
    install.Installer(str(root / "bundle"), "production", "root", "/x", first=True).install_cron()
    assert not (root / "systemd/pushdeploy-cron-production-sessions.timer").exists()


def test_config_show_lists_the_jobs():
    from pushdeploy import provenance

    env = settings({"sessions": {"schedule": "17 3 * * *", "command": "clearsessions"}})
    loaded = from_config({"environments": {"production": {"hosts": ["a"], "manage_commands": ALLOW}}}, {})
    rows = {name: value for name, value, _ in provenance.environment_rows(loaded, env)}
    assert rows["cron"] == "sessions: 17 3 * * * clearsessions (forbid, first)"


def test_only_root_runs_the_schedulers_verbs(monkeypatch):
    from pdserver import guard
    from pdserver.request import Request

    monkeypatch.setattr(guard.os, "geteuid", lambda: 1000)
    assert guard.root_only(Request("cron", "staging", ("tidy",))) == (
        "cron runs as root from the environment's cron entry or timer, not through the deploy account"
    )
    assert "pull runs as root from the pull agent's timer" in guard.root_only(Request("pull", "staging"))
    assert guard.root_only(Request("cron-status", "staging")) is None
    monkeypatch.setattr(guard.os, "geteuid", lambda: 0)
    monkeypatch.delenv("SUDO_USER", raising=False)
    assert guard.root_only(Request("cron", "staging", ("tidy",))) is None
