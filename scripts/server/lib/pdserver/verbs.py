"""The verbs bin/deploy answers in Python. The others still run in lib/deploy.sh
(bash): a handler that returns HAND_OVER (or a verb without one) goes there, checked.
Each verb's output is what the bash verb printed, line for line."""

from __future__ import annotations

import collections
import os
import sys
import time

from . import compose, expect, facts, order, run
from . import env as envs
from .expect import HOME, server_hash
from .lock import Lock
from .request import Refused, Request, changes_django_setup

HAND_OVER = object()
LIB = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _load(request: Request) -> envs.Env:
    env = envs.load(request.env)
    expect.check(str(request.option("expect", "")), env.conf_path, env.name)
    return env


def version(request: Request) -> int:
    print(server_hash(HOME))
    return 0


def history(request: Request) -> int:
    env = _load(request)
    try:
        with open(env.history, errors="replace") as file:
            lines = collections.deque(file, maxlen=int(request.option("limit", 20)))
    except FileNotFoundError:
        return 0
    sys.stdout.writelines(lines)
    return 0


def backups(request: Request) -> int:
    env = _load(request)
    folder = os.path.join(env.state_dir, "backups")
    if not os.path.isdir(folder):
        print(f"no backups of {env.name} yet")
        return 0
    lines = []
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name.endswith(".dump"):
            info = os.stat(path)
            lines.append(
                f"{time.strftime('%Y-%m-%dT%H:%M', time.localtime(info.st_mtime))}  {info.st_size:10d} bytes  {path}\n"
            )
    sys.stdout.writelines(sorted(lines, key=lambda line: line.encode(), reverse=True))
    return 0


def logs(request: Request) -> int:
    env = _load(request)
    latest = _latest_log(env.runs_dir)
    if latest is None:
        raise Refused(f"no deploy has run in {env.name} yet", 1)
    if request.option("follow"):
        follow_run(env, latest[: -len(".log")])  # the run's own outcome is in its log: logs itself succeeded
        return 0
    with open(os.path.join(env.runs_dir, latest), "rb") as file:
        _copy(file)
    return 0


def _latest_log(runs_dir: str):
    try:
        names = [name for name in os.listdir(runs_dir) if name.endswith(".log")]
    except FileNotFoundError:
        return None
    return max(names, key=lambda name: os.stat(os.path.join(runs_dir, name)).st_mtime, default=None)


def _copy(file) -> None:
    while True:
        chunk = file.read(65536)
        if not chunk:
            break
        sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie, ended but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _read(path: str) -> str:
    try:
        with open(path, errors="replace") as file:
            return file.read().strip()
    except FileNotFoundError:
        return ""


def follow_run(env: envs.Env, run_id: str) -> int:
    """The run's log as it grows, until its process ends; then its exit status."""
    base = os.path.join(env.runs_dir, run_id)
    pid = _read(base + ".pid")
    with open(base + ".log", "rb") as file:
        _copy(file)
        while pid.isdigit() and _alive(int(pid)):
            time.sleep(0.1)
            _copy(file)
        _copy(file)
    status = _read(base + ".status")
    if not status.isdigit():
        raise Refused(f"the deploy process {run_id} ended without a result: see `inv deploy.logs --env {env.name}`", 1)
    return int(status)


