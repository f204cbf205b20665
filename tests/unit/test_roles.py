"""Roles: the `roles:` setting checked as the server checks it, its lines in ENV.conf, which
host runs which role (bin/install --host=N), what plan says, and swarm's rules for them. The
deploys themselves are e2e (tests/e2e/test_jobs.py)."""

from __future__ import annotations

import pytest

from pushdeploy import plan, preview
from pushdeploy.settings import ConfigError, from_config

from pdserver import env as envs
from pdserver import install, run
from pdserver import roles as server_roles

HOSTS = ["deploy@app1", "deploy@app2", "deploy@app3"]


def settings(roles, hosts=HOSTS, **more):
    env = {"hosts": hosts, "services": ["web", "proxy", "redis"], "roles": roles, **more}
    return from_config({"environments": {"production": env}}, {}).environment("production")


def test_roles_become_lines_of_the_servers_settings_which_it_reads_back():
    env = settings(
        {
            "worker": {"kind": "worker"},
            "mailer": {"kind": "worker", "hosts": ["deploy@app3", "deploy@app2"]},
            "beat": {"kind": "scheduler"},
            "digest": {"kind": "scheduler", "hosts": ["deploy@app2"]},
        }
    )
    text = plan.server_conf(env, {})
    assert "ROLE=beat scheduler 1\nROLE=digest scheduler 2\nROLE=mailer worker 2,3\nROLE=worker worker all\n" in text
    values = envs.parse(text, "production.conf", "production")
    assert [server_roles.parse_line(line) for line in values["ROLE"]][0] == ("beat", "scheduler", "1", ())


@pytest.mark.parametrize(
    ("roles", "key", "says"),
    [
        ({"worker": {"kind": "celery"}}, "roles.worker.kind", "is worker"),
        ({"worker": {}}, "roles.worker.kind", "is worker"),
        ({"web": {"kind": "worker"}}, "roles.web", "a role is another service"),
        ({"redis": {"kind": "worker"}}, "roles.redis", "a role is another service"),
        ({"beat": {"kind": "scheduler", "hosts": "all"}}, "roles.beat.hosts", "exactly one host, not 3"),
        ({"beat": {"kind": "scheduler", "hosts": HOSTS[:2]}}, "roles.beat.hosts", "exactly one host, not 2"),
        ({"worker": {"kind": "worker", "hosts": ["deploy@elsewhere"]}}, "roles.worker.hosts", "not one of"),
        ({"worker": {"kind": "worker", "hosts": "some"}}, "roles.worker.hosts", "all, first, or a list"),
        ({"worker": {"kind": "worker", "replicas": 2}}, "roles.worker.replicas", "unknown setting"),
        ({"bad name": {"kind": "worker"}}, "roles.bad name", "named as its compose service"),
        ({"worker": {"kind": "worker", "quiesce": "kill -TSTP 1; reboot"}}, "roles.worker.quiesce", "not a plain word"),
        ({"beat": {"kind": "scheduler", "quiesce": "celery control x"}}, "roles.beat.quiesce", "not quiesced"),
    ],
)
def test_a_bad_role_is_refused_naming_its_key(roles, key, says):
    with pytest.raises(ConfigError) as error:
        settings(roles)
    assert error.value.key == f"deploy.environments.production.{key}"
    assert says in str(error.value)


def test_a_workers_quiesce_command_travels_as_words_and_comes_back_the_same():
    words = "python3 -m celery -A pixel control cancel_consumer celery --destination celery@%h"
    env = settings({"worker": {"kind": "worker", "quiesce": words}})
    text = plan.server_conf(env, {})
    assert f"ROLE=worker worker all {words}\n" in text
    [line] = envs.parse(text, "production.conf", "production")["ROLE"]
    assert server_roles.parse_line(line).quiesce == tuple(words.split())


def test_on_swarm_the_stack_file_places_roles():
    env = settings({"beat": {"kind": "scheduler"}}, engine="swarm", hosts=["deploy@m1"], db_service="")
    assert env.roles == (("beat", "scheduler", "1", ()),)
    with pytest.raises(ConfigError, match="deploy.placement"):
        settings({"beat": {"kind": "scheduler", "hosts": "first"}}, engine="swarm", hosts=["deploy@m1"], db_service="")


def test_the_server_refuses_a_role_line_it_would_not_write(tmp_path):
    base = f"APP_DIR={tmp_path}\nPROJECT=p\nPROXY_SERVICE=proxy\n"
    for line, says in (
        ("worker celery all", "kind 'celery' is worker or scheduler"),
        ("beat scheduler all", "a scheduler runs on exactly one host"),
        ("beat scheduler 1,2", "a scheduler runs on exactly one host"),
        ("worker worker first", "hosts 'first' is all or host positions"),
        ("$(reboot) worker all", "is not a service name"),
        ("worker worker", "is not NAME KIND HOSTS"),
        ("worker worker all sh -c $(reboot)", "is not a plain word"),
        ("beat scheduler 1 kill 1", "a scheduler is stopped, not quiesced"),
        ("web worker all", "a role is named once and is none of web"),
        ("proxy worker all", "a role is named once and is none of web"),
    ):
        with pytest.raises(envs.Refused, match=says):
            envs.parse(base + f"ROLE={line}\n", "p.conf", "production")
    with pytest.raises(envs.Refused, match="ROLE worker: a role is named once"):
        envs.parse(base + "ROLE=worker worker all\nROLE=worker worker 1\n", "p.conf", "production")


