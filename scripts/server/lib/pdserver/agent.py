"""Pull mode's agent: `bin/deploy pull ENV`, run as root by the environment's systemd timer
or cron entry (bin/install sets either up, from this module), never by the deploy account.

One check: resolve the channel's tag to a digest; when it moved since the last image the
agent tried, pin it as CHANNEL-<hex> (the registry has no such tag: the digest is kept in
STATE/ENV/pull/pins) and deploy it through the deploy verb itself, like any deploy. Every
check is recorded (pull-status shows them); overlapping checks skip.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import time

from . import compose, facts, marks, run
from . import containers as ct
from . import env as envs
from .lock import now_iso
from .request import Refused, Request
from .result import Result

AGENT_LOG_MAX = 1 << 20


# ---------------------------------------------------------------------- how it is run (bin/install)


def unit(env: str) -> str:
    """The name of ENV's agent: its systemd units, or its cron.d file."""
    return f"pushdeploy-pull-{env}"


def scheduler(systemd_run: str, cron_dir: str) -> str:
    """systemd where it runs as PID 1 (SYSTEMD_RUN exists: what sd_booted(3) checks), else
    cron where there is a cron.d, else none."""
    if os.path.isdir(systemd_run):
        return "systemd"
    return "cron" if os.path.isdir(cron_dir) else "none"


def remove(unit_name: str, systemd_dir: str, cron_dir: str) -> list:
    """The agent's timer and service (stopped first) or cron entry removed: what went."""
    gone = []
    timer = os.path.join(systemd_dir, f"{unit_name}.timer")
    if os.path.isfile(timer):
        subprocess.run(["systemctl", "disable", "--now", f"{unit_name}.timer"], capture_output=True, check=False)
        for path in (timer, os.path.join(systemd_dir, f"{unit_name}.service")):
            if os.path.exists(path):
                os.unlink(path)
        subprocess.run(["systemctl", "daemon-reload"], capture_output=True, check=False)
        gone.append(f"systemd timer {unit_name}.timer")
    cron = os.path.join(cron_dir, unit_name)
    if os.path.isfile(cron):
        os.unlink(cron)
        gone.append(cron)
    return gone


def service_text(env: str) -> str:
    return f"""# Managed by pushdeploy (inv server.setup): the pull agent of {env}.
[Unit]
Description=pushdeploy pull agent for {env}: deploy the channel's image when it changed
After=network-online.target docker.service
Wants=network-online.target

[Service]
Type=oneshot
ExecStart={facts.PREFIX}/bin/deploy pull {env}
"""


def timer_text(env: str, every: int) -> str:
    return f"""# Managed by pushdeploy (inv server.setup): the pull agent of {env}, every {every} s.
[Unit]
Description=pushdeploy pull agent for {env}, every {every} s

[Timer]
OnBootSec={every}s
OnUnitActiveSec={every}s
AccuracySec=1s

[Install]
WantedBy=timers.target
"""


def cron_minutes(every: int) -> int:
    """cron counts minutes: every ceil(EVERY/60) minutes, at least every minute."""
    return (every + 59) // 60


def cron_text(env: str, every: int) -> str:
    minutes = cron_minutes(every)
    return (
        f"# Managed by pushdeploy (inv server.setup): the pull agent of {env}, every {minutes} min.\n"
        "SHELL=/bin/sh\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        f"*/{minutes} * * * * root {facts.PREFIX}/bin/deploy pull {env} >>{facts.STATE}/{env}/pull/agent.log 2>&1\n"
    )


# ---------------------------------------------------------------------- the agent (bin/deploy pull)


