"""What this machine and project provide: project files, git facts, public keys."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pushdeploy import registry
from pushdeploy.settings import ConfigError, Environment, Settings


def app_files(settings: Settings, env: Environment) -> dict[str, bytes]:
    """The files server.setup installs in app_dir, keyed by their path there."""
    files = {}
    for remote, local in env.files:
        key = ("deploy", "environments", env.name, "files", remote)  # a file's name has dots: parts, not a dotted key
        root = settings.root_of(key, ("deploy", "defaults", "files", remote))
        path = root / local
        if not path.is_file():
            raise ConfigError(settings.name_of(key), ".".join(key), f"{local} does not exist (in {root})")
        files[remote] = path.read_bytes()
    return files


def server_dotenv(settings: Settings, env: Environment) -> bytes | None:
    if not env.server_env:
        return None
    key = f"deploy.environments.{env.name}.server_env"
    path = settings.root_of(key, "deploy.defaults.server_env") / Path(env.server_env).expanduser()
    if not path.is_file():
        raise ConfigError(settings.name_of(key), key, f"{path} does not exist")
    return path.read_bytes()


def registry_ca(settings: Settings, env: Environment) -> bytes | None:
    """The CA certificate of the environment's registry (registry.ca), or None."""
    if not env.registry_ca:
        return None
    key = f"deploy.environments.{env.name}.registry"
    path = settings.root_of(key, "deploy.defaults.registry") / Path(env.registry_ca).expanduser()
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(settings.name_of(key), f"{key}.ca", f"cannot read {path}: {error.strerror}") from None
    problem = registry.ca_problem(data)
    if problem:
        raise ConfigError(settings.name_of(key), f"{key}.ca", f"{path} {problem}")
    return data


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
            setting = f"deploy.keys.{key.name}.public_key"
            named[key.name] = public_keys(key.public_key, setting, settings.name_of(setting), settings.root_of(setting))
    return named


def _git(*args: str, cwd: Path | None = None) -> str | None:
    """git's answer in the project's folder (its repository and identity, wherever inv runs)."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=True, cwd=cwd)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def git_head(root: Path | None = None) -> str | None:
    return _git("rev-parse", "HEAD", cwd=root)


def commit_time(version: str, root: Path | None = None) -> str | None:
    """The commit time of a build tagged with its commit, for ordering staging deploys."""
    return _git("show", "-s", "--format=%ct", f"{version}^{{commit}}", cwd=root)


def git_user(root: Path | None = None) -> str | None:
    return _git("config", "user.email", cwd=root) or _git("config", "user.name", cwd=root)
