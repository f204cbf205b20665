"""The verbs bin/deploy answers: the small ones here, the others by their own module
(runs: deploy and rollback; review; refresh: db-*; agent: pull). HANDLERS maps each
verb to its handler: a request in, its Result out (exit status and data), or Refused."""

from __future__ import annotations

import collections
import os
import sys
import time

from . import compose, cron, expect, facts, marks, run, runs, tls
from . import env as envs
from .expect import HOME, server_hash
from .lock import hold, now_iso
from .pipeline import strategy_for
from .plan import plan
from .request import Refused, Request, changes_django_setup
from .result import Result
from .status import last_deploy, status


def version(request: Request) -> Result:
    digest = server_hash(HOME)
    print(digest)
    return Result(0, {"server_side": digest})


def history(request: Request) -> Result:
    """The last records, one JSON object a line; a deploy or rollback of a release marked
    bad now carries "bad": who marked it, when and why."""
    import json

    env = envs.load_checked(request)
    try:
        with open(env.history, errors="replace") as file:
            lines = collections.deque(file, maxlen=int(request.option("limit", 20)))
    except FileNotFoundError:
        lines = collections.deque()
    bad = marks.bad(env) if lines else {}
    for line in lines:
        if bad and '"bad"' not in line:
            try:
                record = json.loads(line)
            except ValueError:
                record = {}
            mark = bad.get(record.get("version")) if record.get("kind") in ("deploy", "rollback") else None
            if mark:
                record["bad"] = marks.described(mark)
                line = json.dumps(record, ensure_ascii=False) + "\n"
        sys.stdout.write(line)
    return Result(0, {"records": len(lines), **({"bad": sorted(bad)} if bad else {})})


def backups(request: Request) -> Result:
    env = envs.load_checked(request)
    folder = os.path.join(env.state_dir, "backups")
    if not os.path.isdir(folder):
        print(f"no backups of {env.name} yet")
        return Result(0, {"backups": 0})
    found = []  # newest first: by time to the nanosecond, then by name (names start with the time)
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name.endswith(".dump"):
            info = os.stat(path)
            line = (
                f"{time.strftime('%Y-%m-%dT%H:%M', time.localtime(info.st_mtime))}  {info.st_size:10d} bytes  {path}\n"
            )
            found.append((info.st_mtime_ns, name, line))
    sys.stdout.writelines(line for _, _, line in sorted(found, reverse=True))
    return Result(0, {"backups": len(found)})


def logs(request: Request) -> Result:
    env = envs.load_checked(request)
    latest = _latest_log(env.runs_dir)
    if latest is None:
        raise Refused(f"no deploy has run in {env.name} yet", 1)
    run_id = latest[: -len(".log")]
    if request.option("follow"):
        runs.follow(env, run_id)  # the run's own outcome is in its log: logs itself succeeded
    else:
        with open(os.path.join(env.runs_dir, latest), "rb") as file:
            runs.copy(file)
    return Result(0, {"run": run_id})


def _latest_log(runs_dir: str):
    try:
        names = [name for name in os.listdir(runs_dir) if name.endswith(".log")]
    except FileNotFoundError:
        return None
    return max(names, key=lambda name: os.stat(os.path.join(runs_dir, name)).st_mtime, default=None)


def maintenance(request: Request) -> Result:
    env = envs.load_checked(request)
    on = request.words[0] == "on"
    os.makedirs(env.runs_dir, exist_ok=True)
    lock = hold(
        env.state_dir,
        "maintenance",
        f"maintenance {request.words[0]}",
        str(request.option("by", "")),
        "maintenance stays as it is",
    )
    try:
        folder = os.path.join(env.app_dir, "maintenance")
        os.makedirs(folder, exist_ok=True)
        os.chmod(folder, 0o755)
        flag = os.path.join(folder, "on")
        if on:
            with open(flag, "w") as file:
                file.write(now_iso() + "\n")
            os.chmod(flag, 0o644)
            print("maintenance mode on: the proxy answers 503")
        else:
            if os.path.exists(flag):
                os.remove(flag)
            print("maintenance mode off")
    finally:
        lock.release()
    return Result(0, {"maintenance": request.words[0]})


SYSTEMD_DIR, CRON_DIR = "/etc/systemd/system", "/etc/cron.d"


def pull_agent_where(name: str, systemd_dir: str = SYSTEMD_DIR, cron_dir: str = CRON_DIR) -> str:
    """How the pull agent of NAME runs here: a systemd timer (and its state), a cron entry, or none."""
    from .agent import unit as agent_unit

    unit = agent_unit(name)
    if os.path.isfile(os.path.join(systemd_dir, unit + ".timer")):
        _, state = run.output(run.Command(["systemctl", "is-active", unit + ".timer"]), stderr=False)
        return f"systemd timer {unit}.timer ({state.strip()})"
    if os.path.isfile(os.path.join(cron_dir, unit)):
        return f"cron {cron_dir}/{unit}"
    return "none"


