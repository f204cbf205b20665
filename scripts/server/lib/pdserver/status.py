"""status: what runs here, the deploy in progress, the last deploy; a swarm's stack."""

from __future__ import annotations

import os
import sys

from . import compose, marks, run
from . import env as envs
from .lock import Lock
from .pipeline import strategy_for
from .request import Request
from .result import Result


def status(request: Request) -> Result:
    env = envs.load_checked(request)
    version = envs.current_version(env)
    print(f"version: {version}")
    holder = Lock(env.state_dir).busy() if os.path.isdir(env.state_dir) else None
    deploying = holder.split(" ", 1)[-1] if holder else ""
    print(f"deploy in progress: {deploying or 'no'}")
    print(f"last deploy: {last_deploy(env.history)}")
    found = {"version": version, "deploying": deploying}
    bad = marks.bad(env) if os.path.exists(env.history) else {}
    for name, mark in sorted(bad.items(), key=lambda item: item[1].get("time", ""))[-5:]:
        serving = " (SERVING NOW: inv deploy.rollback goes back)" if name == version else ""
        print(f"marked bad: {name}{serving}: {marks.described(mark)}")
    if bad:
        found["bad"] = sorted(bad)
    if not holder and dead_runs(env.runs_dir):
        print(
            "warning: a deploy ended without a result (its process was killed): the next deploy records it and cleans up after it"
        )
    found.update(strategy_for(env).status())
    return Result(0, found)


def compose_services(env: envs.Env) -> None:
    """The compose project's containers (not one-off), by compose's labels with the docker
    CLI: a tenth of the CPU of `compose ps`."""
    print("services:")
    sys.stdout.flush()
    containers = "table {{.Names}}\t{{.Image}}\t{{.Status}}\t{{.Ports}}"
    project, oneoff = f"label=com.docker.compose.project={env['PROJECT']}", "label=com.docker.compose.oneoff=False"
    _indented(compose.docker(env, "ps", "--filter", project, "--filter", oneoff, "--format", containers))


def _indented(command: run.Command, strip_digest: bool = False) -> None:
    """A command's output (and errors), each line indented under its heading."""
    import re

    for line in run.output(command)[1].splitlines():
        print("  " + (re.sub(r"@sha256:[0-9a-f]+", "", line, count=1) if strip_digest else line))


def swarm_status(env: envs.Env) -> None:
    """The stack's services, running tasks, tasks asked to stop that still run, nodes."""
    import re

    project = env["PROJECT"]
    print(f"swarm: this node is a {swarm_role(env)}")
    print("services:")
    services = "table {{.Name}}\t{{.Mode}}\t{{.Replicas}}\t{{.Image}}"
    _indented(
        compose.docker(
            env, "service", "ls", "--filter", f"label=com.docker.stack.namespace={project}", "--format", services
        ),
        True,
    )
    print("tasks:")
    tasks = "table {{.Name}}\t{{.Node}}\t{{.CurrentState}}\t{{.Error}}"
    _indented(compose.docker(env, "stack", "ps", project, "--filter", "desired-state=running", "--format", tasks))
    # Replaced tasks swarm asked to stop that still run (a node that came back after it
    # stopped answering may take a while, or need its dockerd restarted): maybe still served.
    stopping = []
    listing = "{{.Name}}\t{{.Node}}\t{{.Image}}\t{{.CurrentState}}"
    _, out = run.output(
        compose.docker(env, "stack", "ps", project, "--filter", "desired-state=shutdown", "--format", listing),
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
    nodes = "table {{.Hostname}}\t{{.Status}}\t{{.Availability}}\t{{.ManagerStatus}}"
    _indented(compose.docker(env, "node", "ls", "--format", nodes))
    if env["MANAGER_COMPOSE_FILES"]:
        print("outside the stack (on this node):")
        containers = "table {{.Names}}\t{{.Image}}\t{{.Status}}\t{{.Ports}}"
        _indented(
            compose.docker(env, "ps", "--filter", f"label=com.docker.compose.project={project}", "--format", containers)
        )


def last_deploy(path: str) -> str:
    """The last record as one line: from HISTORY.last while it is current, else read."""
    try:
        history_time = os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return "none"
    try:
        if os.stat(path + ".last").st_mtime_ns >= history_time:
            line = envs.read_text(path + ".last").split("\n", 1)[0]
            if line:
                return line
    except FileNotFoundError:
        pass
    history_py = run.lib_module("history")
    record = history_py.last_run(history_py.brief(path))
    return history_py.one_line(record) if record else "none"


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


def swarm_role(env: envs.Env) -> str:
    code, state = run.output(compose.docker(env, "info", "-f", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"))
    state = state.rstrip("\n")
    if code != 0:
        return f"unreachable: {state}"
    return {"active true": "manager", "active false": "worker"}.get(state, state.split(" ", 1)[0])
