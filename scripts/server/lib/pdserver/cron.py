"""Cron jobs (`cron:` in invoke.yaml): a management command run on a schedule, as root, by a
systemd timer or a cron entry that bin/install sets up from this module, never by the deploy
account. ENV.conf carries one line a job:

    CRON_JOB=NAME POLICY HOSTS MIN HOUR DOM MON DOW COMMAND ARGS...

POLICY: forbid (a run while the previous one runs is skipped) or replace (the previous one is
stopped). HOSTS: first (the environment's first host; bin/install is told which it is) or all.
The schedule is cron's five fields, in the subset both cron and systemd's OnCalendar read alike:
*, */N, N, A-B and lists of N and A-B.

`bin/deploy cron ENV NAME` runs one: it waits while a deploy holds the environment's lock (a
job never starts on a version being rolled out), takes the version deployed then, and runs the
command in a one-off container of it (named, so that `replace` can stop it); every run is a
line of STATE/ENV/cron/runs.jsonl (`cron-status` shows the last of each job), and a failed one
goes to the environment's webhooks.
"""

from __future__ import annotations

import collections
import fcntl
import json
import os
import re
import socket
import time

from . import compose, facts
from . import env as envs
from . import run as runner
from .lock import Lock, now_iso, try_flock
from .request import Refused, Request
from .result import Result

POLICIES = ("forbid", "replace")
HOSTS = ("first", "all")
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
FIELD_RE = re.compile(r"^(\*(/[0-9]{1,2})?|[0-9]{1,2}(-[0-9]{1,2})?(,[0-9]{1,2}(-[0-9]{1,2})?)*)$")
FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
LOCK_WAIT = 1800  # seconds a job waits for a deploy to finish before it skips this run
REPLACE_WAIT = 60  # seconds `replace` waits for the run it stopped to end
RUNS_KEEP = 2000  # lines of runs.jsonl kept

Job = collections.namedtuple("Job", "name policy hosts schedule words")


# ---------------------------------------------------------------------- what a job is (both sides)


def schedule_problem(fields) -> str:
    """Why five cron fields are not a schedule this module runs ('' when they are)."""
    if len(fields) != 5:
        return f"a schedule is five cron fields (minute hour day-of-month month day-of-week), not {len(fields)}"
    for text, (what, low, high) in zip(fields, FIELDS):
        if not FIELD_RE.match(text):
            return f"{what} {text!r}: use *, */N, N, A-B or a list of N and A-B"
        numbers = [int(n) for n in re.findall(r"[0-9]+", text)]
        step = text.startswith("*/")
        if step and not 1 <= numbers[0] <= high:
            return f"{what} {text!r}: the step is from 1 to {high}"
        if not step and any(not low <= n <= high for n in numbers):
            return f"{what} {text!r}: from {low} to {high}"
        if any(int(a) > int(b) for a, b in re.findall(r"([0-9]+)-([0-9]+)", text)):
            return f"{what} {text!r}: a range goes from low to high"
    return ""


def parse_line(line: str) -> Job:
    """A CRON_JOB line as a Job; ValueError saying why not."""
    words = line.split()
    if len(words) < 9:
        raise ValueError("expected NAME POLICY HOSTS and five schedule fields, then the command")
    name, policy, hosts, schedule, command = words[0], words[1], words[2], tuple(words[3:8]), tuple(words[8:])
    if not NAME_RE.match(name):
        raise ValueError(f"job name {name!r}: [a-z][a-z0-9-], at most 32")
    if policy not in POLICIES or hosts not in HOSTS:
        raise ValueError(f"{name}: policy is forbid or replace, hosts first or all")
    why = schedule_problem(schedule)
    if why:
        raise ValueError(f"{name}: {why}")
    return Job(name, policy, hosts, schedule, command)


def line_of(job: Job) -> str:
    return " ".join((job.name, job.policy, job.hosts, *job.schedule, *job.words))


def jobs(env: envs.Env) -> list:
    return [parse_line(line) for line in env["CRON_JOB"]]


def runs_here(job: Job, first: bool) -> bool:
    return job.hosts == "all" or first


# ---------------------------------------------------------------------- how it is run (bin/install)


def unit(env: str, job: str = "") -> str:
    """ENV's cron.d file, or job JOB's systemd units."""
    return f"pushdeploy-cron-{env}" + (f"-{job}" if job else "")


def calendar(schedule) -> str:
    """systemd's OnCalendar= for five cron fields (the subset schedule_problem accepts)."""
    minute, hour, dom, month, dow = (_systemd_field(text, what[1]) for text, what in zip(schedule, FIELDS))
    days = "" if schedule[4] == "*" else ",".join(_day(part) for part in schedule[4].split(",")) + " "
    del dow
    return f"{days}*-{month}-{dom} {hour}:{minute}:00"


