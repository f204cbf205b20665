"""Pull mode on the sandbox: CI only moves a channel tag; the server's agent deploys it.

The sandbox has no systemd as PID 1, so server.setup installs the agent as a cron
entry; no cron daemon runs here, so the tests run the entry's command themselves,
exactly as cron would (`sh -c` with the line's command). The choice between timer
and cron is unit-tested (tests/unit/test_pull.py).
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    STAGING_A,
    STAGING_B,
    history_lines,
    inv,
    served_version,
    server_env_file,
    ssh_raw,
    tool_env,
    wait_for_version,
)
from tests.e2e.deployed import ensure

pytestmark = pytest.mark.e2e

CHANNEL = "staging-approved"
REPO = "127.0.0.1:5000/pixel"
CRON_FILE = Path("/etc/cron.d/pushdeploy-pull-staging")
PULL_DIR = Path("/var/lib/pushdeploy/staging/pull")
BAD = "1.3.0-badmigration"  # fails at migrate, fast


def docker(*args: str) -> str:
    result = subprocess.run(["docker", *args], env=tool_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def move_channel(source_tag: str) -> str:
    """What CI does in pull mode: point the channel tag at an image it built. Returns the registry's digest."""
    docker("pull", "-q", f"{REPO}:{source_tag}")
    docker("tag", f"{REPO}:{source_tag}", f"{REPO}:{CHANNEL}")
    docker("push", "-q", f"{REPO}:{CHANNEL}")
    return registry_digest(CHANNEL)


