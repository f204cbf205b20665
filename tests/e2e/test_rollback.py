"""Rollback goes back along what served, and releases marked bad stay out (issue 18, parts
3 and 4), on the sandbox's staging: a rollback returns to the version that served before
the current one took over and marks the one it undid bad; a second rollback never goes
to a release that was rolled back; a deploy of a bad release is refused (65) and changes
nothing until it is marked good or forced; plan, history and status say so."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import STAGING_A, STAGING_B, inv, served_version
from tests.e2e.deployed import ensure

pytestmark = pytest.mark.e2e

A, B, C = STAGING_A, STAGING_B, "c3c3c3c"


def ok(*args: str) -> str:
    result = inv(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_a_rollback_goes_back_along_what_served_and_marks_what_it_undid(server):
    ensure("staging", A)
    for version in (B, C):  # whatever earlier tests left marked
        ok("deploy.mark-good", version, "--env", "staging")
    try:
        ok("deploy.staging", "--tag", B)
        planned = ok("deploy.plan", "--env", "staging", "--rollback")
        assert f"would go back to {A} (now {B})" in planned and f"{A} served before {B} took over" in planned

        rolled = ok("deploy.rollback", "--env", "staging")
        assert f"going back: {A} served before {B} took over" in rolled
        assert served_version("staging") == A

        # B is marked bad by the rollback: a deploy of it is refused before anything changes.
        again = inv("deploy.staging", "--tag", B)
        assert again.returncode == 65, again.stdout + again.stderr
        assert f"{B} is marked bad by " in again.stdout + again.stderr
        assert f"rolled back to {A}" in again.stdout + again.stderr
        assert served_version("staging") == A
        history = ok("deploy.history", "--env", "staging", "--limit", "5")
        assert "BAD: marked bad by " in history

        # The case: 1.0.1 rolled back, 1.0.2 deployed and rolled back: 1.0.0 again, not 1.0.1.
        ok("deploy.staging", "--tag", C)
        rolled = ok("deploy.rollback", "--env", "staging")
        assert f"going back: {A} served before {C} took over" in rolled
        assert served_version("staging") == A
        further = inv("deploy.plan", "--env", "staging", "--rollback")
        assert f"-> {B}" not in further.stdout and f"-> {C}" not in further.stdout  # never a rolled-back release

        status = ok("deploy.status", "--env", "staging")
        assert f"marked bad: {B}" in status and f"marked bad: {C}" in status

        # By hand, with a reason; --force deploys a bad release anyway; mark-good lets it back.
        ok("deploy.mark-bad", A, "--env", "staging", "--reason", "500s on checkout")
        status = ok("deploy.status", "--env", "staging")
        assert f"marked bad: {A} (SERVING NOW: inv deploy.rollback goes back)" in status
        assert ": 500s on checkout" in status
        ok("deploy.mark-good", A, "--env", "staging")
        ok("deploy.staging", "--tag", B, "--force")
        assert served_version("staging") == B
        ok("deploy.mark-good", C, "--env", "staging")
        ok("deploy.staging", "--tag", C)
        assert served_version("staging") == C
    finally:
        for version in (A, B, C):
            inv("deploy.mark-good", version, "--env", "staging")
