"""engine: swarm on a real three-node swarm (scripts/sandbox-hosts up --swarm): h1 the
manager that pushdeploy reaches over SSH, h2 and h3 workers, each its own dockerd in
its own network namespace, all pulling from the sandbox registry; the shared
PostgreSQL host; example/docker-compose.swarm.yml with web on dnsrr (no IPVS here) and
the proxy a plain container on h1 (example/docker-compose.swarm-proxy.yml).

A deploy spreads the new version over the nodes and, under open-loop load through the
load balancer (in front of h1's proxy), loses no request and keeps each under 1 s. A
release failing its health check rolls the whole stack back; a failing migration
changes nothing; a worker that stops mid-deploy is named and the deploy ends in a
state the tool reports.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e import jobs, testca
from tests.e2e.conftest import ROOT, inv, tool_env
from tests.e2e.multihost import (
    STATE,
    HostsEnvironment,
    db_psql,
    push_private,
    registry_env,
    require_multihost,
    run_cron_entry,
    script,
)
from tests.openload import OpenLoad

pytestmark = pytest.mark.e2e

MANAGER = "10.213.0.11"
LB = "http://127.0.0.1:8090/"
ENV, STACK = "swarm", "pixel-swarm"
V1, V2, V3 = "1.0.0", "1.1.0", "c3c3c3c"
BAD_HEALTH, BAD_MIGRATION = "1.2.0-badhealth", "1.3.0-badmigration"
RATE, BUDGET = 30, 1.0

CONFIG = f"""deploy:
  environments:
    {ENV}:
      hosts: [pd-deploy@{MANAGER}]
      engine: swarm
      project: {STACK}
      app_dir: /srv/pushdeploy/{STACK}
      docker_host: unix:///run/pd-hosts/self/docker.sock
      db_service: ''
      version_pattern: '^[0-9a-z][0-9a-z.-]*$'
      health_timeout: 30
      converge_timeout: 60
      manager_compose_files: [docker-compose.proxy.yml]
      files:
        docker-compose.yml: {ROOT}/example/docker-compose.swarm.yml
        docker-compose.proxy.yml: {ROOT}/example/docker-compose.swarm-proxy.yml
        docker/etc/nginx/conf.d/pixel.conf: {ROOT}/example/docker/etc/nginx/swarm/pixel.conf
      server_env: {STATE / "swarm.env"}