def _systemd_field(text: str, low: int) -> str:
    if text == "*":
        return "*"
    if text.startswith("*/"):
        return f"{low}/{text[2:]}"
    return ",".join(part.replace("-", "..") for part in text.split(","))


def _day(part: str) -> str:
    first, _, last = part.partition("-")
    return DAYS[int(first)] + (f"..{DAYS[int(last)]}" if last else "")


def cron_text(env: str, chosen) -> str:
    """The cron.d file of ENV's jobs that run on this host."""
    lines = [
        f"# Managed by pushdeploy (inv server.setup): the cron jobs of {env}.",
        "SHELL=/bin/sh",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ]
    for job in chosen:
        log = f"{facts.STATE}/{env}/cron/{job.name}.log"
        lines.append(f"{' '.join(job.schedule)} root {facts.PREFIX}/bin/deploy cron {env} {job.name} >>{log} 2>&1")
    return "\n".join(lines) + "\n"


def service_text(env: str, job: Job) -> str:
    return f"""# Managed by pushdeploy (inv server.setup): cron job {job.name} of {env}.
[Unit]
Description=pushdeploy cron job {job.name} of {env}: manage.py {" ".join(job.words)}
After=network-online.target docker.service
Wants=network-online.target

[Service]
Type=oneshot
ExecStart={facts.PREFIX}/bin/deploy cron {env} {job.name}
"""


def timer_text(env: str, job: Job) -> str:
    return f"""# Managed by pushdeploy (inv server.setup): cron job {job.name} of {env} ({" ".join(job.schedule)}).
[Unit]
Description=pushdeploy cron job {job.name} of {env}

[Timer]
OnCalendar={calendar(job.schedule)}
AccuracySec=1s

[Install]
WantedBy=timers.target
"""


# ---------------------------------------------------------------------- a run (bin/deploy cron)


def cron(request: Request) -> Result:
    env = envs.load_checked(request)  # root only: guard.root_only
    name = request.words[0]
    job = next((job for job in jobs(env) if job.name == name), None)
    if job is None:
        known = " ".join(job.name for job in jobs(env)) or "none"
        raise Refused(
            f"{env.name} has no cron job {name!r} (its jobs: {known}): run `inv server.setup --env {env.name}`"
        )
    folder = os.path.join(env.state_dir, "cron")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    return Runner(env, job, folder).run()


class Runner:
    def __init__(self, env: envs.Env, job: Job, folder: str):
        self.env, self.job, self.folder = env, job, folder
        self.container = f"pd-cron-{env['PROJECT']}-{job.name}"

    def run(self) -> Result:
        job = self.job
        own = os.open(os.path.join(self.folder, f"{job.name}.lock"), os.O_WRONLY | os.O_CREAT, 0o600)
        if not try_flock(own, fcntl.LOCK_EX, 0):
            if job.policy == "forbid":
                return self.record("skipped", None, "", 0.0, "the previous run still runs (policy forbid)")
            print(f"{job.name}: the previous run still runs: stopping it (policy replace)", flush=True)
            runner.output(compose.docker(self.env, "rm", "-f", self.container))
            if not try_flock(own, fcntl.LOCK_EX, REPLACE_WAIT, pause=0.2):
                return self.record("skipped", None, "", 0.0, f"the previous run did not end within {REPLACE_WAIT}s")
        version = self.deployed_version()
        if version is None:
            return self.record("skipped", None, "", 0.0, f"a deploy held {self.env.name}'s lock for {LOCK_WAIT}s")
        if not version:
            return self.record("skipped", None, "", 0.0, "nothing is deployed yet")
        from .verbs import manage_refusal

        why = manage_refusal(self.env, job.words[0], job.words[1:])
        if why:
            return self.record("failed", 64, version, 0.0, f"refused: {why}")
        runner.output(compose.docker(self.env, "rm", "-f", self.container))  # one a crash left
        print(f"{now_iso()} {job.name}: manage.py {' '.join(job.words)} on {version}", flush=True)
        started = time.monotonic()
        code = self.one_off(version, [*self.env["MANAGE"].split(), *job.words])
        took = time.monotonic() - started
        if code == 0:
            return self.record("ok", code, version, took, "")
        stopped = code in (137, 143) and job.policy == "replace"
        return self.record("replaced" if stopped else "failed", code, version, took, f"exit {code}")

    def one_off(self, version: str, argv: list) -> int:
        """ARGV in a one-off container of VERSION named for the job (replace stops it by name):
        compose's `run`; on a swarm, on the stack's network as the deploy's one-offs run."""
        from types import SimpleNamespace

        from .pipeline import strategy_for

        strategy = strategy_for(self.env)
        if not hasattr(strategy, "on_stack_network"):
            extra = ("--name", self.container)
            return runner.streamed(compose.one_off(self.env, version, *argv, extra=extra))
        with strategy.on_stack_network(SimpleNamespace(version=version), "cron") as found:
            if found is None:
                return 1
            options, settings = found
            options[options.index("--name") + 1] = self.container
            options += [word for mount in settings["mount"] for word in ("-v", mount)]
            return runner.streamed(compose.docker(self.env, "run", *options, settings["image"], *argv))

    def deployed_version(self):
        """The version deployed once no deploy holds the lock ('' if none; None: still held)."""
        lock = Lock(self.env.state_dir)
        holder = lock.take()
        if holder is not None:
            print(f"{self.job.name}: waiting for {holder.split(' ', 1)[-1]}", flush=True)
            if not lock.take_within(LOCK_WAIT):
                return None
        try:
            return envs.current_version(self.env)
        finally:
            lock.close()

    def record(self, result: str, code, version: str, seconds: float, message: str) -> Result:
        job = self.job
        entry = {
            "time": now_iso(),
            "job": job.name,
            "kind": "cron",
            "result": result,
            "outcome": "ok" if result in ("ok", "skipped", "replaced") else "failed",
            "exit": code,
            "duration": round(seconds, 1),
            "version": version,
            "command": " ".join(job.words),
            "message": message,
        }
        path = os.path.join(self.folder, "runs.jsonl")
        with open(path, "a") as file:
            file.write(json.dumps(entry) + "\n")
        _trim(path, RUNS_KEEP)
        print(f"{job.name}: {result}" + (f" ({message})" if message else "") + f" in {seconds:.1f}s", flush=True)
        if entry["outcome"] == "failed":
            self.notify(path)
        return Result(0 if result != "failed" else 1, {k: v for k, v in entry.items() if k != "kind"})

    def notify(self, path: str) -> None:
        from .pipeline import post_webhooks

        given = {"env": self.env.name, "project": self.env["PROJECT"], "host": socket.gethostname(), "by": "cron"}
        post_webhooks(self.env, "finished", path, given, f"{self.job.name}: notifying the webhooks")


