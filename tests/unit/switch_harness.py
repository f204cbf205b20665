"""Runs the slots switch (pdserver/slots.py) with `docker` replaced by a recorder that answers
like a small fake Docker: one old web container (old1) serving, compose creating one new one
(new1). The scenario (first argument) picks the fault; the recorded commands, the sleeps and
the file changes (.env, the routing flag) go to stdout, one a line, for exact comparison."""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../scripts/server/lib"))

from pdserver import env as envs  # noqa: E402
from pdserver import pipeline, run, slots  # noqa: E402

SCENARIO = sys.argv[1]
WORK = tempfile.mkdtemp()
STATE = os.path.join(WORK, "state")
os.makedirs(os.path.join(WORK, "app"))
os.makedirs(STATE)
with open(os.path.join(WORK, "app", ".env"), "w") as env_file:
    env_file.write("VERSION=1.0\nSECRET=x\n")
# What the last deploy applied: the same configuration, unless the scenario changed it.
for name, changed in (("services-config", ("fail-switch", "config-changed")), ("proxy-config", ("config-changed",))):
    with open(os.path.join(STATE, name), "w") as file:
        file.write("conf0\n" if SCENARIO in changed else "conf1\n")

RECORD = os.fdopen(os.dup(1), "w", buffering=1)
devnull = os.open(os.devnull, os.O_WRONLY)
os.dup2(devnull, 1)


def say(line: str) -> None:
    RECORD.write(line + "\n")


def mark(name: str) -> None:
    open(os.path.join(WORK, name), "w").close()


def marked(name: str) -> bool:
    return os.path.exists(os.path.join(WORK, name))


TABLE = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
LISTEN = "   0: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000 10001        0 1 1\n"
OPEN = "   1: 030012AC:1F40 040012AC:D3C2 01 00000000:00000000 00:00000000 00000000 10001        0 2 1\n"


def docker(args: list) -> tuple:
    line = " ".join(args)
    if line.startswith("ps ") and "service=web" in line:
        out = "old1\n"
        if SCENARIO == "leftover" and not marked("left-gone"):
            out += "left1\n"  # started by a deploy that was killed
        return 0, out + ("new1\n" if marked("created") else "")
    if line.startswith("inspect -f {{.Id}}{{range .NetworkSettings.Networks}}"):
        return 0, "old1 web-blue pixel-test-web-1 web\n" + (
            "left1 web-green pixel-test-web-2 web\n" if "left1" in args else ""
        )
    if line == "rm left1":
        mark("left-gone")
    elif line.startswith("ps ") and "service=proxy" in line:
        return 0, "proxy1\n"
    elif line.startswith("compose -p pixel-test -f docker-compose.yml up --no-start"):
        mark("created")
    elif line == "compose -p pixel-test -f docker-compose.yml up -d --no-deps proxy":
        return (1 if SCENARIO == "fail-switch" else 0), ""
    elif line == "inspect -f {{.State.Running}} proxy1":
        return 0, "true\n"
    elif line.startswith("inspect -f {{range $net, $cfg := .NetworkSettings.Networks}}"):
        return 0, "pixel-test_default [web-green pixel-test-web-2 new1]\n"
    elif line.startswith("inspect -f {{with .Config.Healthcheck}}"):
        return 0, "CMD\0python3\0-c\0check()\0"
    elif line.startswith("inspect -f {{if .State.Health}}"):
        return 0, "unhealthy\n" if SCENARIO == "fail-health" else "starting\n"
    elif line == "network connect --alias pixel-test-web-2 --alias web-green --alias web pixel-test_default new1":
        return (1 if SCENARIO == "fail-admit" else 0), ""
    elif line == "exec new1 python3 -c check()":
        return (1 if SCENARIO == "fail-health" else 0), ""
    elif line.startswith("logs"):
        return 0, "a log line\n"
    elif line == "inspect -f {{.Id}} {{.HostConfig.CpuShares}} new1":
        return 0, "new1 0\n"
    elif line.startswith("inspect -f {{.State.Pid}} "):
        return 0, "0\n"  # not a process here: the table is read with exec
    elif line.startswith("exec ") and line.endswith(" cat /proc/net/tcp /proc/net/tcp6"):
        # The old container is still answering one request the first time it is asked.
        first = not marked(f"asked-{args[1]}")
        mark(f"asked-{args[1]}")
        return 0, TABLE + LISTEN + (OPEN if first else "")
    return 0, ""


def output(command, stderr=True, timeout=0):
    say(" ".join(command.argv))
    return docker(command.argv[1:])


run.output = output
run.streamed = lambda command: output(command)[0]
time.sleep = lambda seconds: say(f"sleep {seconds}")
real_write = envs.write_version


def write_version(env, version):
    say(f"write VERSION={version} to .env")
    return real_write(env, version)


envs.write_version = write_version
real_flip = slots.Slots.flip_to


def flip_to(self, slot, back=False):
    say(f"flip to {slot}{' (back)' if back else ''}")
    return real_flip(self, slot, back)


slots.Slots.flip_to = flip_to
envs.Env.state_dir = property(lambda self: STATE)
values = {
    **envs.DEFAULTS,
    **{key: [] for key in envs.LISTS},
    "APP_DIR": os.path.join(WORK, "app"),
    "PROJECT": "pixel-test",
    "PROXY_SERVICE": "proxy",
    "SERVICES": "web proxy",
    "DRAIN_SECONDS": "1",
    "DNS_VALID": "1",
    "HEALTH_TIMEOUT": "3",
    "PRIORITY": "low",
    "APP_FILES_SHA256": "conf1",
}
env = envs.Env("test", os.path.join(WORK, "test.conf"), values)
strategy = slots.Slots(env)
deploy = pipeline.Run(env, "r1", {"VERSION": "2.0"})
deploy.previous = "1.0"


def where() -> str:
    return f".env: {envs.current_version(env)}; routing: {slots.live_slot(env)}"


if SCENARIO == "env-ahead":
    # A deploy killed between writing .env and moving the proxy: blue (old1) serves 1.0.
    envs.write_version(env, "2.0")
    with open(os.path.join(STATE, "slot-blue"), "w") as file:
        file.write("1.0\n")
    strategy.env_names_live_slot()
    say(f"-> {where()}")
    sys.exit(0)

if all(action(deploy) == 0 for action in (strategy.start, strategy.health, strategy.admit, strategy.switch)):
    strategy.retire_old()
    say(f"-> switched; {where()}")
else:
    say("-> failed")
    strategy.undo(deploy)
    say(f"-> discarded; {where()}")
