"""secrets.*: an environment's secrets, kept encrypted in the repository (age) or taken from
a command, and pushed to the servers' .env over the admin connection. Values are never
printed: names only."""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from pathlib import Path

from invoke import Collection

from pushdeploy import envsecrets, local, plan, protocol
from pushdeploy.output import say
from pushdeploy.tasks.common import admin_connect, done, fail_on_errors, load_settings, require_pinned, task

ENV_HELP = "The environment (staging, production, ...)."


def _age(*args: str, data: bytes = b"") -> bytes:
    try:
        found = subprocess.run(["age", *args], input=data, capture_output=True, check=False)
    except FileNotFoundError:
        raise plan.BadRequest("age is not installed here: `apt-get install age` (Debian), then try again") from None
    if found.returncode != 0:
        # age's own message names the file or the identity, never the plaintext
        raise plan.BadRequest(f"age failed: {found.stderr.decode(errors='replace').strip().splitlines()[-1:]}")
    return found.stdout


def _secrets_path(settings, environment) -> Path:
    return settings.root_of("deploy", "environments", environment.name, "secrets_file") / environment.secrets_file


def _decrypt(settings, environment) -> str:
    path = _secrets_path(settings, environment)
    if not path.is_file():
        raise plan.BadRequest(f"{path} does not exist: create it with `inv secrets.edit --env {environment.name}`")
    access = settings.access
    if access.age_identity:
        return _age("--decrypt", "--identity", access.age_identity, str(path)).decode()
    if access.age_key:
        with tempfile.TemporaryDirectory(prefix="pd-age-") as folder:
            identity = Path(folder) / "identity"
            identity.touch(mode=0o600)
            identity.write_text(access.age_key.strip() + "\n")
            return _age("--decrypt", "--identity", str(identity), str(path)).decode()
    raise plan.BadRequest(
        "no age identity to decrypt with: set DEPLOY_AGE_IDENTITY (an identity file) or DEPLOY_AGE_KEY (in CI's secrets)"
    )


def values_of(settings, environment) -> dict[str, str]:
    """The environment's secrets: secrets_command's output, else the decrypted secrets file."""
    try:
        return _values(settings, environment)
    except envsecrets.BadSecrets as error:
        raise plan.BadRequest(str(error)) from None


def _values(settings, environment) -> dict[str, str]:
    command = environment.secrets_command
    if command:
        try:
            found = subprocess.run(
                shlex.split(command), cwd=settings.root, capture_output=True, check=False, stdin=subprocess.DEVNULL
            )
        except (OSError, ValueError) as error:
            raise plan.BadRequest(f"secrets_command could not start: {error}") from None
        if found.returncode != 0:  # its output may hold secrets: not shown
            raise plan.BadRequest(
                f"secrets_command failed (exit {found.returncode}); run it yourself to see why (its output is not shown here)"
            )
        return envsecrets.parse(found.stdout.decode(errors="replace"), "secrets_command's output")
    return envsecrets.parse(_decrypt(settings, environment), str(_secrets_path(settings, environment).name))


@task(help={"env": ENV_HELP})
def list_(c, env="staging"):
    """List the names of an environment's secrets (never their values).

    From secrets_command if the environment has one, else from secrets/ENV.env.age
    decrypted in memory (DEPLOY_AGE_IDENTITY or DEPLOY_AGE_KEY).
    """
    with fail_on_errors():
        settings = load_settings(c)
        environment = settings.environment(env)
        values = values_of(settings, environment)
    for name in sorted(values):
        say(name)
    say(f"{len(values)} secret(s) for {env}")


@task(help={"env": ENV_HELP})
def edit(c, env="staging"):
    """Edit an environment's encrypted secrets file in $EDITOR, then encrypt it again.

    secrets/ENV.env.age (secrets_file) is decrypted into a private temporary
    folder, opened in $EDITOR (KEY=VALUE lines), checked, encrypted to
    secrets_recipients and written back; the plaintext is removed whatever
    happens. Prints which names were added, changed or removed.
    """
    with fail_on_errors():
        settings = load_settings(c)
        environment = settings.environment(env)
        if not environment.secrets_recipients:
            raise plan.BadRequest(
                f"{env} has no secrets_recipients (age public keys) to encrypt to: list them in invoke.yaml"
            )
        path = _secrets_path(settings, environment)
        before_text = _decrypt(settings, environment) if path.is_file() else "# KEY=VALUE, one a line\n"
        try:
            before = envsecrets.parse(before_text, path.name)
        except envsecrets.BadSecrets as error:
            raise plan.BadRequest(str(error)) from None
        with tempfile.TemporaryDirectory(prefix="pd-secrets-") as folder:
            plain = Path(folder) / f"{env}.env"
            plain.touch(mode=0o600)
            plain.write_text(before_text)
            editor = shlex.split(os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi")
            if subprocess.run([*editor, str(plain)], check=False).returncode != 0:
                raise plan.BadRequest("the editor failed: nothing was changed")
            text = plain.read_text()
            try:
                after = envsecrets.parse(text, f"{env}.env (as edited)")
            except envsecrets.BadSecrets as error:
                raise plan.BadRequest(f"{error}: nothing was changed") from None
            recipients = [word for r in environment.secrets_recipients for word in ("--recipient", r)]
            encrypted = _age("--encrypt", *recipients, data=text.encode())
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(encrypted)
        tmp.replace(path)
    added, changed, removed = envsecrets.diff(before, after)
    say(
        f"{path}: added {' '.join(added) or '-'}; changed {' '.join(changed) or '-'}; removed {' '.join(removed) or '-'}"
    )
    say(f"commit it, then `inv secrets.push --env {env}` and `inv deploy.restart --env {env}`")


@task(help={"env": ENV_HELP})
def push(c, env="staging"):
    """Write an environment's secrets into the .env of each of its hosts (admin connection).

    The values go in memory over SSH to `bin/deploy env-push` (as root), which
    checks them again and rewrites .env atomically (0600), keeping every other
    line (VERSION, IMAGE, the first setup's values); names pushed before and
    gone now are removed. Prints, per host, which names were added, changed or
    removed, never a value. Running containers keep the old values until
    `inv deploy.restart`.
    """
    from pushdeploy import remote

    with fail_on_errors():
        settings = load_settings(c)
        environment = settings.environment(env)
        data = envsecrets.lines(values_of(settings, environment)).encode()
        by, _ = plan.actor(os.environ, local.git_user(settings.root))
        request = protocol.command("env-push", environment.name, by=by)
        access = settings.access
        require_pinned(settings, environment)

        def work(host, out):
            with admin_connect(settings, host) as connection:
                command = plan.admin_command(f"{protocol.DEPLOY_BIN} {request}", access.as_root(host))
                return remote.run(connection, command, out, data=data)

        results = remote.on_hosts(environment.hosts, work, label=lambda h: f"{env} {h}")
    done(results, f"secrets.push of {env}")


namespace = Collection("secrets", edit, push)
namespace.add_task(list_, name="list")
