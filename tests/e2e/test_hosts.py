"""Several hosts: the first migrates alone, the others follow without migrating."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import SANDBOX, STAGING_A, STAGING_B, history_lines, inv, served_version

pytestmark = pytest.mark.e2e


def test_two_hosts_deploy_in_two_phases(server):
    # Two names for the sandbox server make a two-host staging: 127.0.0.1:2222 and localhost:2222.
    key = (SANDBOX / "known_hosts").read_text().split()[1:3]
    two_hosts = {
        "INVOKE_DEPLOY_ENVIRONMENTS_STAGING_HOSTS": "127.0.0.1:2222, localhost:2222",
        "DEPLOY_KNOWN_HOSTS": f"[localhost]:2222 {key[0]} {key[1]}",
    }
    start = STAGING_B if served_version("staging") != STAGING_B else STAGING_A
    before = len(history_lines("staging"))
    result = inv("deploy.staging", "--tag", start, "--force", **two_hosts)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "on 2 host(s)" in result.stdout
    first = result.stdout.index("staging 127.0.0.1:2222 | ==> migrate")
    second = result.stdout.index("staging localhost:2222 | ==> preflight")
    assert first < second  # the second host starts only after the first one is done
    records = [json.loads(line) for line in history_lines("staging")[before:]]
    assert [("migrate" in [s["name"] for s in r["steps"]]) for r in records] == [True, False]
    assert served_version("staging") == start