def status(request: Request):
    env = _load(request)
    print(f"version: {envs.current_version(env)}")
    holder = Lock(env.state_dir).busy() if os.path.isdir(env.state_dir) else None
    print(f"deploy in progress: {holder.split(' ', 1)[-1] if holder else 'no'}")
    print(f"last deploy: {last_deploy(env.history)}")
    if not holder and dead_runs(env.runs_dir):
        print(
            "warning: a deploy ended without a result (its process was killed): the next deploy records it and cleans up after it"
        )
    if env["ENGINE"] == "swarm":
        swarm_status(env)
        return 0
    if env["SWITCH"] != "recreate":
        first, second = facts.SLOTS[0], facts.SLOTS[-1]
        live = second if os.path.exists(os.path.join(env.app_dir, facts.ROUTING_DIR, second)) else first
        print(f"live slot: {env['WEB_SERVICE']}-{live}")
    print("services:")
    sys.stdout.flush()
    # By compose's labels with the docker CLI: a tenth of the CPU of `compose ps`.
    _, table = run.output(
        [
            "docker",
            "ps",
            "--filter",
            f"label=com.docker.compose.project={env['PROJECT']}",
            "--filter",
            "label=com.docker.compose.oneoff=False",
            "--format",
            "table {{.Names}}\t{{.Image}}\t{{.Status}}\t{{.Ports}}",
        ],
        env=_docker_environ(env),
    )
    for line in table.splitlines():
        print(f"  {line}")
    return 0


def _indented(argv, env: envs.Env, strip_digest: bool = False) -> None:
    """A docker command's output (and errors), each line indented under its heading."""
    import re

    for line in run.output(argv, env=_docker_environ(env))[1].splitlines():
        print("  " + (re.sub(r"@sha256:[0-9a-f]+", "", line, count=1) if strip_digest else line))


def swarm_status(env: envs.Env) -> None:
    """The stack's services, running tasks, tasks asked to stop that still run, nodes."""
    import re

    project, docker = env["PROJECT"], _docker_environ(env)
    print(f"swarm: this node is a {swarm_role(env)}")
    print("services:")
    services = "table {{.Name}}\t{{.Mode}}\t{{.Replicas}}\t{{.Image}}"
    _indented(
        ["docker", "service", "ls", "--filter", f"label=com.docker.stack.namespace={project}", "--format", services],
        env,
        True,
    )
    print("tasks:")
    tasks = "table {{.Name}}\t{{.Node}}\t{{.CurrentState}}\t{{.Error}}"
    _indented(["docker", "stack", "ps", project, "--filter", "desired-state=running", "--format", tasks], env)
    # Replaced tasks swarm asked to stop that still run (a node that came back after it
    # stopped answering may take a while, or need its dockerd restarted): maybe still served.
    stopping = []
    listing = "{{.Name}}\t{{.Node}}\t{{.Image}}\t{{.CurrentState}}"
    _, out = run.output(
        ["docker", "stack", "ps", project, "--filter", "desired-state=shutdown", "--format", listing],
        env=docker,
        stderr=False,
    )
    for line in out.splitlines():
        fields = (line.split("\t") + ["", "", "", ""])[:4]
        if fields[3].startswith("Running"):
            fields[2] = re.sub(r"@sha256:[0-9a-f]+", "", fields[2], count=1)
            stopping.append("  " + "\t".join(fields))
    if stopping:
        print(
            "warning: tasks swarm asked to stop still run, and may still be served (if it lasts, restart dockerd on their node):"
        )
        print("\n".join(stopping))
    print("nodes:")
    _indented(
        ["docker", "node", "ls", "--format", "table {{.Hostname}}\t{{.Status}}\t{{.Availability}}\t{{.ManagerStatus}}"],
        env,
    )
    if env["MANAGER_COMPOSE_FILES"]:
        print("outside the stack (on this node):")
        containers = "table {{.Names}}\t{{.Image}}\t{{.Status}}\t{{.Ports}}"
        _indented(
            ["docker", "ps", "--filter", f"label=com.docker.compose.project={project}", "--format", containers], env
        )


def _docker_environ(env: envs.Env) -> dict:
    environ = dict(os.environ)
    if env["DOCKER_HOST"]:
        environ["DOCKER_HOST"] = env["DOCKER_HOST"]
    return environ


def last_deploy(path: str) -> str:
    """The last record as one line: from HISTORY.last while it is current, else read."""
    try:
        history_time = os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return "none"
    try:
        if os.stat(path + ".last").st_mtime_ns >= history_time:
            line = _read(path + ".last").split("\n", 1)[0]
            if line:
                return line
    except FileNotFoundError:
        pass
    history_py = _lib_module("history")
    records = history_py.read(path)
    return history_py.one_line(records[-1]) if records else "none"


