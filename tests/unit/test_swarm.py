"""engine: swarm, the pure parts: what the stack file must have, the one-off migration
container, and how a service's state after `docker stack deploy` is judged."""

import importlib.util
import subprocess

import pytest

from pushdeploy import plan, protocol
from pushdeploy.settings import ConfigError, from_config

from pdserver import env as server_envs
from pdserver import stackfile

_spec = importlib.util.spec_from_file_location("swarm", protocol.SERVER_DIR / "lib/swarm.py")
swarm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(swarm)

V = "1.1.0"
GOOD_WEB = {
    "image": f"127.0.0.1:5000/pixel:{V}",
    "environment": {"SECRET_KEY": "s3cret", "POSTGRES_HOST": "db.example"},
    "volumes": [
        {"type": "volume", "source": "static", "target": "/srv/static"},
        {"type": "bind", "source": "/srv/x", "target": "/x", "read_only": True},
    ],
    "healthcheck": {"test": ["CMD", "true"]},
    "deploy": {"update_config": {"order": "start-first", "failure_action": "rollback"}},
    "networks": {"default": None},
}


def config(**web):
    return {
        "name": "pixel-swarm",
        "services": {"web": {**GOOD_WEB, **web}, "redis": {"image": "redis:7"}},
        "networks": {"default": {"name": "pixel-swarm_default", "driver": "overlay", "attachable": True}},
        "volumes": {"static": {"name": "pixel-swarm_static"}},
    }


def test_a_stack_that_updates_start_first_behind_a_health_check_has_no_problems():
    assert swarm.problems(config(), V) == []
    assert swarm.updated_services(config(), V) == ["web"]  # redis is not tagged with the version


@pytest.mark.parametrize(
    "web, expected",
    [
        ({"deploy": {}}, "order is stop-first (the default): set `order: start-first`"),
        ({"deploy": {"update_config": {"order": "stop-first"}}}, "order is stop-first: set `order: start-first`"),
        (
            {"deploy": {"update_config": {"order": "start-first", "failure_action": "continue"}}},
            "failure_action is continue",
        ),
        ({"healthcheck": None}, "service web: no healthcheck: in the compose file"),
        ({"healthcheck": {"test": ["CMD", "true"], "disable": True}}, "no healthcheck"),
        ({"image": "127.0.0.1:5000/pixel:latest"}, "no service's image is tagged with ${VERSION}"),
    ],
)
def test_what_a_stack_lacks_is_said_as_what_to_do(web, expected):
    found = swarm.problems(config(**web), V)
    assert any(expected in problem for problem in found), found


def test_a_network_the_one_off_container_cannot_join_is_a_problem():
    stack = config()
    stack["networks"]["default"]["attachable"] = False
    assert any("attachable: true" in p for p in swarm.problems(stack, V))


def test_the_one_off_container_gets_the_new_image_the_stacks_network_volumes_and_environment(tmp_path):
    env_file = tmp_path / "env"
    lines = swarm.release(config(), "web", str(env_file))
    assert lines == [
        f"image=127.0.0.1:5000/pixel:{V}",
        "network=pixel-swarm_default",
        "network_attachable=yes",
        "mount=pixel-swarm_static:/srv/static",
        "mount=/srv/x:/x:ro",
    ]
    assert env_file.read_text() == "POSTGRES_HOST=db.example\nSECRET_KEY=s3cret\n"


def test_a_value_on_several_lines_is_refused_rather_than_cut(tmp_path):
    with pytest.raises(SystemExit, match="spans lines"):
        swarm.release(config(environment={"KEY": "a\nb"}), "web", str(tmp_path / "env"))


# ------------------------------------------------------------------ watching an update

SINCE = 1_800_000_000.0  # the stack deploy, epoch seconds
BEFORE, AFTER = "2027-01-15T07:59:00.000000000Z", "2027-01-15T08:00:30.123456789Z"  # SINCE is 08:00:00Z
NEW, OLD = f"127.0.0.1:5000/pixel:{V}@sha256:aa", "127.0.0.1:5000/pixel:1.0.0@sha256:bb"
NODES = [
    {"ID": "n1", "Description": {"Hostname": "h1"}, "Status": {"State": "ready"}},
    {"ID": "n2", "Description": {"Hostname": "h2"}, "Status": {"State": "ready"}},
]


def service(update=None, replicas=2):
    data = {
        "ID": "s1",
        "Spec": {
            "Name": "pixel_web",
            "Mode": {"Replicated": {"Replicas": replicas}},
            "TaskTemplate": {"ContainerSpec": {"Image": NEW}},
        },
    }
    if update:
        data["UpdateStatus"] = update
    return data


def task(state, image=NEW, node="n1", desired="running", when=AFTER, err=""):
    return {
        "ServiceID": "s1",
        "NodeID": node,
        "DesiredState": desired,
        "Status": {"State": state, "Timestamp": when, "Err": err},
        "Spec": {"ContainerSpec": {"Image": image}},
    }


