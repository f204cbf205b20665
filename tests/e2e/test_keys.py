"""Least privilege per deploy key: each named key reaches only its environments and verbs,
through the real sshd, entrypoint and sudo; the unnamed CI key keeps its full scope."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import STAGING_A, history_lines, inv, served_version, ssh_raw
from tests.e2e.scoped_keys import scoped_keys, ssh_as

pytestmark = pytest.mark.e2e

SCOPES = {
    "ci-staging": {
        "environments": ["staging"],
        "verbs": ["deploy", "rollback", "status", "history", "logs", "plan", "check", "version"],
    },
    "ci-review": {"environments": ["review"], "verbs": ["review-up", "review-down", "review-list"]},
}
MAINTENANCE = Path("/srv/pushdeploy/pixel-production/maintenance/on")
AUTHORIZED = Path("/home/pd-deploy/.ssh/authorized_keys")


@pytest.fixture(scope="module")
def keys(server):
    with scoped_keys(SCOPES, ("staging", "production")) as declared:
        yield declared
    assert "--key=" not in AUTHORIZED.read_text(), "set up again without named keys, their lines are gone"
    assert not Path("/etc/pushdeploy/keys.json").exists()


def test_setup_writes_one_line_per_named_key_and_their_scopes(keys):
    lines = AUTHORIZED.read_text().splitlines()
    assert sum('command="/opt/pushdeploy/bin/entrypoint --key=ci-staging" ssh-ed25519 ' in line for line in lines) == 1
    assert sum('command="/opt/pushdeploy/bin/entrypoint --key=ci-review" ssh-ed25519 ' in line for line in lines) == 1
    assert (
        sum(line.startswith('restrict,command="/opt/pushdeploy/bin/entrypoint" ') for line in lines) == 1
    )  # the unnamed CI key
    assert all(line.startswith("restrict,") for line in lines)
    scopes = Path("/etc/pushdeploy/keys.json")
    assert scopes.stat().st_uid == 0 and scopes.stat().st_mode & 0o022 == 0


@pytest.mark.parametrize(
    ("key", "command", "says"),
    [
        ("ci-review", "maintenance production on", "may not run maintenance"),
        ("ci-review", "deploy production 1.0.0 --force", "may not run deploy"),
        ("ci-review", "rollback production --to=1.0.0", "may not run rollback"),
        ("ci-review", "status staging", "may not run status"),
        ("ci-review", "manage production check", "may not run manage"),
        ("ci-review", "review-up qa-1 a1a1a1a", "may not reach review environments of 'qa'"),
        ("ci-staging", "deploy production 1.0.0", "may not reach 'production'"),
        ("ci-staging", "maintenance staging on", "may not run maintenance"),
        ("ci-staging", "status production", "may not reach 'production'"),
        ("ci-staging", "status staging --key=production", "unknown option '--key=production'"),
        ("ci-staging", "db-dump staging", "unknown command 'db-dump'"),
    ],
)
def test_a_key_outside_its_scope_is_refused_and_changes_nothing(keys, key, command, says):
    _, private = keys
    before = (history_lines("staging"), history_lines("production"), MAINTENANCE.exists())
    result = ssh_as(private[key], command)
    assert result.returncode == 64, result.stdout + result.stderr
    assert says in result.stderr and result.stdout == ""
    assert (history_lines("staging"), history_lines("production"), MAINTENANCE.exists()) == before


def test_a_staging_key_deploys_staging_through_the_tool(keys):
    config, private = keys
    result = inv("-f", str(config), "deploy.staging", "--tag", STAGING_A, DEPLOY_SSH_KEY=str(private["ci-staging"]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert served_version("staging") == STAGING_A
    assert (
        inv(
            "-f", str(config), "deploy.status", "--env", "staging", DEPLOY_SSH_KEY=str(private["ci-staging"])
        ).returncode
        == 0
    )
    refused = inv("-f", str(config), "deploy.status", "--env", "production", DEPLOY_SSH_KEY=str(private["ci-staging"]))
    assert refused.returncode != 0 and "may not reach 'production'" in refused.stdout + refused.stderr


def test_the_unnamed_key_keeps_every_verb_everywhere(keys):
    assert ssh_raw("status production").returncode == 0
    assert ssh_as(keys[1]["ci-staging"], "version").stdout.strip() == ssh_raw("version").stdout.strip()