def pull_status(request: Request) -> Result:
    env = envs.load_checked(request)
    where = pull_agent_where(env.name)
    channel = env["PULL_CHANNEL"]
    if not channel:
        print(f"mode: push (no pull channel in {env.name}'s settings)\nagent: {where}")
        return Result(0, {"mode": "push", "agent": where})
    pull_py = run.lib_module("pull")
    pairs = [
        "mode=pull",
        f"channel={channel}",
        f"every={env['PULL_EVERY']}s",
        f"agent={where}",
        f"version={envs.current_version(env)}",
    ]
    print("\n".join(pull_py.status(pull_py.read(os.path.join(env.state_dir, "pull", "checks.jsonl")), pairs)))
    return Result(0, dict(pair.split("=", 1) for pair in pairs))


def _first_line(command: run.Command) -> str:
    return (run.output(command)[1].splitlines() or [""])[0]


def _disk_free(path: str) -> str:
    rows = run.output(run.Command(["df", "-Ph", path]), stderr=False)[1].splitlines()
    return rows[1].split()[3] if len(rows) > 1 and len(rows[1].split()) > 3 else ""


def check(request: Request) -> Result:
    """Facts for `inv server.check`, key=value lines (and the same as data)."""
    env = envs.load_checked(request)
    code, docker_root = run.output(compose.docker(env, "info", "-f", "{{.DockerRootDir}}"), stderr=False)
    found = {
        "server_side": server_hash(HOME),
        "settings": expect.conf_hash(env.conf_path),
        "version": envs.current_version(env),
        "docker": _first_line(compose.docker(env, "version", "-f", "{{.Server.Version}}")),
        "compose": _first_line(compose.compose_cli(env, "version", "--short")),
        "disk_free_app": _disk_free(env.app_dir),
        "disk_free_docker": _disk_free(docker_root.strip() if code == 0 else "/"),
    }
    found.update(strategy_for(env).facts())
    channel = env["PULL_CHANNEL"]
    mode = f"channel {channel} every {env['PULL_EVERY']}s, agent: " if channel else ""
    found["pull"] = f"{mode}{pull_agent_where(env.name)}"
    found.update(tls.expiry(env))
    print("\n".join(f"{key}={value}" for key, value in found.items()))
    return Result(0, found)


def manage_refusal(env: envs.Env, name: str, args) -> str | None:
    """Why the allowlist (MANAGE_COMMAND lines: a name, then argument patterns) does not
    let NAME run with ARGS, or None."""
    import re

    if not facts.matches(facts.MANAGE_NAME_RE, name):
        return f"'{name}' is not a management command name"
    if name in facts.MANAGE_FORBIDDEN:
        return (
            f"`{name}` is not in {env.name}'s manage_commands and can never run through pushdeploy: it runs arbitrary"
            f" code or SQL, or reads or replaces data wholesale ({' '.join(facts.MANAGE_FORBIDDEN)} are refused)"
        )
    entries = [line.split() for line in env["MANAGE_COMMAND"]]
    patterns = next((entry[1:] for entry in entries if entry and entry[0] == name), None)
    if patterns is None:
        allowed = " ".join(entry[0] for entry in entries if entry) or "none"
        return f"`{name}` is not in {env.name}'s manage_commands (allowed: {allowed})"
    for word in args:
        if not facts.matches(facts.ARG_RE, word):
            return f"invalid argument '{word}'"
        if changes_django_setup(word):
            forbidden = " ".join(facts.MANAGE_FORBIDDEN_OPTIONS)
            return f"`{name}` does not accept the argument '{word}': {forbidden} (or a prefix of one) are never passed"
        if not any(re.fullmatch(f"(?:{pattern})", word) for pattern in patterns):
            return f"`{name}` does not accept the argument '{word}' (allowed: {' '.join(patterns)})"
    return None