def test_each_host_runs_the_roles_that_name_its_position(root):
    (root / "bundle/env.conf").write_text("APP_DIR=/x\nPROJECT=p\n")
    installer = install.Installer(str(root / "bundle"), "production", "root", "/x", position=2)
    installer.install_position()
    assert (root / "state/production/host").read_text() == "2\n" and not installer.first
    assert install.Installer(str(root / "bundle"), "production", "root", "/x", position=1).first
    conf = "APP_DIR=/x\nPROJECT=p\nROLE=beat scheduler 1\nROLE=mailer worker 2,3\nROLE=worker worker all\n"
    env = envs.Env("production", "production.conf", envs.parse(conf, "production.conf", "production"))
    assert [role.name for role in server_roles.here(env)] == ["mailer", "worker"]
    (root / "state/production/host").write_text("1\n")
    assert [role.name for role in server_roles.here(env)] == ["worker", "beat"]  # workers first


def test_bin_install_takes_the_hosts_position(root, capsys):
    assert install.main(["b", "production", "root", "/x", "--host=0"]) == 64
    assert install.main(["b", "production", "root", "/x", "--host=x"]) == 64
    assert "[--first | --host=N]" in capsys.readouterr().err
    command = plan.install_command(
        from_config({"environments": {"production": {"hosts": HOSTS}}}, {}),
        settings({}),
        "b.tar",
        as_root=True,
        position=3,
    )
    assert command.endswith(" --host=3'")


def test_plan_says_what_happens_to_each_role():
    lines = [
        "current=1.0.0",
        "target=1.1.0",
        "steps=preflight pull database migrate start health admit roles switch retire prune-static retire-roles",
        "role=worker (worker, 2 of 1.0.0): 2 of 1.1.0 start beside them once web is up; after the switch the old finish their jobs and stop",
        "role=beat (scheduler, 1 of 1.0.0): the old one stops, then one of 1.1.0 starts",
    ]
    shown = preview.show(preview.parse(lines))
    assert "roles:       worker (worker, 2 of 1.0.0): 2 of 1.1.0 start beside them" in "\n".join(shown)
    assert any(line.startswith(" " * 13 + "beat (scheduler") for line in shown)


def test_swarm_replaces_a_scheduler_stop_first_one_task_and_needs_no_health_check_for_roles():
    swarm = run.lib_module("swarm")
    base = {
        "image": "reg/app:1.0",
        "deploy": {"update_config": {"order": "start-first"}},
        "healthcheck": {"test": ["CMD", "true"]},
    }
    config = {
        "networks": {"default": {"driver": "overlay", "attachable": True}},
        "services": {
            "web": base,
            "worker": {"image": "reg/app:1.0", "deploy": {"update_config": {"order": "start-first"}}},
            "beat": {"image": "reg/app:1.0", "deploy": {"replicas": 2, "update_config": {"order": "start-first"}}},
        },
    }
    found = swarm.problems(config, "1.0", {"worker": "worker", "beat": "scheduler", "mailer": "worker"})
    assert found == [
        "role mailer: the stack file has no service mailer: add it, or remove it from `roles:`",
        "role beat (scheduler): set `deploy.replicas: 1`: exactly one runs",
        "role beat (scheduler): set `deploy.update_config.order: stop-first`: the old one stops before its successor starts",
    ]
    config["services"]["beat"]["deploy"] = {"replicas": 1, "update_config": {"order": "stop-first"}}
    assert swarm.problems(config, "1.0", {"worker": "worker", "beat": "scheduler"}) == []


def test_a_quiesce_command_names_one_container_or_every_task():
    words = tuple("celery control cancel_consumer celery --destination celery@%h".split())
    assert server_roles.quiesce_argv(words, ["a1b2c3"])[-1] == "celery@a1b2c3"
    assert server_roles.quiesce_argv(words, ["a1", "b2"])[-2:] == ["--destination", "celery@a1,celery@b2"]
    assert server_roles.quiesce_argv(("kill", "-TSTP", "1"), ["a1"]) == ["kill", "-TSTP", "1"]


def test_hosts_whose_workers_quiesce_deploy_one_at_a_time_whatever_batch_size():
    """Two hosts telling their workers to stop consuming at once can lose a job (docs/roles.md):
    a worker role with a quiesce command on several hosts makes every batch one host."""
    quiesced = {"worker": {"kind": "worker", "quiesce": "celery -A app control cancel_consumer celery"}}
    env = settings(quiesced, batch_size=3, migrate_on="each")
    assert plan.batch_size(env) == "1" and [len(hosts) for hosts, _ in plan.phases(env)] == [1] * len(HOSTS)
    plain = settings({"worker": {"kind": "worker"}}, batch_size=3, migrate_on="each")
    assert plan.batch_size(plain) == "3" and [len(hosts) for hosts, _ in plan.phases(plain)] == [len(HOSTS)]
    one_host = settings({"worker": {**quiesced["worker"], "hosts": "first"}}, batch_size=3, migrate_on="each")
    assert plan.batch_size(one_host) == "3"