def registry_digest(tag: str) -> str:
    """The tag's digest as the registry itself reports it (HTTP API v2), independent of the agent."""
    request = urllib.request.Request(
        f"http://{REPO.split('/')[0]}/v2/pixel/manifests/{tag}",
        method="HEAD",
        headers={
            "Accept": "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["Docker-Content-Digest"]


def pinned(digest: str) -> str:
    return f"{CHANNEL}-{digest.split(':')[1][:12]}"


def run_agent() -> str:
    """The agent's scheduled command, run as cron would run it; returns what it logged this time."""
    line = next(line for line in CRON_FILE.read_text().splitlines() if line.startswith("*/"))
    command = line.split(" root ", 1)[1]
    log = PULL_DIR / "agent.log"
    before = log.stat().st_size if log.exists() else 0
    result = subprocess.run(
        ["sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    with log.open("rb") as stream:
        stream.seek(before)
        output = stream.read().decode(errors="replace")
    print(f"$ {command} -> {result.returncode}\n{output}")
    return output


def deployed_version() -> str:
    return next(line for line in server_env_file("staging").decode().splitlines() if line.startswith("VERSION=")).split(
        "=", 1
    )[1]


def records(after: int) -> list[dict]:
    return [json.loads(line) for line in history_lines("staging")[after:]]


@pytest.fixture(scope="module")
def pull_config(server, tmp_path_factory):
    """staging in pull mode (a runtime config over invoke.yaml), the agent installed; push mode again afterwards."""
    config = tmp_path_factory.mktemp("pull") / "pull.yaml"
    config.write_text(f"deploy:\n  environments:\n    staging:\n      pull: {{channel: {CHANNEL}, every: 60}}\n")
    ensure("staging", STAGING_A)
    for stale in ("checks.jsonl",):  # a fresh agent: no checks from an earlier run
        (PULL_DIR / stale).unlink(missing_ok=True)
    setup = inv("-f", str(config), "server.setup", "--env", "staging")
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert re.search(
        r"\| agent +pull agent of staging: cron \(/etc/cron\.d/pushdeploy-pull-staging, no systemd as PID 1\), every 1 min, channel staging-approved$",
        setup.stdout,
        re.M,
    )
    yield str(config)
    back = inv("server.setup", "--env", "staging")
    assert back.returncode == 0, back.stdout + back.stderr
    assert (
        "removed the pull agent of staging (/etc/cron.d/pushdeploy-pull-staging): staging is deployed by push"
        in back.stdout
    )
    assert not CRON_FILE.exists()
    ensure("staging", STAGING_A)


def test_setup_installs_a_cron_entry_and_check_reports_it(pull_config):
    assert CRON_FILE.stat().st_mode & 0o777 == 0o644 and CRON_FILE.stat().st_uid == 0
    again = inv("-f", pull_config, "server.setup", "--env", "staging")
    assert again.returncode == 0 and "nothing changed" in again.stdout, again.stdout + again.stderr
    assert re.search(
        r"^\*/1 \* \* \* \* root /opt/pushdeploy/bin/deploy pull staging >>/var/lib/pushdeploy/staging/pull/agent\.log 2>&1$",
        CRON_FILE.read_text(),
        re.M,
    )
    check = inv("-f", pull_config, "server.check", "--env", "staging")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "| pull: channel staging-approved every 60s, agent: cron /etc/cron.d/pushdeploy-pull-staging" in check.stdout
    # Without the pull setting the installed settings differ: the client says so.
    assert inv("deploy.pull-status", "--env", "staging").returncode == 78


def test_the_agent_deploys_the_channel_pinned_by_digest_and_only_when_it_moves(pull_config):
    before = len(history_lines("staging"))
    digest_b = move_channel(STAGING_B)

    out = run_agent()
    assert f"{REPO}:{CHANNEL} moved to {digest_b}: deploying it as {pinned(digest_b)}" in out
    assert re.search(r"^ ok switch \([0-9.]+s\)$", out, re.M), "the same deploy run: slots, switch"
    assert f"deployed: deployed {pinned(digest_b)} ({REPO}@{digest_b})" in out
    assert wait_for_version("staging", STAGING_B) == STAGING_B
    (record,) = records(before)
    assert (record["version"], record["digest"], record["by"], record["outcome"]) == (
        pinned(digest_b),
        digest_b,
        f"pull:{CHANNEL}",
        "ok",
    )

    # Nothing moved: nothing deployed.
    assert f"unchanged: {REPO}:{CHANNEL} is still {digest_b}" in run_agent()
    assert len(history_lines("staging")) == before + 1

    # CI moves the channel: the next check deploys the new image; history shows both digests.
    digest_c = move_channel("c3c3c3c")
    assert digest_c != digest_b
    run_agent()
    assert wait_for_version("staging", "c3c3c3c") == "c3c3c3c"
    assert [(r["version"], r["digest"]) for r in records(before)] == [
        (pinned(digest_b), digest_b),
        (pinned(digest_c), digest_c),
    ]
    table = inv("-f", pull_config, "deploy.history", "--env", "staging", "--limit", "2")
    assert table.returncode == 0
    assert digest_b[:19] in table.stdout and digest_c[:19] in table.stdout

    status = inv("-f", pull_config, "deploy.pull-status", "--env", "staging")
    assert status.returncode == 0, status.stdout + status.stderr
    for line in (
        "mode: pull",
        f"channel: {CHANNEL}",
        "every: 60s",
        "agent: cron /etc/cron.d/pushdeploy-pull-staging",
        f"version: {pinned(digest_c)}",
    ):
        assert f"staging 127.0.0.1:2222 | {line}" in status.stdout, line
    assert re.search(rf"\| last check: \S+ deployed {pinned(digest_c)}: deployed ", status.stdout)

    # A rollback goes back to the image pinned by digest, though the tag has moved
    # on and the local tag is gone: the image comes back by its digest.
    docker("rmi", f"{REPO}:{pinned(digest_b)}")
    back = inv("-f", pull_config, "deploy.rollback", "--env", "staging")
    assert back.returncode == 0, back.stdout + back.stderr
    assert f"pinned: {REPO}@{digest_b}" in back.stdout
    assert wait_for_version("staging", STAGING_B) == STAGING_B
    # ... and the agent does not undo it: the channel has not moved since it deployed it.
    assert f"unchanged: {REPO}:{CHANNEL} is still {digest_c}" in run_agent()
    assert served_version("staging") == STAGING_B


def test_a_bad_image_on_the_channel_fails_like_a_pushed_one_and_is_not_retried(pull_config):
    serving, running = served_version("staging"), deployed_version()
    before = len(history_lines("staging"))
    digest = move_channel(BAD)
    out = run_agent()
    assert f"failed: the deploy of {pinned(digest)} failed (exit 1): {running} serves" in out
    assert served_version("staging") == serving and deployed_version() == running
    (record,) = records(before)
    assert (record["outcome"], record["failed_step"], record["digest"]) == ("failed", "migrate", digest)
    assert f"unchanged: {REPO}:{CHANNEL} is still {digest}" in run_agent(), (
        "a failed image is not deployed again every minute"
    )
    assert len(history_lines("staging")) == before + 1


def test_the_agent_never_deploys_a_release_marked_bad(pull_config):
    """A release marked bad (by hand here; a rollback marks the one it undoes) is skipped at
    every check while the channel points to it, and deployed once it is marked good."""
    running = deployed_version()
    digest = move_channel(STAGING_A)
    version = pinned(digest)
    marked = inv("-f", pull_config, "deploy.mark-bad", version, "--env", "staging", "--reason", "broken login")
    assert marked.returncode == 0, marked.stdout + marked.stderr
    try:
        for _ in range(2):
            out = run_agent()
            assert f"bad: {REPO}:{CHANNEL} is {digest}, {version}, marked bad by " in out
            assert ": broken login: not deployed" in out
            assert deployed_version() == running
    finally:
        good = inv("-f", pull_config, "deploy.mark-good", version, "--env", "staging")
        assert good.returncode == 0, good.stdout + good.stderr
    assert f"deploying it as {version}" in run_agent()
    assert wait_for_version("staging", STAGING_A) == STAGING_A


def test_the_agents_run_ids_cannot_be_guessed(pull_config):
    """A deploy sent earlier with --id=<T>-pull would make the agent's run at T "already ran"."""
    runs = [json.loads(line)["run"] for line in history_lines("staging") if json.loads(line)["by"].startswith("pull:")][
        -2:
    ]
    assert len(runs) == 2, "the tests above ran the agent's deploys"
    assert all(re.fullmatch(r"[0-9]{8}T[0-9]{6}Z-pull-[0-9a-f]{12}", run) for run in runs), runs
    assert len(set(runs)) == len(runs)


def test_only_root_runs_the_agent(pull_config):
    refused = ssh_raw("pull staging")
    assert refused.returncode == 64 and "unknown command 'pull'" in refused.stderr
    # Even through sudo, the deploy account cannot start the agent's run.
    sudo = subprocess.run(
        ["sudo", "-u", "pd-deploy", "sudo", "-n", "/opt/pushdeploy/bin/deploy", "pull", "staging"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert sudo.returncode == 64, sudo.stdout + sudo.stderr
    assert "pull runs as root from the pull agent's timer or cron entry" in sudo.stderr
