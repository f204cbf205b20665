"""Roles (`roles:` in invoke.yaml): the compose services besides web that run the app's
image, replaced by a deploy without losing a job. ENV.conf carries one line a role:

    ROLE=NAME KIND HOSTS [QUIESCE...]

KIND: worker (any number, e.g. `celery worker`) or scheduler (exactly one in the whole
environment, e.g. `celery beat`). HOSTS: all, or the positions (1 = first) of the hosts it
runs on in the environment's `hosts:`; bin/install is told this host's (STATE/ENV/host).
QUIESCE: a worker's command that makes it stop taking jobs, run in each old container (docker
exec, no shell; %h: the container's host name) before it is stopped: Celery with Redis must
be told (a worker stopped while it waits for a job may take one from the queue and never run
it), e.g. `python3 -m celery -A app control cancel_consumer celery --destination celery@%h`.

A compose deploy (slots, recreate), once the new web is healthy and before its switch:
  worker     the new containers start beside the old (as many as run now, at least one) and
             must keep running; after the switch the old ones stop gracefully (docker stop:
             SIGTERM, a warm shutdown that finishes the job in hand within the service's
             stop_grace_period) and go;
  scheduler  the old one stops first, then its successor starts: never two at once.
A failed deploy stops the new ones and starts the old scheduler again: the old workers never
stopped. Containers of any other version (a killed deploy's) go first, gracefully. On swarm,
roles are services of the stack (stackfile.py checks them); swarm's update replaces them.
"""

from __future__ import annotations

import collections
import os
import re
import time

from . import compose, facts
from . import containers as ct
from . import env as envs
from . import run as runner

KINDS = ("worker", "scheduler")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")  # a compose service (schema.SERVICE_RE)
HOSTS_RE = re.compile(r"^(all|[1-9][0-9]{0,2}(,[1-9][0-9]{0,2})*)$")
QUIESCE_WORD_RE = re.compile(r"^[A-Za-z0-9_%@=:,./+-]{1,200}$")  # argv words: no shell, no quotes
SETTLE = 3  # seconds a new role container must keep running (one without a health check)
QUIET_WAIT = 2  # seconds after a quiesce, for a poll for jobs already under way (Redis: 1 s) to end
QUIESCE_TIMEOUT = 30

Role = collections.namedtuple("Role", "name kind hosts quiesce", defaults=((),))


# ---------------------------------------------------------------------- what a role is (both sides)


def line_of(role: Role) -> str:
    return " ".join([role.name, role.kind, role.hosts, *role.quiesce])


def quiesce_problem(words) -> str:
    """Why WORDS are not a quiesce command ('' when they are)."""
    if len(words) > 32:
        return "at most 32 words"
    bad = [word for word in words if not QUIESCE_WORD_RE.match(word)]
    return f"'{bad[0]}' is not a plain word (letters, digits, _ % @ = : , . / + -)" if bad else ""


def parse_line(line: str) -> Role:
    words = line.split()
    if len(words) < 3:
        raise ValueError(f"'{line}' is not NAME KIND HOSTS [QUIESCE...]")
    name, kind, hosts = words[:3]
    why = quiesce_problem(words[3:])
    if why:
        raise ValueError(f"{name}: quiesce: {why}")
    if not NAME_RE.match(name):
        raise ValueError(f"'{name}' is not a service name")
    if kind not in KINDS:
        raise ValueError(f"{name}: kind '{kind}' is worker or scheduler")
    if not HOSTS_RE.match(hosts):
        raise ValueError(f"{name}: hosts '{hosts}' is all or host positions (1,2)")
    if kind == "scheduler" and (hosts == "all" or "," in hosts):
        raise ValueError(f"{name}: a scheduler runs on exactly one host")
    if kind == "scheduler" and words[3:]:
        raise ValueError(f"{name}: a scheduler is stopped, not quiesced")
    return Role(name, kind, hosts, tuple(words[3:]))


def runs_on(role: Role, position: int) -> bool:
    return role.hosts == "all" or str(position) in role.hosts.split(",")


def host_file(env_name: str) -> str:
    return os.path.join(facts.STATE, env_name, "host")


def position(env_name: str) -> int:
    """This host's position in the environment's hosts (bin/install wrote it); 1 if unknown."""
    try:
        with open(host_file(env_name)) as file:
            text = file.read().strip()
    except FileNotFoundError:
        return 1
    return int(text) if text.isdigit() and 0 < int(text) < 1000 else 1


def declared(env: envs.Env) -> list:
    """Every role of the environment, workers before schedulers."""
    try:
        lines = env["ROLE"]
    except KeyError:  # settings made without the key (a test's)
        return []
    return sorted(map(parse_line, lines), key=lambda role: (KINDS.index(role.kind), role.name))


def here(env: envs.Env) -> list:
    """The environment's roles that run on this host."""
    every = declared(env)
    place = position(env.name) if every else 1
    return [role for role in every if runs_on(role, place)]


