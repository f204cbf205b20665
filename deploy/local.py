"""What this machine and project provide: project files, git facts, public keys."""

from __future__ import annotations

import subprocess
from pathlib import Path

from deploy.settings import ConfigError, Environment, Settings


def app_files(settings: Settings, env: Environment) -> dict[str, bytes]:
    """The files server.setup installs in app_dir, keyed by their path there."""
    files = {}
    for remote, local in env.files:
        path = settings.root / local
        if not path.is_file():
            raise ConfigError(
                "invoke.yaml",
                f"deploy.environments.{env.name}.files.{remote}",
                f"{local} does not exist in the project",
            )
        files[remote] = path.read_bytes()
    return files


def server_dotenv(settings: Settings, env: Environment) -> bytes | None:
    if not env.server_env:
        return None
    path = settings.root / Path(env.server_env).expanduser()
    if not path.is_file():
        raise ConfigError("invoke.yaml", f"deploy.environments.{env.name}.server_env", f"{path} does not exist")
    return path.read_bytes()


def public_keys(
    value: str, setting: str = "DEPLOY_CI_PUBLIC_KEY", source: str = ".env", root: Path | None = None
) -> str:
    """A public key setting: the key line(s), or a path to a .pub file (relative to root, if given)."""
    if value and not value.lstrip().startswith(("ssh-", "ecdsa-", "sk-")):
        path = Path(value).expanduser()
        if root is not None and not path.is_absolute():
            path = root / path
        if not path.is_file():
            raise ConfigError(source, setting, f"{value} is neither a public key nor an existing file")
        return path.read_text()
    return value


def named_public_keys(settings, values) -> dict[str, str]:
    """Each named deploy key's public key: DEPLOY_KEY_<NAME>_PUBLIC_KEY (.env), else invoke.yaml's public_key."""
    named = {}
    for key in settings.keys:
        if values.get(key.env_var):
            named[key.name] = public_keys(values[key.env_var], key.env_var)
        else:
            named[key.name] = public_keys(
                key.public_key, f"deploy.keys.{key.name}.public_key", "invoke.yaml", settings.root
            )
    return named


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def git_head() -> str | None:
    return _git("rev-parse", "HEAD")


def commit_time(version: str) -> str | None:
    """The commit time of a build tagged with its commit, for ordering staging deploys."""
    return _git("show", "-s", "--format=%ct", f"{version}^{{commit}}")


def git_user() -> str | None:
    return _git("config", "user.email") or _git("config", "user.name")
