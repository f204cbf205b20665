"""`inv config.show`: every setting of an environment in effect, and where it came from.

Pure: settings in, rows out. A value from a file names the file (and `defaults` when it
came from `deploy.defaults`); one nobody set is the table's default (pdserver/schema.py);
DEPLOY_* values name the .env file or the environment, and secrets are never shown.
"""

from __future__ import annotations

from collections.abc import Mapping

from pushdeploy.settings import Environment, Settings

from pdserver import schema

SECRET_WORDS = ("WEBHOOK", "SECRET", "PASSWORD", "TOKEN", "PRIVATE", "AGE_KEY")
DERIVED = {"app_dir": "from the project name", "project": "from app and the environment's name"}


def environment_rows(settings: Settings, env: Environment) -> list[tuple[str, str, str]]:
    """(setting, value, where it came from) for each of the environment's settings."""
    names = ["hosts", "project", "app_dir"] + [key.setting for key in schema.KEYS if key.setting and key.yaml]
    rows = []
    for name in dict.fromkeys(names):
        value = getattr(env, name, None)
        if name == "pull":
            value = f"channel {env.pull_channel}, every {env.pull_every}s" if env.pull_channel else ""
        elif name == "registry":  # the password is never a setting (DEPLOY_REGISTRY_PASSWORD)
            ca = f", CA {env.registry_ca}" if env.registry_ca else ""
            value = f"{env.registry_user}@{env.registry_server}{ca}" if env.registry_server else ""
        elif name == "tls":
            t = env.tls
            hsts = f", HSTS {t.hsts}s" if t.hsts else ""
            redirect = ", plain HTTP redirected" if t.redirect else ""
            source = (
                f"ACME for {', '.join(t.domains)} ({t.directory or 'certbot default directory'}, {t.email})"
                if t.mode == "acme"
                else f"certificate {t.certificate}, key {t.key}"
            )
            value = f"{source}, on {t.publish}{redirect}{hsts}" if t.mode != "off" else ""
        elif name == "cron":
            value = [
                f"{j.name}: {' '.join(j.schedule)} {' '.join(j.words)} ({j.policy}, {j.hosts})" for j in env.cron_jobs
            ]
        elif name == "manage_commands":  # their argument patterns: docs/management-commands.md
            value = [command.name for command in env.manage_commands]
        elif name in ("before_switch", "after_switch"):
            value = [" ".join(hook) for hook in value]
        elif name == "files":
            value = [f"{remote} <- {local}" for remote, local in env.files]
        elif name == "hosts":  # where each goes, when an ssh config or jump hosts say more than its name
            value = [_reached(host) for host in env.hosts]
        rows.append((name, shown(value), _where(settings, env.name, name)))
    return rows


def _reached(host) -> str:
    address = host.hostname if host.port == 22 else f"{host.hostname}:{host.port}"
    more = [address] if host.alias else []
    more += [f"via {' > '.join(f'{hop.user}@{hop}' for hop in host.via)}"] if host.via else []
    return f"{host.user}@{host}" + (f" ({', '.join(more)})" if more else "")


def _where(settings: Settings, env: str, name: str) -> str:
    found = settings.sources
    if found is None:
        return "?"
    own = found.setter(("deploy", "environments", env, name))
    if own is not None:
        return found.name_of(("deploy", "environments", env, name))
    if found.setter(("deploy", "defaults", name)) is not None:
        return f"{found.name_of(('deploy', 'defaults', name))} (deploy.defaults)"
    return DERIVED.get(name, "default")


def access_rows(values: Mapping[str, str], dotenv: str, environ: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """The DEPLOY_* values in effect: the environment's over the .env file's; secrets hidden."""
    rows = []
    for name in sorted(values):
        secret = any(word in name for word in SECRET_WORDS)
        value = "(set, not shown)" if secret and values[name] else values[name]
        rows.append((name, value, "environment" if name in environ else dotenv))
    return rows


def shown(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ", ".join(shown(item) for item in value) if value else "(none)"
    return str(value) if value not in ("", None) else "(none)"


def table(rows) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    return "\n".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c}".rstrip() for a, b, c in rows)