"""


@pytest.fixture(scope="module")
def swarm(images, tmp_path_factory):
    require_multihost()
    assert script("down").returncode == 0
    result = script("up", "--hosts", "3", "--swarm")
    assert result.returncode == 0, result.stdout + result.stderr
    config = tmp_path_factory.mktemp("swarm") / "swarm.yaml"
    config.write_text(CONFIG)
    try:
        yield HostsEnvironment(config, ENV)
    finally:
        dockerd = STATE / "hosts/h3/docker/dockerd.pid"
        if dockerd.exists():  # a worker left stopped by a failed test
            os.kill(int(dockerd.read_text().split()[0]), signal.SIGCONT)
        if not os.environ.get("PD_KEEP_HOSTS"):  # PD_KEEP_HOSTS=1: left up to look at
            script("down")


def docker(*args: str) -> str:
    out = subprocess.run(
        ["docker", "-H", "unix:///run/pd-hosts/h1/docker.sock", *args], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def web_tasks() -> list[tuple[str, str]]:
    """(node, version) of every web task swarm wants running and that runs."""
    lines = docker(
        "service",
        "ps",
        f"{STACK}_web",
        "--filter",
        "desired-state=running",
        "--format",
        "{{.Node}} {{.Image}} {{.CurrentState}}",
    ).splitlines()
    return [
        (node, image.split("@")[0].rsplit(":", 1)[1])
        for node, image, state, *_ in (line.split() for line in lines)
        if state == "Running"
    ]


def served(timeout: float = 5) -> str | None:
    try:
        with urllib.request.urlopen(LB, timeout=timeout) as response:
            match = re.search(r"Pixel version (\S+?)<", response.read().decode())
            return match.group(1) if match else None
    except OSError:
        return None


def server_version() -> str:
    text = (STATE / f"hosts/h1/fs/srv-pushdeploy/{STACK}/.env").read_text()
    return re.search(r"^VERSION=(\S*)", text, re.M).group(1)


def last_history() -> dict:
    return json.loads((STATE / f"hosts/h1/fs/var-lib-pushdeploy/{ENV}/history.jsonl").read_text().splitlines()[-1])


def updated_at() -> str:
    return docker(
        "service", "inspect", "-f", "{{.UpdatedAt}} {{.Spec.TaskTemplate.ContainerSpec.Image}}", f"{STACK}_web"
    )


def test_setup_checks_the_manager_and_a_first_deploy_spreads_over_the_nodes(swarm, tmp_path):
    on_worker = tmp_path / "worker.yaml"
    on_worker.write_text(CONFIG.replace(f"pd-deploy@{MANAGER}", "pd-deploy@10.213.0.12"))
    refused = inv("-f", str(on_worker), "server.setup", "--env", ENV, DEPLOY_DOTENV=str(STATE / "deploy.env"))
    assert refused.returncode != 0 and "not a swarm manager (it is: worker)" in refused.stdout + refused.stderr

    result = swarm.inv("server.setup", "--env", ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "this node is a manager; the stack file is valid" in result.stdout

    result = swarm.deploy(V1)
    assert result.returncode == 0, result.stdout + result.stderr
    tasks = web_tasks()
    assert [version for _, version in tasks] == [V1] * 3
    assert {node for node, _ in tasks} == {"h1", "h2", "h3"}  # spread over every node
    assert served() == V1 and server_version() == V1
    status = swarm.inv("deploy.status", "--env", ENV)
    assert status.returncode == 0
    assert re.search(rf"{STACK}_web\s+replicated\s+3/3", status.stdout) and "h3" in status.stdout


def test_a_rolling_deploy_under_load_loses_no_request(swarm):
    assert served() == V1
    argv = [sys.executable, "-m", "invoke", "-f", str(swarm.config), "deploy.to", "--env", ENV, "--tag", V2]
    with OpenLoad(LB, rate=RATE, seconds=240) as load:
        time.sleep(1)
        result = subprocess.run(
            argv,
            cwd=ROOT,
            env=tool_env(DEPLOY_DOTENV=str(STATE / "deploy.env")),
            capture_output=True,
            text=True,
            timeout=200,
        )
        time.sleep(1.5)
        load.ran = load.now()
    print(result.stdout + result.stderr)
    assert result.returncode == 0
    summary = load.summary(budget=BUDGET)
    print(summary.line())
    assert summary.failed == 0, summary.failures
    assert summary.slow == 0, [
        (round(s.scheduled, 2), round(s.latency, 3)) for s in load.samples if s.finished and s.latency > BUDGET
    ][:10]
    assert summary.sent >= RATE * load.ran * 0.9
    assert set(summary.versions) == {V1, V2}
    tasks = web_tasks()
    assert [version for _, version in tasks] == [V2] * 3 and len({node for node, _ in tasks}) >= 2
    assert [s["name"] for s in last_history()["steps"]] == [
        "preflight",
        "pull",
        "migrate",
        "proxy",
        "deploy",
        "converge",
    ]


def test_a_release_failing_its_health_check_rolls_the_whole_stack_back(swarm):
    assert server_version() == V2
    result = swarm.deploy(BAD_HEALTH, "--force")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "rolling the whole stack back to 1.1.0" in result.stdout
    assert f"runs {V2} again on every node" in result.stdout
    entry = last_history()
    assert (entry["outcome"], entry["failed_step"]) == ("failed", "converge")
    assert [version for _, version in web_tasks()] == [V2] * 3
    assert served() == V2 and server_version() == V2


def test_a_failing_migration_changes_nothing(swarm):
    before = updated_at()
    result = swarm.deploy(BAD_MIGRATION, "--force")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no service was changed" in result.stdout
    entry = last_history()
    assert (entry["outcome"], entry["failed_step"]) == ("failed", "migrate")
    assert updated_at() == before  # the stack was never deployed
    assert served() == V2 and server_version() == V2


def backup_config(tmp_path: Path) -> Path:
    """The stack's settings with backup: true, from a one-off container of the sandbox's postgres image."""
    config = tmp_path / "backup.yaml"
    config.write_text(
        CONFIG.replace(
            "      db_service: ''\n",
            "      db_service: ''\n      backup: true\n      backup_image: 127.0.0.1:5000/pushdeploy/postgres:15\n",
        )
    )
    return config


def test_plan_backup_maintenance_and_rollback_work_as_for_compose(swarm, tmp_path):
    """With backup: true (pg_dump of the shared database from a one-off container of
    backup_image on the stack's network) and --maintenance: `deploy.plan` lists the
    steps the deploy then runs and the migrations (none), a client whose connection drops
    reattaches to the detached run, the backup is a real pg_dump archive, the proxy
    answers 503 during the maintenance window and serves after it, and
    `deploy.rollback` takes the whole stack back."""
    assert server_version() == V2
    config = backup_config(tmp_path)
    try:
        assert swarm.inv("server.setup", "--env", ENV, config=config).returncode == 0
        plan = swarm.inv("deploy.plan", "--env", ENV, "--tag", V1, "--maintenance", "--force", config=config)
        assert plan.returncode == 0, plan.stdout + plan.stderr
        steps = re.search(r"\| steps:\s+(.*)$", plan.stdout, re.M).group(1).split(" > ")
        assert re.search(r"\| migrations:\s+none to apply", plan.stdout), plan.stdout
        backups = STATE / f"hosts/h1/fs/var-lib-pushdeploy/{ENV}/backups"
        known = set(backups.glob("*.dump")) if backups.exists() else set()

        with OpenLoad(LB, rate=10, seconds=240) as load:
            client = swarm.popen("deploy.to", "--env", ENV, "--tag", V1, "--maintenance", "--force", config=config)
            assert client.stdout is not None
            lines = []
            for line in client.stdout:
                lines.append(line)
                if "==> migrate" in line and not any("reattaching" in seen for seen in lines):
                    # The network drops once: the client reattaches to the detached run
                    # (and sees its log from the start again).
                    subprocess.run(["pkill", "-f", "^sshd: pd-deploy"], check=False)
            client.wait(timeout=200)
            time.sleep(1.5)  # the load goes on after the deploy: a request sent before maintenance-off is not the last
        output = "".join(lines)
        statuses = [sample.status for sample in load.samples if sample.finished]
        assert client.returncode == 0, output
        assert "reattaching" in output and f"deployed {V1} to {ENV}" in output
        assert (
            [s["name"] for s in last_history()["steps"]]
            == steps
            == [
                "preflight",
                "pull",
                "backup",
                "maintenance-on",
                "migrate",
                "proxy",
                "deploy",
                "converge",
                "maintenance-off",
            ]
        )
        [dump] = set(backups.glob("*.dump")) - known
        assert dump.name.endswith(f"-{V2}.dump") and dump.read_bytes()[:5] == b"PGDMP"  # pg_dump's custom format
        assert 503 in statuses and statuses[-1] == 200  # the maintenance page, then the site again
        assert served() == V1 and server_version() == V1

        back = swarm.inv("deploy.rollback", "--env", ENV, config=config)
        assert back.returncode == 0, back.stdout + back.stderr
        entry = last_history()
        assert (entry["kind"], entry["version"], entry["outcome"]) == ("rollback", V2, "ok")
        assert [version for _, version in web_tasks()] == [V2] * 3
        assert served() == V2 and server_version() == V2
        listed = swarm.inv("db.backups", "--env", ENV, config=config)
        assert listed.returncode == 0 and dump.name in listed.stdout
    finally:
        assert swarm.inv("server.setup", "--env", ENV).returncode == 0


def test_a_rollback_unapplies_migrations_or_restores_the_backup_as_for_compose(swarm, tmp_path):
    """Issue 18 on swarm, the shared database: a rollback past 1.4.0-column unapplies its
    migrations in a one-off container of 1.4.0-column on the stack's network before the stack
    goes back; past 1.5.0-irreversible it is refused, and --restore-db restores the backup
    that deploy took (from a one-off container of backup_image) in maintenance mode: the row
    written before it is there, the one written after is gone, so is the migration."""
    column = (
        "select count(*) from information_schema.columns where table_name = 'notes_visit' and column_name = 'agent'"
    )
    applied = "select count(*) from django_migrations where name = '0002_irreversible'"
    assert server_version() == V2
    config = backup_config(tmp_path)
    try:
        assert swarm.inv("server.setup", "--env", ENV, config=config).returncode == 0
        deployed = swarm.inv("deploy.to", "--env", ENV, "--tag", "1.4.0-column", "--force", config=config)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        assert db_psql(column) == "1"
        back = swarm.inv("deploy.rollback", "--env", ENV, config=config)
        assert back.returncode == 0, back.stdout + back.stderr
        assert "--- migrations to unapply: notes.0002_visit_agent" in back.stdout
        entry = last_history()
        assert (entry["kind"], entry["version"], entry["unapplied"]) == ("rollback", V2, "notes.0002_visit_agent")
        names = [s["name"] for s in entry["steps"]]
        assert names.index("unmigrate") < names.index("deploy")
        assert db_psql(column) == "0" and served() == V2
        assert [version for _, version in web_tasks()] == [V2] * 3

        db_psql("insert into notes_visit (created_at, path) values (now(), 'restore:kept')")
        deployed = swarm.inv("deploy.to", "--env", ENV, "--tag", "1.5.0-irreversible", "--force", config=config)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        db_psql("insert into notes_visit (created_at, path) values (now(), 'restore:lost')")
        refused = swarm.inv("deploy.rollback", "--env", ENV, config=config)
        assert refused.returncode == 1 and "cannot be unapplied (no reverse operation)" in refused.stdout
        assert server_version() == "1.5.0-irreversible" and db_psql(applied) == "1"
        back = swarm.inv("deploy.rollback", "--env", ENV, "--restore-db", config=config)
        assert back.returncode == 0, back.stdout + back.stderr
        assert "restoring the database: the database goes back to " in back.stdout
        entry = last_history()
        assert (entry["kind"], entry["version"]) == ("rollback", V2) and entry["restored"].endswith(f"-{V2}.dump")
        names = [s["name"] for s in entry["steps"]]
        assert names.index("maintenance-on") < names.index("restore") < names.index("deploy")
        assert db_psql(applied) == "0"
        assert db_psql("select count(*) from notes_visit where path = 'restore:kept'") == "1"
        assert db_psql("select count(*) from notes_visit where path = 'restore:lost'") == "0"
        assert served() == V2 and [version for _, version in web_tasks()] == [V2] * 3
    finally:
        db_psql("delete from django_migrations where name in ('0002_irreversible', '0002_visit_agent')")
        db_psql("alter table notes_visit drop column if exists agent")
        db_psql("delete from notes_visit where path like 'restore:%'")
        assert swarm.inv("server.setup", "--env", ENV).returncode == 0


RECEIVER = """
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with open(sys.argv[2], "ab") as out:
            out.write(body + b"\\n")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def test_hooks_and_webhooks_run_for_a_swarm_deploy_and_rollback_as_for_compose(swarm, tmp_path):
    """One pipeline for every engine: a swarm deploy runs the before_switch and after_switch
    hooks (one-off containers of the new image on the stack's network) and tells the
    webhooks it started and how it finished, and so does its rollback. The webhook
    receiver listens on the manager's own loopback (inside h1's network namespace)."""
    assert server_version() == V2
    port, received = 8765, tmp_path / "received.jsonl"
    receiver = subprocess.Popen(
        ["nsenter", "--net=/run/netns/pd-h1", sys.executable, "-c", RECEIVER, str(port), str(received)]
    )
    config = tmp_path / "hooks.yaml"
    config.write_text(
        CONFIG.replace(
            "      db_service: ''\n",
            "      db_service: ''\n      before_switch: [check]\n      after_switch: ['showmigrations notes']\n",
        )
    )
    hooks = {"DEPLOY_SWARM_WEBHOOKS": f"json=http://127.0.0.1:{port}/ok"}
    try:
        setup = inv("-f", str(config), "server.setup", "--env", ENV, DEPLOY_DOTENV=str(STATE / "deploy.env"), **hooks)
        assert setup.returncode == 0, setup.stdout + setup.stderr
        deployed = swarm.inv("deploy.to", "--env", ENV, "--tag", V1, "--force", config=config)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        steps = [s["name"] for s in last_history()["steps"]]
        assert steps == ["preflight", "pull", "migrate", "hooks-before", "proxy", "deploy", "converge", "hooks-after"]
        assert "--- manage.py check" in deployed.stdout and "--- manage.py showmigrations notes" in deployed.stdout
        back = swarm.inv("deploy.rollback", "--env", ENV, "--to", V2, config=config)
        assert back.returncode == 0, back.stdout + back.stderr
        assert [s["name"] for s in last_history()["steps"]][-1] == "hooks-after"
        deadline, seen = time.monotonic() + 30, []
        while time.monotonic() < deadline and len(seen) < 4:
            seen = [json.loads(line) for line in received.read_text().splitlines()] if received.exists() else []
            time.sleep(0.2)
        assert [(body["event"], body["kind"], body["version"]) for body in seen] == [
            ("started", "deploy", V1),
            ("succeeded", "deploy", V1),
            ("started", "rollback", V2),
            ("rolled_back", "rollback", V2),
        ], seen
        assert served() == V2 and server_version() == V2
    finally:
        receiver.kill()
        receiver.wait()
        assert swarm.inv("server.setup", "--env", ENV).returncode == 0


def test_a_worker_stopped_mid_deploy_is_reported_and_the_deploy_ends_in_a_defined_state(swarm):
    pid = int((STATE / "hosts/h3/docker/dockerd.pid").read_text().split()[0])
    argv = [sys.executable, "-m", "invoke", "-f", str(swarm.config), "deploy.to", "--env", ENV, "--tag", V3]
    client = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=tool_env(DEPLOY_DOTENV=str(STATE / "deploy.env")),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert client.stdout is not None
        lines = []
        for line in client.stdout:
            lines.append(line)
            if "==> deploy" in line:
                os.kill(pid, signal.SIGSTOP)  # h3's dockerd stops answering the manager
        client.wait(timeout=200)
    finally:
        os.kill(pid, signal.SIGCONT)
    output = "".join(lines)
    print(output)
    assert "node h3 is DOWN" in output
    entry = last_history()
    if client.returncode == 0:  # the tasks run on the nodes that answer; swarm finishes h3 when it is back
        assert entry["outcome"] == "ok" and server_version() == V3
        assert {version for node, version in web_tasks() if node != "h3"} == {V3}
    else:  # or the whole stack went back
        assert client.returncode == 1 and entry["outcome"] == "failed" and server_version() == V2
        assert f"runs {V2} again on every node" in output
    # Once h3 answers again (its dockerd re-registers with the manager, which can take
    # a while: one run here still had a task of the undone version being shut down
    # after 90 s), what the proxy serves settles on what .env says.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and {served() for _ in range(6)} != {server_version()}:
        time.sleep(1)
    seen = {served() for _ in range(6)}
    if seen != {server_version()}:
        # Swarm did not settle: in this sandbox a dockerd resumed after SIGSTOP can keep
        # reporting the tasks swarm told it to stop as running (2 runs in 5 here). Not the
        # deploy's doing, but the user must be told: deploy.status names what still runs.
        update = "{{json .UpdateStatus}} spec={{.Spec.TaskTemplate.ContainerSpec.Image}} previous={{with .PreviousSpec}}{{.TaskTemplate.ContainerSpec.Image}}{{end}}"
        print(
            docker("service", "ps", f"{STACK}_web") + docker("service", "inspect", "--format", update, f"{STACK}_web")
        )
        status = swarm.inv("deploy.status", "--env", ENV)
        print(status.stdout)
        if "tasks swarm asked to stop still run" not in status.stdout:  # it settled meanwhile
            assert {served() for _ in range(6)} == {server_version()}, status.stdout
            return
        warned = status.stdout.split("tasks swarm asked to stop still run", 1)[1].split("nodes:", 1)[0]
        assert all(f":{version}" in warned for version in seen - {server_version(), None}), (seen, warned)


def test_a_cron_job_runs_on_the_stack_network_on_the_deployed_version(swarm, tmp_path):
    """Issue 17, part 3 on swarm: a job runs on the manager in a one-off container of the
    deployed version on the stack's network, where it reaches the database as the web tasks
    do (showmigrations reads it), named for the job, recorded there."""
    config = tmp_path / "cron.yaml"
    config.write_text(
        CONFIG + "      cron: {migrations: {schedule: '*/30 * * * *', command: 'showmigrations --list'}}\n"
    )
    setup = swarm.inv("server.setup", "--env", ENV, config=config)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    entry = STATE / f"hosts/h1/fs/cron.d/pushdeploy-cron-{ENV}"
    try:
        assert run_cron_entry("h1", ENV, "migrations").returncode == 0
        folder = STATE / f"hosts/h1/fs/var-lib-pushdeploy/{ENV}/cron"
        record = json.loads((folder / "runs.jsonl").read_text().splitlines()[-1])
        assert (record["job"], record["result"], record["version"]) == ("migrations", "ok", server_version())
        log = (folder / "migrations.log").read_text()
        assert "[X] 0001_initial" in log  # it read the database, which only the stack network reaches
    finally:
        restored = swarm.inv("server.setup", "--env", ENV)
        assert restored.returncode == 0, restored.stdout + restored.stderr
    assert not entry.exists()


def service_tasks(service: str) -> list[str]:
    """The versions of SERVICE's tasks that swarm wants running and that run."""
    lines = docker(
        "service",
        "ps",
        f"{STACK}_{service}",
        "--filter",
        "desired-state=running",
        "--format",
        "{{.Image}} {{.CurrentState}}",
    ).splitlines()
    return [image.split("@")[0].rsplit(":", 1)[1] for image, state, *_ in map(str.split, lines) if state == "Running"]


# One rerun, kept while the fix below has few runs behind it: when both workers were quiesced at
# once, 3 runs of 19 lost the job sent as the quiesce went out (docs/roles.md, "Why one worker at
# a time"); quiesced one at a time, 2 s apart, none of 14 lost one.
@pytest.mark.flaky(reruns=1)
def test_worker_and_scheduler_roles_in_the_stack_lose_no_job_and_never_run_two_schedulers(swarm, tmp_path):
    """Issue 17 on swarm: Celery workers (two tasks) and one beat in the stack
    (example/docker-compose.swarm-jobs.yml), Redis beside them. Jobs enqueued through the load
    balancer at a fixed rate, with open-loop page load, across a deploy: the old workers are
    quiesced first (a one-off container asks each task in turn), swarm replaces them start-first and
    beat stop-first; every job ran exactly once, never two beat tasks at once, no page lost."""
    server_env = tmp_path / "jobs.env"
    server_env.write_text((STATE / "swarm.env").read_text() + jobs.SERVER_ENV)
    server_env.chmod(0o600)
    config = tmp_path / "jobs.yaml"
    config.write_text(
        CONFIG.replace(str(STATE / "swarm.env"), str(server_env)).replace(
            "      files:\n",
            "      compose_files: [docker-compose.yml, docker-compose.jobs.yml]\n"
            f"      roles: {jobs.ROLES}\n"
            "      files:\n"
            f"        docker-compose.jobs.yml: {ROOT}/example/docker-compose.swarm-jobs.yml\n",
        )
    )
    before = server_version()
    after = V3 if before != V3 else V2
    try:
        setup = swarm.inv("server.setup", "--env", ENV, config=config)
        assert setup.returncode == 0, setup.stdout + setup.stderr
        first = swarm.deploy(before, "--force", config=config)
        assert first.returncode == 0, first.stdout + first.stderr
        assert service_tasks("worker") == [before] * 2 and service_tasks("beat") == [before]
        plan = swarm.inv("deploy.plan", "--env", ENV, "--tag", after, config=config)
        assert "beat (scheduler): swarm's update replaces it with web, stop-first" in plan.stdout, plan.stdout
        key = jobs.unique("swarm")
        enqueue = jobs.enqueue(LB, key)
        beats = jobs.Most(lambda: len(service_tasks("beat")))
        with enqueue, beats, OpenLoad(LB, rate=RATE, seconds=300) as load:
            time.sleep(2)
            deployed = [enqueue.now()]
            result = swarm.deploy(after, config=config)
            deployed.append(enqueue.now())
            time.sleep(3)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "worker: 2 task(s) told to take no more jobs" in result.stdout
        summary = load.summary(budget=BUDGET)
        print(summary.line())
        assert summary.failed == 0 and summary.slow == 0, summary.failures
        assert service_tasks("worker") == [after] * 2 and service_tasks("beat") == [after]
        queued = jobs.accepted(enqueue)
        assert queued and len(queued) == len([s for s in enqueue.samples if s.finished])
        try:
            jobs.assert_each_ran_once(queued, key, db_psql)
        except AssertionError as lost:
            try:
                explain_lost_jobs(lost, enqueue, deployed)
            except Exception as error:  # the loss is the failure to report, not this
                print(f"(could not say more of the lost jobs: {error!r})")
            raise
        assert beats.samples and beats.most == 1
    finally:
        for name in ("worker", "beat", "redis"):
            docker("service", "rm", f"{STACK}_{name}")
        restored = swarm.inv("server.setup", "--env", ENV)
        assert restored.returncode == 0, restored.stdout + restored.stderr


TLS_DIR = Path("/etc/pushdeploy-e2e-swarm-tls")  # on the machine: the manager sees it
LB_TLS, SITE = ("127.0.0.1", 8490), "pixel.test"  # the load balancer passes TCP to the manager's 443


def test_https_at_the_proxy_beside_the_stack_and_a_rolling_deploy_under_load_over_it(swarm, tmp_path):
    """Issue 17 part 4 on engine: swarm: the proxy outside the stack (manager_compose_files) serves
    tls: with the same lines and files as compose's; the first deploy after turning it on checks
    nginx's configuration, recreates the proxy with port 443, the next rolls the stack under
    open-loop HTTPS load through the load balancer (TCP to the manager's 443): 0 failed, 0 over 1 s."""
    testca.site_certificate(TLS_DIR, SITE)
    config = tmp_path / "tls.yaml"
    tls = f"{{certificate: {TLS_DIR / 'fullchain.pem'}, key: {TLS_DIR / 'privkey.pem'}, hsts: 600}}"
    config.write_text(CONFIG + f"      tls: {tls}\n")
    now = server_version()
    other = V1 if now != V1 else V2
    try:
        setup = swarm.inv("server.setup", "--env", ENV, config=config)
        assert setup.returncode == 0, setup.stdout + setup.stderr
        first = swarm.deploy(other, "--force", config=config)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "tls: proxy accepts its configuration with HTTPS (nginx -t)" in first.stdout, first.stdout
        context = ssl.create_default_context(cafile=str(TLS_DIR / "ca.crt"))
        url = f"https://{LB_TLS[0]}:{LB_TLS[1]}/"
        with OpenLoad(url, rate=RATE, seconds=240, context=context, server_name=SITE) as load:
            time.sleep(1)
            rolled = swarm.deploy(now, "--force", config=config)
            time.sleep(1.5)
            load.ran = load.now()
        assert rolled.returncode == 0, rolled.stdout + rolled.stderr
        summary = load.summary(budget=BUDGET)
        print(summary.line())
        assert summary.failed == 0 and summary.slow == 0, summary.failures
        assert summary.sent >= RATE * load.ran * 0.9 and set(summary.versions) == {other, now}
        check = swarm.inv("server.check", "--env", ENV, config=config)
        assert f"https: certificate from {TLS_DIR / 'fullchain.pem'}, ends " in check.stdout, check.stdout
    finally:
        restored = swarm.inv("server.setup", "--env", ENV)  # plain HTTP again, from the next deploy
        assert restored.returncode == 0, restored.stdout + restored.stderr
        plain = swarm.deploy(server_version(), "--force")
        assert plain.returncode == 0, plain.stdout + plain.stderr
        assert served() == server_version()
        shutil.rmtree(TLS_DIR, ignore_errors=True)


def test_teardown_removes_the_stack_from_every_node_and_the_environment_from_the_manager(swarm):
    """Last in this file: server.teardown of a swarm environment stops the stack (its tasks
    on every node), the proxy beside it on the manager, its volumes there, and the
    environment's files, settings and state; with no environment left on the manager, the
    deploy account's sudo rule goes, the admin's own stays."""
    h1 = STATE / "hosts/h1/fs"
    assert (h1 / "sudoers.d/pushdeploy-pd-deploy").exists()
    removed = swarm.inv("server.teardown", "--env", ENV, "--volumes", "--yes")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert f"stack {STACK}" in removed.stdout and "no environment is left on this host" in removed.stdout
    label = f"label=com.docker.stack.namespace={STACK}"
    assert docker("service", "ls", "-q", "--filter", label).strip() == ""
    assert docker("volume", "ls", "-q", "--filter", label).strip() == ""
    deadline = time.monotonic() + 90
    running = ["?"]
    while running and time.monotonic() < deadline:  # swarm stops the workers' tasks on its own time
        running = [
            host
            for host in ("h1", "h2", "h3")
            if subprocess.run(
                ["docker", "-H", f"unix:///run/pd-hosts/{host}/docker.sock", "ps", "-q", "--filter", label],
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout.strip()
        ]
        time.sleep(1)
    assert running == []
    assert not (h1 / f"srv-pushdeploy/{STACK}").exists()
    assert not (h1 / f"etc-pushdeploy/{ENV}.conf").exists()
    assert not (h1 / f"var-lib-pushdeploy/{ENV}").exists()
    assert not (h1 / "sudoers.d/pushdeploy-pd-deploy").exists()
    assert (h1 / "sudoers.d/pushdeploy-hosts-admin").exists()
    assert served(timeout=2) is None  # nothing serves behind the load balancer


def test_a_stack_from_a_private_registry_reaches_workers_that_never_logged_in(swarm, tmp_path):
    """Issue 16, part 2 on swarm: the environment made again with its images in the sandbox's
    private registry (a password, TLS from its own CA). server.setup logs the manager in; the
    workers trust the CA (as the nodes of a real swarm must) but hold no login: the deploy
    passes the manager's (--with-registry-auth), so every node runs the private image."""
    registry = registry_env()
    server = registry["PD_HOSTS_REGISTRY"]
    push_private(registry, V1)
    for worker in ("h2", "h3"):
        trusted = STATE / f"hosts/{worker}/fs/docker-certs/{server}/ca.crt"
        trusted.parent.mkdir(parents=True, exist_ok=True)
        trusted.write_bytes(Path(registry["PD_HOSTS_REGISTRY_CA"]).read_bytes())
    private_env = tmp_path / "swarm.env"
    private_env.write_text(
        (STATE / "swarm.env").read_text().replace("IMAGE=127.0.0.1:5000/pixel", f"IMAGE={server}/pixel")
    )
    config = tmp_path / "private.yaml"
    config.write_text(
        CONFIG.replace(str(STATE / "swarm.env"), str(private_env))
        + f"      registry: {{server: '{server}', user: {registry['PD_HOSTS_REGISTRY_USER']}, "
        + f"ca: {registry['PD_HOSTS_REGISTRY_CA']}}}\n"
    )
    if (STATE / f"hosts/h1/fs/etc-pushdeploy/{ENV}.conf").exists():  # this test alone: from nothing
        assert swarm.inv("server.teardown", "--env", ENV, "--volumes", "--yes").returncode == 0
    setup = swarm.inv(
        "server.setup", "--env", ENV, config=config, DEPLOY_REGISTRY_PASSWORD=registry["DEPLOY_REGISTRY_PASSWORD"]
    )
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert registry["DEPLOY_REGISTRY_PASSWORD"] not in setup.stdout + setup.stderr
    assert not (STATE / f"hosts/h2/fs/etc-pushdeploy/{ENV}.docker").exists()  # the workers hold no login
    result = swarm.deploy(V1, config=config)
    assert result.returncode == 0, result.stdout + result.stderr
    tasks = web_tasks()
    assert [version for _, version in tasks] == [V1] * 3 and {node for node, _ in tasks} == {"h1", "h2", "h3"}
    images = docker("service", "inspect", "-f", "{{.Spec.TaskTemplate.ContainerSpec.Image}}", f"{STACK}_web")
    assert images.startswith(f"{server}/pixel:{V1}@sha256:")
    assert served() == V1


def explain_lost_jobs(lost: AssertionError, enqueue: OpenLoad, deployed: list) -> None:
    """What is known of the jobs jobs.assert_each_ran_once found lost: when each was sent (on the
    enqueue load's clock, beside the deploy's), what the workers logged besides the jobs that
    ran, what Redis holds, and the task ids the web gave them with what the workers said of those."""
    keys = [name for name in lost.args[0][0] if isinstance(name, str)] if lost.args else []
    indexes = {int(name.rsplit("-", 1)[1]) for name in keys}
    for sample in enqueue.samples:
        if sample.index in indexes:
            print(
                f"lost job {sample.index}: sent at {sample.started:.2f}s, {sample.status} at {sample.finished:.2f}s; "
                f"the deploy ran from {deployed[0]:.2f}s to {deployed[-1]:.2f}s"
            )

    def service_logs(service: str) -> list:
        out = subprocess.run(
            ["docker", "-H", "unix:///run/pd-hosts/h1/docker.sock", "service", "logs", "--timestamps"]
            + ["--since", "15m", f"{STACK}_{service}"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        return (out.stdout + out.stderr).splitlines()

    workers = service_logs("worker")
    routine = (" starts on ", "succeeded in", "] received")
    print(
        "the workers, but for the jobs that ran:\n"
        + "\n".join(line for line in workers if not any(r in line for r in routine))
    )
    node = docker("service", "ps", f"{STACK}_redis", "--filter", "desired-state=running", "--format", "{{.Node}}")
    for host in node.split()[:1]:
        redis = ["docker", "-H", f"unix:///run/pd-hosts/{host}/docker.sock"]
        held = subprocess.run(
            [*redis, "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={STACK}_redis"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.split()
        script = "for k in $(redis-cli --scan); do echo $k $(redis-cli type $k) $(redis-cli llen $k 2>/dev/null)" + (
            " $(redis-cli hlen $k 2>/dev/null); done; redis-cli hgetall unacked | cut -c1-400"
        )
        answer = subprocess.run(
            [*redis, "exec", *held[:1], "sh", "-c", script], capture_output=True, text=True, timeout=60
        )
        print(f"redis holds:\n{(answer.stdout + answer.stderr)[:6000]}")
    named = [line for line in service_logs("web") if any(f"job {name} queued" in line for name in keys)]
    tasks = [line.rsplit(" ", 1)[-1] for line in named]
    print("the web queued them:\n" + "\n".join(named))
    print("the workers of those tasks:\n" + "\n".join(line for line in workers if any(t in line for t in tasks)))