def _lib_module(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"pushdeploy_{name}", os.path.join(LIB, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dead_runs(runs_dir: str, own: str = "") -> list:
    """Runs with a request and no status (their process died without a result), but own."""
    try:
        names = os.listdir(runs_dir)
    except FileNotFoundError:
        return []
    return sorted(
        name[: -len(".request")]
        for name in names
        if name.endswith(".request")
        and name[: -len(".request")] != own
        and f"{name[: -len('.request')]}.status" not in names
    )


def maintenance(request: Request) -> int:
    env = _load(request)
    on = request.words[0] == "on"
    os.makedirs(env.runs_dir, exist_ok=True)
    lock = Lock(env.state_dir)
    holder = lock.take()
    if holder:
        raise Refused(
            f"busy: {holder.split(' ', 1)[-1]}; maintenance stays as it is: try again when it is done", facts.EXIT_BUSY
        )
    try:
        lock.name(
            f"maintenance-{os.getpid()}", f"maintenance {request.words[0]}", str(request.option("by", "")), now_iso()
        )
        folder = os.path.join(env.app_dir, "maintenance")
        os.makedirs(folder, exist_ok=True)
        os.chmod(folder, 0o755)
        flag = os.path.join(folder, "on")
        if on:
            with open(flag, "w") as file:
                file.write(now_iso() + "\n")
            os.chmod(flag, 0o644)
            print("maintenance mode on: the proxy answers 503")
        else:
            if os.path.exists(flag):
                os.remove(flag)
            print("maintenance mode off")
    finally:
        lock.release()
    return 0


SYSTEMD_DIR, CRON_DIR = "/etc/systemd/system", "/etc/cron.d"


def pull_agent_where(name: str, systemd_dir: str = SYSTEMD_DIR, cron_dir: str = CRON_DIR) -> str:
    """How the pull agent of NAME runs here: a systemd timer (and its state), a cron entry, or none."""
    unit = f"pushdeploy-pull-{name}"
    if os.path.isfile(os.path.join(systemd_dir, unit + ".timer")):
        _, state = run.output(["systemctl", "is-active", unit + ".timer"], stderr=False)
        return f"systemd timer {unit}.timer ({state.strip()})"
    if os.path.isfile(os.path.join(cron_dir, unit)):
        return f"cron {cron_dir}/{unit}"
    return "none"


def pull_status(request: Request) -> int:
    env = _load(request)
    where = pull_agent_where(env.name)
    channel = env["PULL_CHANNEL"]
    if not channel:
        print(f"mode: push (no pull channel in {env.name}'s settings)\nagent: {where}")
        return 0
    pull_py = _lib_module("pull")
    pairs = [
        "mode=pull",
        f"channel={channel}",
        f"every={env['PULL_EVERY']}s",
        f"agent={where}",
        f"version={envs.current_version(env)}",
    ]
    print("\n".join(pull_py.status(pull_py.read(os.path.join(env.state_dir, "pull", "checks.jsonl")), pairs)))
    return 0


def _first_line(argv, env: envs.Env) -> str:
    cwd = env.app_dir if os.path.isdir(env.app_dir) else "/"
    return (run.output(argv, env=_docker_environ(env), cwd=cwd)[1].splitlines() or [""])[0]


def _disk_free(path: str) -> str:
    rows = run.output(["df", "-Ph", path], stderr=False)[1].splitlines()
    return rows[1].split()[3] if len(rows) > 1 and len(rows[1].split()) > 3 else ""


def swarm_role(env: envs.Env) -> str:
    code, state = run.output(
        ["docker", "info", "-f", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"], env=_docker_environ(env)
    )
    state = state.rstrip("\n")
    if code != 0:
        return f"unreachable: {state}"
    return {"active true": "manager", "active false": "worker"}.get(state, state.split(" ", 1)[0])


def check(request: Request) -> int:
    """Facts for `inv server.check`, key=value lines."""
    env = _load(request)
    code, docker_root = run.output(
        ["docker", "info", "-f", "{{.DockerRootDir}}"], env=_docker_environ(env), stderr=False
    )
    print(f"server_side={server_hash(HOME)}")
    print(f"settings={expect.conf_hash(env.conf_path)}")
    print(f"version={envs.current_version(env)}")
    print(f"docker={_first_line(['docker', 'version', '-f', '{{.Server.Version}}'], env)}")
    print(f"compose={_first_line([*env['COMPOSE'].split(), 'version', '--short'], env)}")
    print(f"disk_free_app={_disk_free(env.app_dir)}")
    print(f"disk_free_docker={_disk_free(docker_root.strip() if code == 0 else '/')}")
    if env["ENGINE"] == "swarm":
        print(f"swarm={swarm_role(env)}")
    channel = env["PULL_CHANNEL"]
    mode = f"channel {channel} every {env['PULL_EVERY']}s, agent: " if channel else ""
    print(f"pull={mode}{pull_agent_where(env.name)}")
    return 0


def manage_refusal(env: envs.Env, name: str, args) -> str | None:
    """Why the allowlist (MANAGE_COMMAND lines: a name, then argument patterns) does not
    let NAME run with ARGS, or None."""
    import re

    if not facts.matches(facts.MANAGE_NAME_RE, name):
        return f"'{name}' is not a management command name"
    if name in facts.MANAGE_FORBIDDEN:
        return (
            f"`{name}` is not in {env.name}'s manage_commands and can never run through pushdeploy: it runs arbitrary"
            f" code or SQL, or reads or replaces data wholesale ({' '.join(facts.MANAGE_FORBIDDEN)} are refused)"
        )
    entries = [line.split() for line in env["MANAGE_COMMAND"]]
    patterns = next((entry[1:] for entry in entries if entry and entry[0] == name), None)
    if patterns is None:
        allowed = " ".join(entry[0] for entry in entries if entry) or "none"
        return f"`{name}` is not in {env.name}'s manage_commands (allowed: {allowed})"
    for word in args:
        if not facts.matches(facts.ARG_RE, word):
            return f"invalid argument '{word}'"
        if changes_django_setup(word):
            forbidden = " ".join(facts.MANAGE_FORBIDDEN_OPTIONS)
            return f"`{name}` does not accept the argument '{word}': {forbidden} (or a prefix of one) are never passed"
        if not any(re.fullmatch(f"(?:{pattern})", word) for pattern in patterns):
            return f"`{name}` does not accept the argument '{word}' (allowed: {' '.join(patterns)})"
    return None


def manage(request: Request) -> int:
    """One command of the allowlist in a one-off container of the deployed version: its
    output, its exit status. Never while a deploy changes the image or the database."""
    env = _load(request)
    name, args = request.words[0], request.words[1:]
    why = manage_refusal(env, name, args)
    if why:
        raise Refused(f"refused: {why}")
    version = envs.current_version(env)
    if not version:
        raise Refused(f"nothing is deployed in {env.name} yet: deploy first", 1)
    os.makedirs(env.runs_dir, exist_ok=True)
    lock = Lock(env.state_dir)
    holder = lock.take()
    if holder:
        raise Refused(f"busy: {holder.split(' ', 1)[-1]}; try again when it is done", facts.EXIT_BUSY)
    try:
        lock.name(f"manage-{os.getpid()}", f"manage {name}", str(request.option("by", "")), now_iso())
        print(
            f"pushdeploy: manage.py {' '.join(request.words)} in a one-off container of {version} ({env.name})",
            file=sys.stderr,
            flush=True,
        )
        return run.streamed(compose.manage(env, version, request.words))
    finally:
        lock.release()


def review_template(request: Request) -> envs.Env:
    """The template a review verb names (review-list: the template itself), checked."""
    import re

    env = envs.load(request.template or request.env)
    if env["REVIEW_TEMPLATE"] != "yes":
        raise Refused(
            f"'{env.name}' is not a review template on this server: only names the template allows"
            " (TEMPLATE-N of an environment with review_template: true) may be made"
        )
    valid = (
        re.fullmatch(r"[a-z0-9]([a-z0-9.-]{0,200}[a-z0-9])?", env["REVIEW_DOMAIN"])
        and re.fullmatch(r"[0-9]{1,3}", env["REVIEW_MAX"])
        and re.fullmatch(r"[0-9]{1,5}", env["REVIEW_PORT"])
    )
    if not valid:
        raise Refused(
            f"{env.conf_path}: REVIEW_DOMAIN, REVIEW_MAX or REVIEW_PORT is invalid: run `inv server.setup --env {env.name}`",
            1,
        )
    expect.check(str(request.option("expect", "")), env.conf_path, env.name)
    return env


def review_url(template: envs.Env, number: str) -> str:
    port = template["REVIEW_PORT"]
    return f"http://pr-{number}.{template['REVIEW_DOMAIN']}{'' if port == '80' else ':' + port}/"


def review_instances(template: str) -> list:
    """The live review environments of TEMPLATE (review-up marks each review.created)."""
    try:
        names = sorted(os.listdir(facts.STATE))
    except FileNotFoundError:
        return []
    return [
        name
        for name in names
        if name.startswith(template + "-")
        and facts.matches(facts.REVIEW_RE, name)
        and os.path.isfile(os.path.join(facts.STATE, name, "review.created"))
    ]


def review_list(request: Request) -> int:
    template = review_template(request)
    for name in review_instances(template.name):
        number = name.rsplit("-", 1)[1]
        instance = envs.Env(name, template.conf_path, dict(template.values, APP_DIR=f"{template.app_dir}-{number}"))
        created = _read(os.path.join(facts.STATE, name, "review.created"))
        fields = (
            name,
            envs.current_version(instance),
            created,
            last_deploy(instance.history),
            review_url(template, number),
        )
        print("\t".join(fields))
    return 0


def pinned(env: envs.Env, version: str) -> bool:
    """A version the pull agent pinned (CHANNEL-<digest prefix>): it has no place in any order."""
    import re

    channel = env["PULL_CHANNEL"]
    return bool(channel) and re.fullmatch(f"{re.escape(channel)}-[0-9a-f]{{{facts.PIN_HEX}}}", version) is not None


def check_version(env: envs.Env, version: str) -> None:
    import re

    pattern = env["VERSION_RE"]
    if pattern and not re.search(pattern, version) and not pinned(env, version):
        raise Refused(f"version '{version}' does not match {env.name}'s pattern {pattern}")


def order_refusal(env: envs.Env, version: str, build_order, force: bool) -> str | None:
    """Why a deploy of VERSION (at BUILD_ORDER) would be refused as older, or None."""
    if force:
        return None
    if env["ORDERING"] == "semver":
        current = envs.current_version(env)
        if current and current != "none" and not pinned(env, current) and order.version_lt(version, current):
            return f"{version} is older than the deployed {current}: use `inv deploy.rollback --env {env.name} --to {version}`, or --force"
    elif env["ORDERING"] == "build":
        last = _read(os.path.join(env.state_dir, "order"))
        if build_order is not None and last.isdigit() and build_order < int(last):
            return f"build {version} (order {build_order}) is older than the deployed build (order {last}): use `inv deploy.rollback`, or --force"
    return None


def deploy_steps(env: envs.Env, maintenance: bool, skip_migrate: bool) -> list:
    """The steps a deploy runs with these settings, in its order (compose engines; keep in
    step with run_deploy: tests/e2e/test_plan.py compares this list with a real deploy's)."""
    steps = ["preflight", "pull", "database"]
    if env["BACKUP"] == "yes" and not skip_migrate:
        steps.append("backup")
    steps += ["maintenance-on"] if maintenance else []
    steps.append("static" if skip_migrate else "migrate")
    steps += ["hooks-before"] if env["HOOK_BEFORE_SWITCH"] else []
    if env["SWITCH"] == "recreate":
        steps += ["recreate", "up", "prune-static"]
    else:
        steps += ["start", "health", "admit", "switch", "retire", "prune-static"]
    steps += ["hooks-after"] if env["HOOK_AFTER_SWITCH"] else []
    steps += ["maintenance-off"] if maintenance else []
    return steps


def _estimate(env: envs.Env) -> str:
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        _lib_module("history").median_ok(env.history, 10)
    return printed.getvalue().strip()


def plan_migrations(env: envs.Env, version: str, skip_migrate: bool) -> list:
    """Django's `migrate --plan` for VERSION against the running database (not started here)."""
    if skip_migrate:
        return ["migrations=skipped (a later batch: the first host migrates the shared database)"]
    pull = compose.compose(env, "pull", "-q", env["WEB_SERVICE"], version=version)
    code, out = run.output(pull.argv, env={**os.environ, **pull.environ}, cwd=pull.cwd)
    if code:
        last = out.rstrip("\n").rsplit("\n", 1)[-1]
        return [f"migrations=unknown (could not pull {version}: {last})"]
    migrate = compose.manage(env, version, ["migrate", "--plan"])
    code, out = run.output(migrate.argv, env={**os.environ, **migrate.environ}, cwd=migrate.cwd)
    head = (
        f"migrations=unknown (migrate --plan failed with exit {code}; is the database up?)"
        if code
        else "migrations=planned"
    )
    return [head] + [f"migration={line}" for line in out.rstrip("\n").split("\n")]


def plan(request: Request):
    """What a deploy of VERSION would do here, as KEY=value lines; changes nothing but
    pulling the image (to read its migrations). An outdated server side is reported."""
    env = envs.load(request.env)
    if env["ENGINE"] == "swarm":
        return HAND_OVER  # lib/plan.sh and lib/swarm.sh, still in bash
    version = request.words[0]
    check_version(env, version)
    os.makedirs(env.runs_dir, exist_ok=True)
    current = envs.current_version(env)
    print(f"current={current or 'none'}\ntarget={version}")
    expected = str(request.option("expect", ""))
    try:
        expect.check(expected, env.conf_path, env.name)
        print("server_side=" + ("current" if expected else "not checked"))
    except Refused as outdated:
        print(f"server_side=outdated: {outdated}")
    holder = Lock(env.state_dir).busy()
    print(f"busy={holder.split(' ', 1)[-1] if holder else 'no'}")
    why = order_refusal(env, version, request.option("order"), bool(request.option("force")))
    if why:
        print(f"order=refused: {why}")
    elif version == current:
        print("order=ok (already deployed: a deploy would start it again)")
    else:
        print(f"order=ok ({env['ORDERING']})")
    maintenance, skip_migrate = bool(request.option("maintenance")), bool(request.option("skip-migrate"))
    print(f"steps={' '.join(deploy_steps(env, maintenance, skip_migrate))}")
    for kind, key in (("before", "HOOK_BEFORE_SWITCH"), ("after", "HOOK_AFTER_SWITCH")):
        print("\n".join(f"hooks_{kind}={hook}" for hook in env[key] or [""]))
    print(f"estimate={_estimate(env)}")
    sys.stdout.flush()
    print("\n".join(plan_migrations(env, version, skip_migrate)))
    return 0


HANDLERS = {
    "version": version,
    "history": history,
    "backups": backups,
    "logs": logs,
    "status": status,
    "maintenance": maintenance,
    "check": check,
    "pull-status": pull_status,
    "manage": manage,
    "review-list": review_list,
    "plan": plan,
}
