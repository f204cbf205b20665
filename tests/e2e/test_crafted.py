"""Requests crafted by someone who holds the deploy key, where features meet: each is
refused with 64 (or 75: busy) and changes nothing on the server."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import history_lines, inv, ssh_raw

pytestmark = pytest.mark.e2e

ETC, STATE = Path("/etc/pushdeploy"), Path("/var/lib/pushdeploy")


@pytest.fixture(scope="module")
def template(server):
    result = inv("server.setup", "--env", "review")
    assert result.returncode == 0, result.stdout + result.stderr


def snapshot(*paths: Path) -> dict:
    return {
        str(p): sorted(str(f.relative_to(p)) for f in p.rglob("*"))
        if p.is_dir()
        else (p.read_bytes() if p.exists() else None)
        for p in paths
    }


@pytest.fixture
def ordinary_review_named(template):
    """An environment of its own named review-9 (settings refuse such a name now; an older
    tool or a hand-written conf may have made one), with its files and state."""
    conf = (
        (ETC / "staging.conf")
        .read_text()
        .replace("/srv/pushdeploy/pixel-staging", "/srv/pushdeploy/own-review-9")
        .replace("PROJECT=pixel-staging", "PROJECT=own-review-9")
    )
    (ETC / "review-9.conf").write_text(conf)
    (ETC / "other.conf").write_text(
        conf.replace("own-review-9", "pixel-review-8")
    )  # an environment using review-8's files
    for path in (Path("/srv/pushdeploy/own-review-9"), Path("/srv/pushdeploy/pixel-review-8"), STATE / "review-9"):
        path.mkdir(parents=True, exist_ok=True)
        (path / "keep").write_text("mine\n")
    yield
    for path in (Path("/srv/pushdeploy/own-review-9"), Path("/srv/pushdeploy/pixel-review-8"), STATE / "review-9"):
        shutil.rmtree(path, ignore_errors=True)
    for name in ("review-9.conf", "other.conf"):
        (ETC / name).unlink(missing_ok=True)


@pytest.mark.parametrize(
    ("command", "says"),
    [
        ("review-down review-9", "'review-9' is an environment of its own"),
        ("review-up review-9 a1a1a1a", "'review-9' is an environment of its own"),
        ("review-up review-8 a1a1a1a", "which the environment 'other' uses"),
        ("review-down review-8", "which the environment 'other' uses"),
    ],
)
def test_review_verbs_reach_only_what_review_up_made(ordinary_review_named, command, says):
    watched = (Path("/srv/pushdeploy/own-review-9"), Path("/srv/pushdeploy/pixel-review-8"), STATE / "review-9", ETC)
    before = snapshot(*watched)
    result = ssh_raw(command, timeout=60)
    assert result.returncode == 64, result.stdout + result.stderr
    assert says in result.stderr
    assert snapshot(*watched) == before


@pytest.mark.parametrize(
    "command",
    [
        "manage review check",
        "plan review a1a1a1a",
        "status review",
        "history review",
        "logs review",
        "maintenance review on",
        "deploy review a1a1a1a",
        "backups review",
        "pull-status review",
    ],
)
def test_no_verb_runs_against_a_template(template, command):
    result = ssh_raw(command, timeout=60)
    assert result.returncode == 64, result.stdout + result.stderr
    assert "'review' is a review template, not an environment" in result.stderr
    assert not Path("/srv/pushdeploy/pixel-review/maintenance/on").exists()


def test_maintenance_waits_for_no_one_while_the_environment_is_held(server):
    """A restore holds staging (its data unscrubbed until it is done): the deploy account
    cannot switch maintenance off under it, nor on."""
    lock, info = STATE / "staging/lock", STATE / "staging/lock.info"
    flag = Path("/srv/pushdeploy/pixel-staging/maintenance/on")
    assert ssh_raw("maintenance staging on").returncode == 0
    try:
        holder = subprocess.Popen(
            [
                "flock",
                str(lock),
                "sh",
                "-c",
                f"echo 'restore-1 restore of staging by admin in progress since now' >{info}; sleep 8; : >{info}",
            ]
        )
        try:
            deadline = time.monotonic() + 5
            while not info.read_text().strip() and time.monotonic() < deadline:
                time.sleep(0.05)
            result = ssh_raw("maintenance staging off")
            assert result.returncode == 75, result.stdout + result.stderr
            assert "busy: restore of staging by admin" in result.stderr
            assert flag.exists(), "maintenance stays on while the restore holds staging"
        finally:
            holder.wait(timeout=20)
    finally:
        assert ssh_raw("maintenance staging off").returncode == 0
    assert not flag.exists()


def test_an_order_far_ahead_of_the_server_clock_is_refused(server):
    before = history_lines("staging")
    order_file = STATE / "staging/order"
    stored = order_file.read_bytes() if order_file.exists() else None
    result = ssh_raw("deploy staging a1a1a1a --order=9999999999 --force")
    assert result.returncode == 64 and "more than a day ahead" in result.stderr
    assert (order_file.read_bytes() if order_file.exists() else None) == stored
    assert history_lines("staging") == before


@pytest.mark.parametrize(
    ("command", "says"),
    [
        ("   ", "refused: no command given"),
        ("manage staging dumpdata", "can never run"),
        ("manage staging loaddata x", "can never run"),
        ("manage staging flush --noinput", "can never run"),
        ("manage staging diffsettings", "can never run"),
        ("manage staging runserver", "can never run"),
        ("manage staging showmigrations --settings=pixel.evil", "does not accept the argument"),
        ("manage staging showmigrations --sett=pixel.evil", "does not accept the argument"),
        ("manage staging showmigrations --pythonpath=tmp", "does not accept the argument"),
    ],
)
def test_malformed_or_forbidden_requests_are_64(server, command, says):
    before = history_lines("staging")
    result = ssh_raw(command)
    assert result.returncode == 64, result.stdout + result.stderr
    assert says in result.stderr
    assert "one-off container" not in result.stderr
    assert history_lines("staging") == before
