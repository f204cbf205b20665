"""teardown ENV [--volumes] (the admin connection only): the environment removed from
this host, never while a deploy of it runs.

What goes: its containers and networks (the strategy says how: compose down, or the
swarm stack), its pull agent, APP_DIR (the compose files, nginx config and the .env with
its secrets), /etc/pushdeploy/ENV.conf and ENV.webhooks, its state (history, logs, the
lock). Its volumes (the database's data) and its backups stay unless --volumes. Once no
environment is left on the host, the deploy account's sudoers rule and the keys' scopes
go too: the account can then run nothing. The user and /opt/pushdeploy stay (harmless,
and server.setup reuses them).
"""

from __future__ import annotations

import glob
import os
import shutil

from . import acme, agent, cron, facts
from . import env as envs
from .install import SUDOERS_MARK
from .lock import hold, now_iso
from .request import Refused, Request
from .result import Result
from .verbs import CRON_DIR, SYSTEMD_DIR, review_instances

SUDOERS_DIR = "/etc/sudoers.d"


def teardown(request: Request) -> Result:
    env = envs.load(request.env)
    volumes = bool(request.option("volumes"))
    if env["REVIEW_TEMPLATE"] == "yes" and review_instances(env.name):
        live = " ".join(review_instances(env.name))
        raise Refused(
            f"{env.name} is the template of live review environments ({live}): take them down first (inv review.prune)"
        )
    why = overlap(env, others(env.name))
    if why:
        raise Refused(f"refusing to remove {env.name}: {why}; nothing was changed", 1)
    os.makedirs(env.state_dir, mode=0o700, exist_ok=True)
    lock = hold(
        env.state_dir,
        "teardown",
        f"teardown of {env.name}",
        str(request.option("by", "")),
        f"{env.name} stays as it is",
    )
    try:
        print(f"{now_iso()} teardown of {env.name}{' (volumes and backups too)' if volumes else ''}", flush=True)
        gone = remove(env, volumes)
    finally:
        if os.path.exists(lock.info):
            lock.release()  # a teardown that failed half way: the lock named free again
        else:
            lock.close()  # its state went with it
    for line in gone:
        print(f"removed {line}" if not line.startswith("kept") else line, flush=True)
    return Result(0, {"removed": len(gone), "volumes": "yes" if volumes else "no"})


# APP_DIR is removed whole, as root: never a folder that holds more than this environment.
SHARED = ("/", "/srv", "/opt", "/home", "/var", "/var/lib", "/etc", "/root", "/usr", "/tmp", "/srv/pushdeploy")


def others(name: str) -> list:
    """The other environments set up on this host: (name, APP_DIR, PROJECT)."""
    found = []
    for path in sorted(glob.glob(os.path.join(facts.ETC, "*.conf"))):
        other = os.path.basename(path)[: -len(".conf")]
        if other != name:
            try:
                loaded = envs.load(other)
            except Refused:
                continue
            found.append((other, loaded.app_dir, loaded["PROJECT"]))
    return found


def overlap(env: envs.Env, other_envs: list):
    """Why removing ENV would reach another environment or a shared folder, or None."""
    app_dir = os.path.normpath(env.app_dir)
    if app_dir in SHARED or app_dir.count("/") < 2:
        return f"its app_dir {app_dir} is a shared folder, not one of its own"
    for name, other_dir, project in other_envs:
        other_dir = os.path.normpath(other_dir)
        if project == env["PROJECT"]:
            return f"{name} runs as the same compose project {project}"
        if other_dir == app_dir or other_dir.startswith(app_dir + "/") or app_dir.startswith(other_dir + "/"):
            return f"its app_dir {app_dir} and {name}'s {other_dir} overlap"
    return None


def remove(env: envs.Env, volumes: bool) -> list:
    from .pipeline import strategy_for

    gone = strategy_for(env).teardown(volumes)  # refuses (nothing else removed) if docker does not answer
    gone += [f"pull agent ({what})" for what in agent.remove(agent.unit(env.name), SYSTEMD_DIR, CRON_DIR)]
    gone += [f"certificate renewal ({what})" for what in agent.remove(acme.unit(env.name), SYSTEMD_DIR, CRON_DIR)]
    for name in ["", *sorted(cron.installed_timers(env.name, SYSTEMD_DIR))]:
        gone += [f"cron ({what})" for what in agent.remove(cron.unit(env.name, name), SYSTEMD_DIR, CRON_DIR)]
    webhooks, login = os.path.join(facts.ETC, f"{env.name}.webhooks"), envs.docker_config(env.conf_path)
    for path in (env.app_dir, env.conf_path, webhooks, login):
        if os.path.isdir(path):
            shutil.rmtree(path)
            gone.append(path)
        elif os.path.exists(path):
            os.unlink(path)
            gone.append(path)
    backups = os.path.join(env.state_dir, "backups")
    keep = [] if volumes else [name for name in ("backups",) if os.path.isdir(backups) and os.listdir(backups)]
    for name in sorted(os.listdir(env.state_dir)):
        if name not in keep and name != "lock":
            path = os.path.join(env.state_dir, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
    gone.append(f"{env.state_dir} (history, logs)")
    if keep:
        gone.append(f"kept the database backups in {backups} (--volumes removes them)")
    else:
        shutil.rmtree(env.state_dir, ignore_errors=True)
    return gone + last_one_out()


def last_one_out() -> list:
    """With no environment left here, the deploy account loses its sudo rule (the file
    server.setup wrote, by its first line; an admin's own rule is left alone) and its keys'
    scopes: it can run nothing."""
    if glob.glob(os.path.join(facts.ETC, "*.conf")):
        return []
    ours = []
    for path in sorted(glob.glob(os.path.join(SUDOERS_DIR, "pushdeploy-*"))):
        with open(path, errors="replace") as file:
            if file.readline().startswith(SUDOERS_MARK):
                ours.append(path)
    gone = []
    for path in ours + [facts.KEYS_FILE]:
        if os.path.exists(path):
            os.unlink(path)
            gone.append(f"{path} (no environment is left on this host)")
    return gone