def version_of(env: envs.Env, container: str) -> str:
    image = ct.docker_out(env, "inspect", "-f", "{{.Config.Image}}", container)[1].strip()
    name = image.split("@")[0]
    return name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else ""


def exit_code(env: envs.Env, container: str) -> str:
    return ct.docker_out(env, "inspect", "-f", "{{.State.ExitCode}}", container)[1].strip()


def quiesce_argv(words, hostnames: list) -> list:
    """The quiesce command for containers of these HOSTNAMES: a word with %h names them all,
    comma-separated (Celery: --destination celery@a,celery@b)."""
    return [",".join(word.replace("%h", name) for name in hostnames) if "%h" in word else word for word in words]


def quiet(env: envs.Env, role: Role, ids: list) -> None:
    """The role's quiesce command in each container in turn, each then given QUIET_WAIT for a
    poll under way to end. Never two at once: Celery's Redis transport hands a job that reaches
    a worker no longer consuming back to the queue, and when a second such worker's poll takes
    it from there, one of them can drop it (both requeue it under one delivery tag; the
    first one's acknowledgement removes the second one's copy). Seen on swarm: one job in
    about six deploys, the one sent as both workers were told at once."""
    if not role.quiesce or not ids:
        return
    for container in ids:
        hostname = ct.docker_out(env, "inspect", "-f", "{{.Config.Hostname}}", container)[1].strip()
        argv = quiesce_argv(role.quiesce, [hostname])
        code, out = runner.output(compose.docker(env, "exec", container, *argv), timeout=QUIESCE_TIMEOUT)
        for line in out.strip().splitlines()[-2:]:  # what it answered
            print(f"  {line.strip()}", flush=True)
        if code != 0:
            print(
                f"warning: {role.name}: quiesce failed in {container[:12]} (exit {code}): {out.strip()[-200:]}",
                flush=True,
            )
        time.sleep(QUIET_WAIT)
    print(f"{role.name}: {len(ids)} container(s) told to take no more jobs", flush=True)


def stop_gracefully(env: envs.Env, ids: list, remove: bool = True, role: Role = None) -> list:
    """The role's quiesce, docker stop (SIGTERM, then the service's stop_grace_period), then
    rm: the ids that were killed at the end of their grace period instead of ending by themselves."""
    if not ids:
        return []
    if role is not None:
        quiet(env, role, ids)
    runner.output(compose.docker(env, "stop", *ids))
    killed = [c for c in ids if exit_code(env, c) == "137"]
    if remove:
        runner.output(compose.docker(env, "rm", "-f", *ids))
    return killed


# ---------------------------------------------------------------------- a deploy's steps