def _trim(path: str, keep: int) -> None:
    with open(path) as file:
        lines = file.readlines()
    if len(lines) > keep * 2:
        with open(path + ".new", "w") as file:
            file.writelines(lines[-keep:])
        os.replace(path + ".new", path)


# ---------------------------------------------------------------------- cron-status


def last_runs(path: str) -> dict:
    """The last record of each job in runs.jsonl."""
    last = {}
    try:
        with open(path, errors="replace") as file:
            for line in file:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                last[entry.get("job")] = entry
    except FileNotFoundError:
        pass
    return last


def status(request: Request) -> Result:
    env = envs.load_checked(request)
    installed = installed_jobs(env.name)
    last = last_runs(os.path.join(env.state_dir, "cron", "runs.jsonl"))
    found = jobs(env)
    if not found:
        print(f"no cron jobs in {env.name}'s settings", flush=True)
    failed = []
    for job in found:
        entry = last.get(job.name)
        where = "runs here" if job.name in installed else "not on this host"
        print(
            f"{job.name}: {' '.join(job.schedule)}  manage.py {' '.join(job.words)}  ({job.policy}, {where})",
            flush=True,
        )
        if entry:
            code = "" if entry.get("exit") is None else f", exit {entry['exit']}"
            said = f" ({entry['message']})" if entry.get("message") else ""
            on = f" on {entry['version']}" if entry.get("version") else ""
            print(f"  last run: {entry.get('time')} {entry.get('result')}{code} in {entry.get('duration')}s{on}{said}")
            if entry.get("outcome") == "failed":
                failed.append(job.name)
        elif job.name in installed:
            print("  last run: none yet", flush=True)
    here = sorted(set(installed) & {job.name for job in found})
    return Result(0, {"jobs": len(found), "here": " ".join(here), "failed": " ".join(failed)})


def installed_jobs(env: str, cron_dir: str = "/etc/cron.d", systemd_dir: str = "/etc/systemd/system") -> set:
    """The jobs this host runs: in its cron.d file, or as timers."""
    try:
        with open(os.path.join(cron_dir, unit(env))) as file:
            listed = set(re.findall(rf" cron {re.escape(env)} ([a-z][a-z0-9-]*) ", file.read()))
    except FileNotFoundError:
        listed = set()
    return listed | installed_timers(env, systemd_dir)


def installed_timers(env: str, systemd_dir: str) -> set:
    """The jobs this host runs as systemd timers."""
    prefix = unit(env) + "-"
    try:
        names = os.listdir(systemd_dir)
    except FileNotFoundError:
        return set()
    return {name[len(prefix) : -len(".timer")] for name in names if name.startswith(prefix) and name.endswith(".timer")}
