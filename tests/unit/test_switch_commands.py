"""The switch's exact command sequences, without root or Docker.

tests/unit/switch_harness.py runs the slots switch (pdserver/slots.py) with `docker`
replaced by a recorder that answers like a small fake Docker (one old web container
`old1` serving, compose creating `new1`): the steps start, health, admit, switch and
retire as a deploy runs them, or the undo of the new container on a failure. Kamal's command tests are the model: config in, exact
commands out.
"""

import os
import subprocess
import sys

import pytest

from pushdeploy import protocol

HARNESS = protocol.PROJECT_ROOT / "tests/unit/switch_harness.py"
COMPOSE = "docker compose -p pixel-test -f docker-compose.yml"
NETWORKS = (
    'docker inspect -f {{range $net, $cfg := .NetworkSettings.Networks}}{{$net}} {{$cfg.Aliases}}{{"\\n"}}{{end}} new1'
)

LABELS = "--filter label=com.docker.compose.project=pixel-test --filter label=com.docker.compose.service={} --filter label=com.docker.compose.oneoff=False"
WEB, WEB_ALL = f"docker ps -q --no-trunc {LABELS.format('web')}", f"docker ps -a -q --no-trunc {LABELS.format('web')}"

SLOTS = "docker inspect -f {{.Id}}{{range .NetworkSettings.Networks}}{{range .Aliases}} {{.}}{{end}}{{end}}"
START = [
    WEB_ALL,  # stopped leftovers from an interrupted deploy?
    WEB,  # the old containers
    f"{SLOTS} old1",  # any of them already in the idle slot (a deploy killed outright started it)?
    f"{COMPOSE} up --no-start --no-deps --no-recreate --scale web=2 web",
    WEB_ALL,  # which one is new
    "docker inspect -f {{.Id}} {{.HostConfig.CpuShares}} new1",  # its own CPU weight, for later
    "docker update --cpu-shares 64 new1",  # it starts at a low CPU weight: serving comes first
    NETWORKS,
    "docker network disconnect pixel-test_default new1",
    "docker network connect --alias pixel-test-web-2 --alias web-green pixel-test_default new1",  # the idle slot only
    "docker start new1",
]
HEALTH = [
    'docker inspect -f {{with .Config.Healthcheck}}{{range .Test}}{{.}}{{"\\x00"}}{{end}}{{end}} new1',
    "docker inspect -f {{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}} new1",
    "docker exec new1 python3 -c check()",  # its own health check, run now
]
ADMIT = [
    "docker update --cpu-shares 1024 new1",  # about to serve: its own weight (Docker's default) back
    NETWORKS,
    "docker network disconnect pixel-test_default new1",
    "docker network connect --alias pixel-test-web-2 --alias web-green --alias web pixel-test_default new1",
]
SWITCH = ["write VERSION=2.0 to .env", "flip to green"]
PROXY_RUNNING = [f"docker ps -q --no-trunc {LABELS.format('proxy')}", "docker inspect -f {{.State.Running}} proxy1"]


def drained(container: str) -> list[str]:
    """The drain time, then the container's connections read until 3 samples in a row show none open."""
    sample = [
        f"docker inspect -f {{{{.State.Pid}}}} {container}",
        f"docker exec {container} cat /proc/net/tcp /proc/net/tcp6",
    ]
    return ["sleep 1", *sample, "sleep 0.1", *sample, "sleep 0.1", *sample, "sleep 0.1", *sample]


RETIRE_OLD = [*drained("old1"), "docker stop old1", "docker rm old1"]

SEQUENCES = {
    "ok": [*START, *HEALTH, *ADMIT, *SWITCH, *PROXY_RUNNING, *RETIRE_OLD, "-> switched; .env: 2.0; routing: green"],
    "config-changed": [
        *START,
        *HEALTH,
        *ADMIT,
        *SWITCH,
        f"{COMPOSE} up -d --no-deps proxy",  # its compose or config files changed: compose decides
        f"{COMPOSE} exec -T proxy nginx -t -q",
        f"{COMPOSE} exec -T proxy nginx -s reload",  # before the old containers go
        *RETIRE_OLD,
        "-> switched; .env: 2.0; routing: green",
    ],
    "leftover": [
        WEB_ALL,
        WEB,
        f"{SLOTS} left1 old1",
        *drained("left1"),
        "docker stop left1",
        "docker rm left1",  # in the idle slot, maybe admitted: drained, stopped
        *START[3:],  # then one new container beside the one old, not two
        *HEALTH,
        *ADMIT,
        *SWITCH,
        *PROXY_RUNNING,
        *RETIRE_OLD,
        "-> switched; .env: 2.0; routing: green",
    ],
    "fail-health": [
        *START,
        *HEALTH[:2],
        "docker logs --tail 10 new1",
        "-> failed",
        "docker rm -f new1",  # never reachable: removed at once
        "-> discarded; .env: 1.0; routing: blue",
    ],
    "fail-admit": [
        *START,
        *HEALTH,
        *ADMIT,
        "-> failed",
        *drained("new1"),
        "docker stop new1",
        "docker rm new1",  # it had the service name: drained, stopped gracefully
        "-> discarded; .env: 1.0; routing: blue",
    ],
    "fail-switch": [
        *START,
        *HEALTH,
        *ADMIT,
        *SWITCH,
        f"{COMPOSE} up -d --no-deps proxy",
        "-> failed",
        "flip to blue (back)",  # the proxy goes back first,
        *drained("new1"),
        "docker stop new1",
        "docker rm new1",  # then the new container drains and stops,
        "write VERSION=1.0 to .env",  # and .env names the old version again
        "-> discarded; .env: 1.0; routing: blue",
    ],
}


def test_after_a_killed_deploy_env_names_the_version_the_live_slot_runs():
    result = subprocess.run(
        [sys.executable, str(HARNESS), "env-ahead"],
        env={**os.environ, "PD_ROOT": str(protocol.PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "write VERSION=2.0 to .env",
        WEB,
        f"{SLOTS} old1",
        "write VERSION=1.0 to .env",
        "-> .env: 1.0; routing: blue",
    ]


@pytest.mark.parametrize("scenario", sorted(SEQUENCES))
def test_the_switch_runs_exactly_these_commands(scenario):
    result = subprocess.run(
        [sys.executable, str(HARNESS), scenario],
        env={**os.environ, "PD_ROOT": str(protocol.PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == SEQUENCES[scenario]


def test_the_old_containers_are_never_touched_before_the_flip():
    for scenario, sequence in SEQUENCES.items():
        flip = sequence.index("flip to green") if "flip to green" in sequence else len(sequence)
        assert not [c for c in sequence[:flip] if "old1" in c and not c.startswith("docker inspect ")], scenario