def pull(request: Request) -> Result:
    env = envs.load_checked(request)  # root only: guard.root_only
    channel = env["PULL_CHANNEL"]
    if not channel:
        raise Refused(
            f"{env.name} has no pull channel: set `pull: {{channel: ...}}` in invoke.yaml and run `inv server.setup --env {env.name}`"
        )
    folder = os.path.join(env.state_dir, "pull")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    lock = os.open(os.path.join(folder, "lock"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"another check of {env.name} runs: skipped", flush=True)
        return Result(0, {"check": "skipped"})
    trim(os.path.join(folder, "agent.log"), AGENT_LOG_MAX)
    return check(env, folder)


class Checks:
    """The agent's record of its checks, one JSON object a line (pull-status shows them)."""

    def __init__(self, env: envs.Env, folder: str):
        self.env, self.path, self.tools = env, os.path.join(folder, "checks.jsonl"), run.lib_module("pull")

    def result(self, code: int, what: str, digest: str, version: str, message: str) -> Result:
        """The check recorded and said; as the agent's result."""
        print(f"{what}: {message}", flush=True)
        fields = {"time": now_iso(), "channel": self.env["PULL_CHANNEL"], "result": what}
        fields.update(digest=digest, version=version, message=message)
        self.tools.record(self.path, [f"{key}={value}" for key, value in fields.items()])
        return Result(code, {"check": what, "digest": digest, "version": version})

    def last_tried(self) -> str:
        """The digest of the last image the agent tried, else the one deployed now."""
        tools = self.tools
        current = envs.current_version(self.env)
        return tools.last_digest(tools.read(self.path)) or tools.running_digest(
            run.lib_module("history").brief(self.env.history), current
        )


def check(env: envs.Env, folder: str) -> Result:
    channel, checks = env["PULL_CHANNEL"], Checks(env, folder)
    print(f"{now_iso()} checking {env.name}'s channel {channel}", flush=True)
    ref, digest, why = resolve(env, channel)
    if why:
        return checks.result(1, "error", "", "", why)
    version = f"{channel}-{digest[7 : 7 + facts.PIN_HEX]}"
    if digest == checks.last_tried():
        return checks.result(0, "unchanged", digest, version, f"{ref} is still {digest}")
    mark = marks.bad(env).get(version)
    if mark:  # no digest recorded: checked again each time, deployed once it is marked good
        message = f"{ref} is {digest}, {version}, {marks.described(mark)}: not deployed"
        return checks.result(0, "bad", "", version, message)
    print(f"{ref} moved to {digest}: deploying it as {version}", flush=True)
    repo = ref[: -len(channel) - 1]
    if run.output(compose.docker(env, "tag", f"{repo}@{digest}", f"{repo}:{version}"))[0]:
        return checks.result(1, "error", digest, version, f"could not tag {repo}@{digest}")
    pins = os.path.join(folder, "pins")
    if not ct.pinned_digest(pins, version):
        with open(pins, "a") as file:
            file.write(f"{version} {digest}\n")
    code = deploy(env, version)
    if code == 0:
        return checks.result(code, "deployed", digest, version, f"deployed {version} ({repo}@{digest})")
    if code == facts.EXIT_BUSY:
        message = f"another deploy of {env.name} runs: trying again at the next check"
        return checks.result(code, "busy", "", version, message)
    serving = envs.current_version(env)
    message = f"the deploy of {version} failed (exit {code}): {serving} serves; not retried until the channel moves"
    return checks.result(code, "failed", digest, version, message)


def resolve(env: envs.Env, channel: str) -> tuple[str, str, str]:
    """(the channel's image reference, its registry digest now, '') or ('', '', why not)."""
    ref = ct.web_image_ref(env, channel)
    if not ref.endswith(":" + channel):
        got = ref or "nothing"
        return "", "", f"the web service's image in the compose files must be REPOSITORY:${{VERSION}} (got '{got}')"
    code, out = run.output(compose.docker(env, "pull", ref))
    if code:
        return "", "", ct.pull_failure(env, ref, out)
    found = re.findall(r"^Digest: (sha256:[0-9a-f]{64})$", out, re.M)
    digest = found[-1] if found else ct.repo_digest(env, ref)
    if not re.match(r"^sha256:[0-9a-f]{64}$", digest):
        return "", "", f"no registry digest for {ref}"
    return ref, digest, ""


def deploy(env: envs.Env, version: str) -> int:
    """The deploy verb itself, as root: its checks, its lock, its detached run. The id is
    unguessable: a deploy sent earlier with the same id would make this one "already ran"."""
    run_id = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-pull-{os.urandom(6).hex()}"
    argv = [os.path.join(os.path.dirname(run.LIB), "bin", "deploy"), "deploy", env.name, version]
    argv += [f"--id={run_id}", "--force", f"--by=pull:{env['PULL_CHANNEL']}"]
    return subprocess.run(argv, check=False).returncode


def trim(path: str, limit: int) -> None:
    """Keep the agent's own log under LIMIT bytes: its newer half stays."""
    try:
        if os.path.getsize(path) <= limit:
            return
        with open(path, "rb") as file:
            file.seek(-(limit // 2), os.SEEK_END)
            tail = file.read()
        with open(path + ".tmp", "wb") as file:
            file.write(tail)
        os.replace(path + ".tmp", path)
    except OSError:
        pass
