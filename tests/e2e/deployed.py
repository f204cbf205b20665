"""Putting the sandbox's environments in a known state before a test, and reading it back."""

from __future__ import annotations

from tests.e2e.conftest import compose, inv, served_version, wait_for_version


def ensure(env: str, version: str) -> None:
    """env serves version (deployed with --force if it does not already)."""
    task = "deploy.staging" if env == "staging" else "deploy.production"
    if served_version(env) != version:
        result = inv(task, "--tag", version, "--force")
        assert result.returncode == 0, result.stdout + result.stderr
    assert wait_for_version(env, version) == version


def web_containers(env: str) -> list[str]:
    return compose(env, "ps", "-q", "web").stdout.split()
