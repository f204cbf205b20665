"""The task list as a user meets it: fast, documented, and errors before any connection."""

import os
import subprocess
import sys

import pytest

from pushdeploy import protocol

ROOT = protocol.PROJECT_ROOT


EMPTY_DOTENV = ROOT / "tests" / "unit" / "empty.env"


def inv(*args, **env):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DEPLOY_", "INVOKE_"))}
    environ.update(env, DEPLOY_DOTENV=str(EMPTY_DOTENV))
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60
    )


def test_listing_tasks_does_not_import_fabric_or_paramiko():
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import tasks"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines()}
    assert not {"fabric", "paramiko"} & imported


def test_every_task_has_a_one_line_help():
    listing = inv("--list").stdout
    for name in (
        "deploy.staging",
        "deploy.production",
        "deploy.to",
        "deploy.rollback",
        "deploy.status",
        "deploy.history",
        "deploy.logs",
        "deploy.maintenance",
        "db.backups",
        "server.setup",
        "server.check",
        "server.trust",
    ):
        line = next(line for line in listing.splitlines() if line.strip().startswith(name + " "))
        assert len(line.split(name, 1)[1].strip()) > 20, name


@pytest.mark.parametrize("task", ["deploy.production", "deploy.staging", "server.setup", "deploy.rollback"])
def test_help_documents_every_option(task):
    text = inv("--help", task).stdout
    assert "Docstring:" in text
    for line in text.split("Options:")[1].splitlines():
        if line.strip().startswith("-"):
            assert len(line.split("  ")[-1].strip()) > 3, line


def test_production_without_a_tag_is_refused_before_connecting():
    result = inv("deploy.production")
    assert result.returncode == 2
    assert "--tag" in result.stderr


def test_invoke_variables_override_the_committed_settings():
    result = inv("deploy.staging", "--tag", "abcdef1", INVOKE_DEPLOY_ENVIRONMENTS_STAGING_HOSTS="root@bad;host")
    assert result.returncode == 2
    assert "invoke.yaml: deploy.environments.staging.hosts[0]: 'root@bad;host' is not user@host[:port]" in result.stderr


def test_a_missing_dotenv_file_is_named():
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOY_")}
    environ["DEPLOY_DOTENV"] = "/nonexistent/deploy.env"
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "deploy.status"], cwd=ROOT, env=environ, capture_output=True, text=True
    )
    assert result.returncode == 2 and "/nonexistent/deploy.env" in result.stderr


@pytest.mark.parametrize(
    "name", ["deploy.staging", "deploy.production", "deploy.to", "deploy.rollback", "deploy.plan", "manage"]
)
def test_hosts_has_no_short_flag_so_dash_h_is_help(name):
    assert "  --hosts=STRING" in inv("--help", name).stdout
    assert "-h STRING" not in inv("--help", name).stdout
    if name not in ("deploy.to", "manage"):  # their first positional (ENV, NAME) would take the -h
        result = inv(name, "-h")
        assert result.returncode == 0 and result.stdout.startswith(f"Usage: inv[oke] [--core-opts] {name}"), (
            result.stderr
        )