def judge(services, tasks, nodes=NODES, phase="deploy"):
    return swarm.watch({"services": services, "tasks": tasks, "nodes": nodes}, phase, SINCE)


@pytest.mark.parametrize(
    "update, tasks, phase, state",
    [
        # stack deploy returned; swarm has not started the update yet: old tasks run
        (None, [task("running", OLD), task("running", OLD, "n2")], "deploy", "updating"),
        (
            {"State": "updating", "StartedAt": AFTER},
            [task("running"), task("starting", node="n2")],
            "deploy",
            "updating",
        ),
        (
            {"State": "completed", "StartedAt": AFTER},
            [task("running"), task("running", node="n2")],
            "deploy",
            "converged",
        ),
        (
            {"State": "paused", "StartedAt": AFTER, "Message": "update paused due to failure"},
            [task("running", OLD)],
            "deploy",
            "failed",
        ),
        ({"State": "rollback_started", "StartedAt": AFTER}, [task("running", OLD)], "deploy", "updating"),
        # swarm rolled the service back itself: a failure while deploying ...
        (
            {"State": "rollback_completed", "StartedAt": AFTER},
            [task("running"), task("running", node="n2")],
            "deploy",
            "failed",
        ),
        # ... and what the whole-stack rollback wants
        (
            {"State": "rollback_completed", "StartedAt": AFTER},
            [task("running"), task("running", node="n2")],
            "rollback",
            "converged",
        ),
        # a paused update from an earlier deploy says nothing about this one
        (
            {"State": "paused", "StartedAt": BEFORE},
            [task("running"), task("running", node="n2")],
            "deploy",
            "converged",
        ),
        # a task not yet running its health check through counts as not there
        (
            {"State": "completed", "StartedAt": AFTER},
            [task("running"), task("starting", node="n2")],
            "deploy",
            "updating",
        ),
    ],
)
def test_a_services_state_after_stack_deploy(update, tasks, phase, state):
    lines = judge([service(update)], tasks, phase=phase)
    assert lines[-1].split("\t")[:2] == [state, "pixel_web"], lines


def test_the_report_says_where_the_tasks_run_and_what_failed():
    tasks = [
        task("running"),
        task("running", node="n2"),
        task("failed", node="n2", desired="shutdown", err="task: non-zero exit (1)"),
        task("failed", node="n2", desired="shutdown", when=BEFORE, err="old"),
    ]
    [line] = judge([service({"State": "completed", "StartedAt": AFTER})], tasks)
    assert (
        line == f"converged\tpixel_web\t2/2 running {V} on h1,h2; 1 task(s) failed, last on h2: task: non-zero exit (1)"
    )


def test_a_node_that_stopped_answering_is_named():
    nodes = [NODES[0], {"ID": "n3", "Description": {"Hostname": "h3"}, "Status": {"State": "down"}}]
    lines = judge([service({"State": "updating", "StartedAt": AFTER})], [task("running")], nodes)
    assert lines[0] == "down\th3"


def test_an_update_waiting_only_for_a_node_that_is_down_has_converged_on_the_others():
    nodes = [*NODES, {"ID": "n3", "Description": {"Hostname": "h3"}, "Status": {"State": "down"}}]
    update = {"State": "updating", "StartedAt": AFTER}
    waiting = [
        task("running"),
        task("running", node="n2"),
        task("running", node="n2"),
        task("running", OLD, "n3", desired="shutdown"),
    ]
    assert judge([service(update, replicas=3)], waiting, nodes)[-1].startswith(
        "converged\tpixel_web\t3/3 running 1.1.0 on h1,h2; swarm's update still waits for h3 (down)"
    )
    # an old task still serving on a node that answers: not yet
    busy = [task("running"), task("running", node="n2"), task("running", node="n2"), task("running", OLD, "n1")]
    assert judge([service(update, replicas=3)], busy, nodes)[-1].startswith("updating")


