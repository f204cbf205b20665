"""Named deploy keys for the e2e tests: real key pairs, a runtime config that declares
them (invoke -f), server.setup with them, and server.setup without them afterwards."""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path

from tests.e2e.conftest import SANDBOX, inv, ssh_raw

KEYS_DIR = SANDBOX / "keys"


def key_pair(name: str) -> Path:
    """SANDBOX/keys/scoped-NAME (private) and .pub, made once."""
    private = KEYS_DIR / f"scoped-{name}"
    if not private.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@pushdeploy-tests", "-f", str(private)],
            check=True,
        )
    return private


@contextlib.contextmanager
def scoped_keys(scopes: dict[str, dict], environments: tuple[str, ...]):
    """Declare SCOPES (name -> {environments, verbs}) for the project, set ENVIRONMENTS up
    with them; yields (config file, {name: private key}); sets them up again without."""
    private = {name: key_pair(name) for name in scopes}
    keys = {name: {**scope, "public_key": str(private[name].with_suffix(".pub"))} for name, scope in scopes.items()}
    config = KEYS_DIR / "scoped-keys.json"  # JSON is YAML: invoke -f reads it by its extension
    config.write_text(json.dumps({"deploy": {"keys": keys}}))
    try:
        for env in environments:
            result = inv("-f", str(config), "server.setup", "--env", env)
            assert result.returncode == 0, result.stdout + result.stderr
        yield config, private
    finally:
        for env in environments:
            result = inv("server.setup", "--env", env)
            assert result.returncode == 0, result.stdout + result.stderr


def ssh_as(private: Path, command: str, timeout: int = 60) -> subprocess.CompletedProcess:
    """OpenSSH as the deploy account with one of the scoped keys, bypassing the tool."""
    return ssh_raw(command, timeout=timeout, key=private)