class Roles:
    """One deploy's roles: the old containers of each, the new ones, the stopped scheduler."""

    def __init__(self, env: envs.Env):
        self.env = env
        self.roles = here(env)
        self.old, self.new, self.paused = {}, {}, {}  # role name: container ids

    def start(self, run) -> int:
        """The new containers of every role, beside the old workers and in place of the
        old scheduler; each must run (healthy, if it has a health check)."""
        env = self.env
        for role in self.roles:
            every = ct.service_containers(env, role.name, stopped=True)
            running = ct.service_containers(env, role.name)
            gone = [c for c in every if c not in running]
            # A scheduler of the serving version that a killed deploy stopped for its successor
            # is the one to start again if this deploy fails too: kept, as if stopped here.
            kept = [c for c in gone if version_of(env, c) == run.previous] if role.kind == "scheduler" else []
            kept = [] if any(version_of(env, c) == run.previous for c in running) else kept[-1:]
            gone = [c for c in gone if c not in kept]
            if gone:
                runner.output(compose.docker(env, "rm", "-f", *gone))
            if kept:
                self.paused[role.name] = kept
            old = [c for c in running if version_of(env, c) == run.previous]
            strays = [c for c in running if c not in old]
            if strays:
                print(
                    f"{role.name}: {len(strays)} container(s) of another version (a deploy that did not finish) stop first",
                    flush=True,
                )
                stop_gracefully(env, strays, role=role)
            self.old[role.name] = old
            count = 1 if role.kind == "scheduler" else max(len(old), 1)
            if role.kind == "scheduler" and old:
                self.paused[role.name] = old  # first: a stop signal during the stop still undoes it
                runner.output(compose.docker(env, "stop", *old))
                print(f"{role.name}: the old scheduler stopped before its successor starts", flush=True)
            up = compose.compose(
                env,
                "up",
                "--no-start",
                "--no-deps",
                "--no-recreate",
                "--scale",
                f"{role.name}={len(set(old) | set(self.paused.get(role.name, []))) + count}",
                role.name,
                version=run.version,
            )
            if runner.streamed(up) != 0:
                return 1
            new = [
                c
                for c in ct.service_containers(env, role.name, stopped=True)
                if c not in old + self.paused.get(role.name, [])
            ]
            self.new[role.name] = new
            code, out = runner.output(compose.docker(env, "start", *new)) if new else (1, "compose created none")
            if code != 0:
                print(f"{role.name}: the new container(s) did not start: {out.strip()[-300:]}", flush=True)
                return 1
            print(
                f"{role.name} ({role.kind}): started {len(new)} of {run.version} beside {len(old) if role.kind == 'worker' else 0} old",
                flush=True,
            )
        return self.settled()

    def settled(self) -> int:
        """Every new container runs (healthy, if it has a check), and still runs SETTLE s later,
        never restarted by its restart policy (a worker that exits at start, say on a bad broker
        URL, is restarted by Docker and would look running)."""
        new = [c for ids in self.new.values() for c in ids]
        if not new:
            return 0
        if ct.wait_running_healthy(self.env, new) != 0:
            return 1
        time.sleep(SETTLE)
        for container in new:
            now = ct.state(self.env, container)
            restarts = ct.docker_out(self.env, "inspect", "-f", "{{.RestartCount}}", container)[1].strip()
            if now not in ("running", "healthy") or restarts not in ("", "0"):
                ct.show_failure(self.env, container, now if restarts in ("", "0") else f"restarted {restarts} time(s)")
                return 1
        return 0

    def retire(self, run=None) -> int:
        """After the switch: the old workers finish their jobs in hand and go; the stopped
        scheduler is removed; roles this host ran before and no longer runs (moved to another
        host, or gone from `roles:`) stop too."""
        env = self.env
        self.retire_displaced()
        for role in self.roles:
            old = self.old.get(role.name) or []
            if not old:
                continue
            killed = stop_gracefully(env, old, role=role)
            grace = "within its stop_grace_period" if role.kind == "worker" else ""
            print(f"{role.name}: {len(old)} old container(s) stopped gracefully {grace}".rstrip(), flush=True)
            if killed:
                print(
                    f"warning: {role.name}: {len(killed)} old container(s) were killed at the end of their "
                    "stop_grace_period, their job in hand cut short (a broker with late acks delivers it again): "
                    "give the service a longer stop_grace_period",
                    flush=True,
                )
            self.old[role.name] = []
        return 0

    def retire_displaced(self) -> None:
        """Stop the containers of roles this host ran (STATE/ENV/roles) that it no longer runs,
        gracefully (a declared worker's quiesce first), and remember what runs here now."""
        env = self.env
        placed = os.path.join(env.state_dir, "roles")
        before = envs.read_text(placed).split() if os.path.isfile(placed) else []
        here_now = {role.name: role for role in self.roles}
        every = {role.name: role for role in declared(env)}
        for name in sorted(set(before) - set(here_now)):
            ids = ct.service_containers(env, name, stopped=True)
            if ids:
                stop_gracefully(env, ids, role=every.get(name))
                print(f"{name}: no longer a role of this host: {len(ids)} container(s) stopped and removed", flush=True)
        if sorted(here_now) != sorted(before):
            envs.write_text(placed, " ".join(sorted(here_now)) + "\n")

    def undo(self, run=None) -> int:
        """A failed deploy: the new containers stop (gracefully: a job in hand finishes) and
        go, the old scheduler starts again; the old workers never stopped."""
        env = self.env
        for role in reversed(self.roles):
            new = self.new.pop(role.name, [])
            if new:
                stop_gracefully(env, new, role=role)
                print(f"{role.name}: the new container(s) stopped and removed", flush=True)
            paused = self.paused.pop(role.name, [])
            if paused and runner.output(compose.docker(env, "start", *paused))[0] == 0:
                print(f"{role.name}: the old scheduler runs again", flush=True)
        return 0


def plan_lines(env: envs.Env, version: str) -> list:
    """What a deploy of VERSION does to each role here, in words (`plan`)."""
    if env["ENGINE"] == "swarm":
        how = {"worker": "start-first, as web", "scheduler": "stop-first: the old task stops, then the new starts"}
        return [
            f"{role.name} ({role.kind}): swarm's update replaces it with web, {how[role.kind]}"
            for role in declared(env)
        ]
    lines = []
    for role in here(env):
        running = collections.Counter(version_of(env, c) for c in ct.service_containers(env, role.name))
        now = ", ".join(f"{n} of {v or '?'}" for v, n in sorted(running.items())) or "none running"
        if role.kind == "scheduler":
            lines.append(f"{role.name} (scheduler, {now}): the old one stops, then one of {version} starts")
        else:
            count = max(sum(running.values()), 1)
            lines.append(
                f"{role.name} (worker, {now}): {count} of {version} start beside them once web is up; "
                "after the switch the old finish their jobs and stop"
            )
    return lines


def status(env: envs.Env) -> dict:
    """Each role of this host: its containers' versions (what `status` prints)."""
    found = {}
    for role in here(env):
        versions = [version_of(env, c) for c in ct.service_containers(env, role.name)]
        counts = collections.Counter(versions)
        text = ", ".join(f"{n} x {v or '?'}" for v, n in sorted(counts.items())) or "none running"
        print(f"role {role.name} ({role.kind}): {text}")
        found[role.name] = {"kind": role.kind, "versions": versions}
    return {"roles": found} if found else {}
