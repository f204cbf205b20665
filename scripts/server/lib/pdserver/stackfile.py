"""A swarm environment's stack file and the one-off containers beside it: rendered with
.env (docker stack deploy reads none), checked (what stops a safe rolling deploy: lib/swarm.py
reads Docker's JSON), and the settings of a one-off container of the web service's image on
the stack's network (migrations, hooks, backups, `migrate --plan`). stack.py deploys it."""

from __future__ import annotations

import json
import os
import re
import tempfile

from . import compose
from . import containers as ct
from . import env as envs
from . import run as runner


def rules():
    """lib/swarm.py: what Docker's JSON says (problems, the one-off's settings, the watch)."""
    return runner.lib_module("swarm")


def dotenv(env: envs.Env) -> dict:
    """.env's variables (docker stack deploy reads no .env file)."""
    values = {}
    for line in envs.read_text(os.path.join(env.app_dir, ".env")).splitlines():
        match = re.match(r"^\s*(export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if match:
            value = match.group(3)
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            values[match.group(2)] = value
    return values


def with_dotenv(env: envs.Env, version: str, *argv: str) -> runner.Command:
    """ARGV in APP_DIR with .env's variables, VERSION=version and PD_STACK=PROJECT."""
    command = compose.docker(env, *argv)
    environ = {**dotenv(env), "VERSION": version, "PD_STACK": env["PROJECT"], **command.environ}
    return runner.Command(command.argv, env.app_dir, environ)


def stack_files(env: envs.Env) -> list:
    return [word for name in env["COMPOSE_FILES"].split() for word in ("-c", name)]


def deploy_args(env: envs.Env) -> list:
    """`docker stack deploy`'s arguments; with a registry login, the nodes get it too
    (--with-registry-auth): a worker that was never logged in pulls the private image."""
    auth = ["--with-registry-auth"] if env["REGISTRY"] else []
    return ["stack", "deploy", "--resolve-image", "always", *auth, *stack_files(env), env["PROJECT"]]


def stack_json(env: envs.Env, version: str) -> tuple[int, str]:
    """The stack files as compose renders them (with .env) at VERSION, as JSON text; on
    failure compose's errors (its warnings about deploy: keys are not ours to show)."""
    code, out = runner.output(compose.compose(env, "config", "--format", "json", version=version), stderr=False)
    if code == 0:
        return 0, out
    return code, runner.output(compose.compose(env, "config", "--format", "json", version=version))[1]


def manager_compose(env: envs.Env, *args: str) -> runner.Command:
    from .tls import extra_files  # the proxy's HTTPS (tls.py), once installed

    names = env["MANAGER_COMPOSE_FILES"].split() + extra_files(env)
    files = [word for name in names for word in ("-f", name)]
    command = compose.compose(env, *args)
    argv = [*env["COMPOSE"].split(), "-p", env["PROJECT"], *files, *args]
    return runner.Command(argv, env.app_dir, {**command.environ, "PD_STACK": env["PROJECT"]})


def role(env: envs.Env) -> str:
    code, out = runner.output(
        compose.docker(env, "info", "-f", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}")
    )
    state = out.strip()
    if code:
        return f"unreachable: {state}"
    return {"active true": "manager", "active false": "worker"}.get(state, state.split(" ")[0])


def problems(env: envs.Env, version: str) -> list:
    """What stops a deploy of VERSION, one problem a line; none: ready."""
    found = []
    node = role(env)
    if node != "manager":
        found.append(
            f"this node is not a swarm manager (it is: {node}): list a manager in the environment's hosts, or run `docker swarm init` here"
        )
    if not os.path.isfile(os.path.join(env.app_dir, ".env")):
        found.append(f"missing {env.app_dir}/.env: run `inv server.setup --env {env.name}`")
    code, out = runner.output(with_dotenv(env, version, "stack", "config", *stack_files(env)))
    if code:
        found.append(f"`docker stack config` rejects the stack file(s) {env['COMPOSE_FILES']}: {out.rstrip()}")
    code, rendered = stack_json(env, version)
    if code:
        return found + [f"the stack file(s) {env['COMPOSE_FILES']} do not render: {rendered.rstrip()}"]
    from . import roles

    kinds = {role.name: role.kind for role in roles.declared(env)}
    return found + rules().problems(json.loads(rendered), version, kinds)


def release_settings(env: envs.Env, version: str, env_file: str) -> dict:
    """The one-off container's image, network and mounts at VERSION; the web service's
    environment goes to ENV_FILE. Raises RuntimeError with what went wrong."""
    code, rendered = stack_json(env, version)
    if code:
        raise RuntimeError(rendered.rstrip().rsplit("\n", 1)[-1])
    try:
        lines = rules().release(json.loads(rendered), env["WEB_SERVICE"], env_file)
    except SystemExit as error:
        raise RuntimeError(str(error)) from None
    settings = {"mount": []}
    for line in lines:
        key, _, value = line.partition("=")
        if key == "mount":
            settings["mount"].append(value)
        else:
            settings[key] = value
    return settings


def plan_migrations(env: envs.Env, version: str) -> list:
    """`migrate --plan` in a one-off container of VERSION on the stack's network."""
    with tempfile.NamedTemporaryFile("w", prefix="pd-env-") as env_file:
        try:
            settings = release_settings(env, version, env_file.name)
        except RuntimeError as error:
            return [f"migrations=unknown (the stack file does not render: {error})"]
        image, network = settings["image"], settings["network"]
        code, out = runner.output(compose.docker(env, "pull", "-q", image))
        if code:
            return [f"migrations=unknown (could not pull {image}: {out.rstrip().rsplit(chr(10), 1)[-1]})"]
        shares = ct.LOW_CPU_SHARES if env["PRIORITY"] == "low" else 0
        argv = ["run", "--rm", "--network", network, "--env-file", env_file.name, f"--cpu-shares={shares}", image]
        code, out = runner.output(compose.docker(env, *argv, *env["MANAGE"].split(), "migrate", "--plan"))
    head = (
        f"migrations=unknown (migrate --plan failed with exit {code}; does the stack's network {network} exist, and the database answer?)"
        if code
        else "migrations=planned"
    )
    return [head] + [f"migration={line}" for line in out.rstrip("\n").split("\n")]


def setup_check(env: envs.Env) -> int:
    """`bin/deploy setup-check ENV` (bin/install, as root): what a deploy would refuse."""
    found = problems(env, "pushdeploy-check")
    if found:
        print(f"pushdeploy: the swarm stack of {env.name} is not ready for a safe deploy:")
        for line in "\n".join(found).splitlines():
            print(f"  {line}")
        return 1
    print(
        "swarm: this node is a manager; the stack file is valid, its services update start-first behind a health check"
    )
    return 0