def manage(request: Request) -> Result:
    """One command of the allowlist in a one-off container of the deployed version: its
    output, its exit status. Never while a deploy changes the image or the database."""
    env = envs.load_checked(request)
    name, args = request.words[0], request.words[1:]
    why = manage_refusal(env, name, args)
    if why:
        raise Refused(f"refused: {why}")
    version = envs.current_version(env)
    if not version:
        raise Refused(f"nothing is deployed in {env.name} yet: deploy first", 1)
    os.makedirs(env.runs_dir, exist_ok=True)
    lock = hold(env.state_dir, "manage", f"manage {name}", str(request.option("by", "")))
    try:
        print(
            f"pushdeploy: manage.py {' '.join(request.words)} in a one-off container of {version} ({env.name})",
            file=sys.stderr,
            flush=True,
        )
        code = run.streamed(compose.manage(env, version, request.words))
        return Result(code, {"command": name, "version": version})
    finally:
        lock.release()


def review_template(request: Request) -> envs.Env:
    """The template a review verb names (review-list: the template itself), checked."""
    import re

    env = envs.load(request.template or request.env)
    if env["REVIEW_TEMPLATE"] != "yes":
        raise Refused(
            f"'{env.name}' is not a review template on this server: only names the template allows"
            " (TEMPLATE-N of an environment with review_template: true) may be made"
        )
    valid = (
        re.fullmatch(r"[a-z0-9]([a-z0-9.-]{0,200}[a-z0-9])?", env["REVIEW_DOMAIN"])
        and re.fullmatch(r"[0-9]{1,3}", env["REVIEW_MAX"])
        and re.fullmatch(r"[0-9]{1,5}", env["REVIEW_PORT"])
    )
    if not valid:
        raise Refused(
            f"{env.conf_path}: REVIEW_DOMAIN, REVIEW_MAX or REVIEW_PORT is invalid: run `inv server.setup --env {env.name}`",
            1,
        )
    expect.check(str(request.option("expect", "")), env.conf_path, env.name)
    return env


def review_url(template: envs.Env, number: str) -> str:
    """Where review environment NUMBER answers: HTTPS at the front when the template has tls:."""
    if template["TLS"] == "files":
        port = template["TLS_PUBLISH"].rsplit(":", 1)[-1]
        return f"https://pr-{number}.{template['REVIEW_DOMAIN']}{'' if port == '443' else ':' + port}/"
    port = template["REVIEW_PORT"]
    return f"http://pr-{number}.{template['REVIEW_DOMAIN']}{'' if port == '80' else ':' + port}/"


def review_instances(template: str) -> list:
    """The live review environments of TEMPLATE (review-up marks each review.created)."""
    try:
        names = sorted(os.listdir(facts.STATE))
    except FileNotFoundError:
        return []
    return [
        name
        for name in names
        if name.startswith(template + "-")
        and facts.matches(facts.REVIEW_RE, name)
        and os.path.isfile(os.path.join(facts.STATE, name, "review.created"))
    ]


def review_list(request: Request) -> Result:
    template = review_template(request)
    names = review_instances(template.name)
    for name in names:
        number = name.rsplit("-", 1)[1]
        instance = envs.Env(name, template.conf_path, dict(template.values, APP_DIR=f"{template.app_dir}-{number}"))
        created = envs.read_text(os.path.join(facts.STATE, name, "review.created"))
        fields = (
            name,
            envs.current_version(instance),
            created,
            last_deploy(instance.history),
            review_url(template, number),
        )
        print("\t".join(fields))
    return Result(0, {"reviews": len(names)})


def review_up(request: Request) -> Result:
    from . import review

    return review.review_up(request)


def review_down(request: Request) -> Result:
    from . import review

    return review.review_down(request)


def db_dump(request: Request) -> Result:
    from . import refresh

    return refresh.db_dump(request)


def db_restore(request: Request) -> Result:
    from . import refresh

    return refresh.db_restore(request)


def env_push(request: Request) -> Result:
    from . import envpush

    return envpush.env_push(request)


def tls_export(request: Request) -> Result:
    from . import acme

    return acme.export(request)


def tls_import(request: Request) -> Result:
    from . import acme

    return acme.import_pair(request)


def pull(request: Request) -> Result:
    from . import agent

    return agent.pull(request)


def teardown(request: Request) -> Result:
    from . import teardown

    return teardown.teardown(request)


HANDLERS = {
    "version": version,
    "mark": marks.mark,
    "history": history,
    "backups": backups,
    "logs": logs,
    "status": status,
    "maintenance": maintenance,
    "check": check,
    "pull-status": pull_status,
    "cron-status": cron.status,
    "cron": cron.cron,
    "manage": manage,
    "review-list": review_list,
    "plan": plan,
    "deploy": runs.deploy,
    "rollback": runs.rollback,
    "review-up": review_up,
    "review-down": review_down,
    "db-dump": db_dump,
    "db-restore": db_restore,
    "env-push": env_push,
    "tls-export": tls_export,
    "tls-import": tls_import,
    "pull": pull,
    "teardown": teardown,
}