def test_the_watch_command_reads_dockers_json_from_stdin():
    import json

    data = json.dumps({"services": [service({"State": "paused", "StartedAt": AFTER})], "tasks": [], "nodes": NODES})
    out = subprocess.run(
        ["python3", "-I", str(protocol.SERVER_DIR / "lib/swarm.py"), "watch", "deploy", str(SINCE)],
        input=data,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and out.stdout.startswith("failed\tpixel_web\t0/2 running"), out.stderr


# ------------------------------------------------------------------ settings and the server's conf


def swarm_env(**extra):
    raw = {"hosts": ["m1.example"], "engine": "swarm", "manager_compose_files": ["docker-compose.proxy.yml"], **extra}
    return from_config({"app": "pixel", "environments": {"swarm": raw}}, {}).environment("swarm")


def test_a_swarm_environment_tells_bin_deploy_its_engine_and_skips_the_slot_checks():
    env = swarm_env(converge_timeout=120)
    conf = plan.server_conf(env, {}).splitlines()
    assert conf[-3:] == ["ENGINE=swarm", "MANAGER_COMPOSE_FILES=docker-compose.proxy.yml", "CONVERGE_TIMEOUT=120"]
    assert (
        plan.proxy_config_problems(env, {"pixel.conf": b"server { location / { proxy_pass http://web:8000; } }"}) == []
    )


def test_a_compose_environments_conf_is_unchanged_by_the_swarm_settings():
    env = from_config({"app": "pixel", "environments": {"s": {"hosts": ["h.example"]}}}, {}).environment("s")
    assert not any(
        line.startswith(("ENGINE=", "MANAGER_COMPOSE_FILES=", "CONVERGE_TIMEOUT="))
        for line in plan.server_conf(env, {}).splitlines()
    )


@pytest.mark.parametrize(
    "extra, key",
    [
        ({"engine": "kubernetes"}, "engine"),
        ({"compose_command": "docker-compose"}, "compose_command"),
        ({"db_service": "db"}, "db_service"),
        ({"converge_timeout": 5}, "converge_timeout"),
        ({"manager_compose_files": ["../x.yml"]}, "manager_compose_files"),
    ],
)
def test_bad_swarm_settings_name_the_key(extra, key):
    with pytest.raises(ConfigError) as error:
        swarm_env(**extra)
    assert error.value.key.endswith(key)


def test_manager_compose_files_are_for_swarm_only():
    with pytest.raises(ConfigError, match="only for engine: swarm"):
        from_config({"app": "pixel", "environments": {"s": {"hosts": ["h"], "manager_compose_files": ["p.yml"]}}}, {})


def test_the_server_side_includes_the_swarm_files():
    assert {"lib/pdserver/stack.py", "lib/swarm.py"} <= set(protocol.SERVER_FILES)


def test_stack_deploy_gets_the_servers_env_values_and_the_new_version(tmp_path):
    """docker stack deploy reads no .env: bin/deploy passes it, VERSION replaced, quotes as compose reads them."""
    (tmp_path / ".env").write_text(
        "VERSION=1.0.0\nSECRET_KEY='a b$c'\n# a comment\nexport IMAGE=\"reg/app\"\nnot a line\n"
    )
    env = server_envs.Env(
        "s", "/nonexistent/s.conf", {**server_envs.DEFAULTS, "APP_DIR": str(tmp_path), "PROJECT": "pixel-swarm"}
    )
    command = stackfile.with_dotenv(env, "1.1.0", "stack", "deploy")
    assert command.argv[:3] == ["docker", "stack", "deploy"] and command.cwd == str(tmp_path)
    values = command.environ
    assert (values["VERSION"], values["SECRET_KEY"], values["IMAGE"], values["PD_STACK"]) == (
        "1.1.0",
        "a b$c",
        "reg/app",
        "pixel-swarm",
    )


def test_a_replaced_task_still_running_on_a_node_that_answers_is_named_and_waited_for():
    # The update says completed, the new tasks run, but swarm has not yet stopped an old one on h1.
    stray = [task("running"), task("running", node="n2"), task("running", OLD, "n1", desired="shutdown")]
    [line] = judge([service({"State": "completed", "StartedAt": AFTER})], stray)
    assert line == f"updating\tpixel_web\t2/2 running {V} on h1,h2; 1 task(s) of 1.0.0 still running on h1"
    gone = [task("running"), task("running", node="n2"), task("shutdown", OLD, "n1", desired="shutdown")]
    assert judge([service({"State": "completed", "StartedAt": AFTER})], gone)[0].startswith("converged")
    # Waiting only for a node that is down, it still counts as converged, and says what still runs.
    nodes = [*NODES, {"ID": "n3", "Description": {"Hostname": "h3"}, "Status": {"State": "down"}}]
    waiting = [*stray, task("running", node="n2"), task("running", OLD, "n3", desired="shutdown")]
    line = judge([service({"State": "updating", "StartedAt": AFTER}, replicas=3)], waiting, nodes)[-1]
    assert (
        line.startswith("converged")
        and "1 task(s) of 1.0.0 still running on h1" in line
        and "waits for h3 (down)" in line
    )


def test_more_tasks_of_the_new_image_than_replicas_is_not_yet_converged():
    # A new task failed its health check and was replaced while the update replaced it too:
    # swarm reports the update completed with one task more than wanted, and stops it soon.
    extra = [task("running"), task("running", node="n2"), task("running", node="n2")]
    [line] = judge([service({"State": "completed", "StartedAt": AFTER})], extra)
    assert line == f"updating\tpixel_web\t3/2 running {V} on h1,h2; 1 more than the 2 wanted, swarm stops them"
    # a stale task on a node that stopped answering is not one more: swarm replaced it elsewhere
    nodes = [*NODES, {"ID": "n3", "Description": {"Hostname": "h3"}, "Status": {"State": "down"}}]
    stale = [task("running"), task("running", node="n2"), task("running", node="n3")]
    assert judge([service({"State": "completed", "StartedAt": AFTER})], stale, nodes)[-1].startswith("converged")
