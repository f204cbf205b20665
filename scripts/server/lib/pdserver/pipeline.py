"""The deploy, in order: one sequence for every engine and switch.

Until the strategy's switch the site runs the old version untouched; if anything
fails, the strategy undoes what it started and the old version serves on. What
every deploy does whatever its strategy (notify, backup, maintenance, the hooks,
the history, the build order) is done here, once:

    preflight, pull, [database], [backup], [maintenance-on], [unmigrate], migrate (or
    static), [hooks-before], the strategy's switch steps (slots: start, health, admit, switch;
    recreate: recreate, up; swarm: proxy, deploy, converge), then the strategy's
    finish (retire, prune-static), [hooks-after], [maintenance-off]

A rollback with --restore-db turns maintenance on first, then takes its backup and
restores the older one (restoredb.py) in place of unmigrate.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time

from . import env as envs
from . import run as runner
from .lock import now_iso


class Run:
    """One deploy in progress: what was asked (the run's request file) and what happened."""

    def __init__(self, env: envs.Env, run_id: str, request: dict):
        self.env, self.id = env, run_id
        self.kind = request.get("KIND", "deploy")
        self.version = request.get("VERSION", "")
        self.by, self.url, self.order = request.get("BY", ""), request.get("URL", ""), request.get("ORDER", "")
        self.maintenance = request.get("MAINTENANCE") == "1"
        self.skip_migrate = request.get("SKIP_MIGRATE") == "1"
        self.keep_good = request.get("KEEP_GOOD") == "1"  # a rollback that marks nothing bad
        self.why = request.get("WHY", "")  # why a rollback chose its version
        # --restore-db: the backup a rollback restores (restoredb.py), when it was taken, by whose deploy
        self.restore = request.get("RESTORE", "")
        self.lost_since, self.restore_for = request.get("LOST_SINCE", ""), request.get("RESTORE_FOR", "")
        self.restored = False  # the restore ran: a failure after it puts the data of run.backup back
        self.backup = ""  # the backup this run took (a path)
        self.migrations = ""  # what its migrate step applied (app.name ...), for the history
        self.unapplied = ""  # what a rollback unapplied (app.name ...), for the history
        self.previous = ""
        self.started = None  # from here on, a stopped run undoes what it did
        self.failed_step = ""
        self.digest = ""
        self.switched = False  # the new version serves: undo nothing, finish instead
        self.recorded = ""  # the outcome once the history has it
        self.warning = ""
        self.setup_name = env.name  # what `inv server.setup --env` names (a review's template)

    def file(self, kind: str) -> str:
        return os.path.join(self.env.runs_dir, f"{self.id}.{kind}")


class Strategy:
    """How an engine puts a new version in place: its own steps, run by the pipeline between
    what every deploy does, and how it undoes them. Slots, Recreate and Swarm are ones."""

    where = ""  # the start line's words before "running:" (swarm: the stack)
    database_steps = ()  # (name, action) before the backup: compose starts its database
    switch_steps = ()  # (name, action): once the last one passed, the new version serves
    finish_steps = ()  # the names of the steps finish runs (plan lists them)

    def preflight(self, run) -> int:
        raise NotImplementedError

    def pull(self, run) -> int:
        raise NotImplementedError

    def backup(self, run) -> int:
        raise NotImplementedError

    def restore(self, run, path: str) -> int:
        """The backup at PATH restored into the database, in one transaction."""
        raise NotImplementedError

    def one_off(self, run, argv: list, environ: dict) -> int:
        """ARGV in a one-off container of the new version: its exit status."""
        raise NotImplementedError

    def warm_steps(self, run):
        """A rollback's steps when the version it goes back to is kept ready (instant), else
        None: a full rollback, like a deploy."""
        return None

    def finish(self, run) -> None:
        """After the switch: what is left to tidy (retire the old version, prune)."""

    def undo(self, run) -> int:
        """Put the old version back after a failed step; 0 when it serves."""
        return 0

    def interrupted(self, run) -> None:
        """A run stopped half way: undo, unless the new version serves already."""
        if not run.switched:
            self.undo(run)

    def describe_failure(self, run) -> None:
        """More to say after a failed deploy, before its last line."""

    def status(self) -> dict:
        """What `status` says of how this environment serves (printed), and the same as data."""
        return {}

    def facts(self) -> dict:
        """`check`'s facts of this strategy (key=value lines)."""
        return {}

    def plan_migrations(self, version: str) -> list:
        """`plan`'s migration lines: Django's `migrate --plan` for VERSION, nothing started."""
        raise NotImplementedError

    def setup_check(self) -> int:
        """bin/install, after installing: what a first deploy would refuse, said (0: nothing)."""
        return 0

    def tls_renew(self, force: bool) -> int:
        """`bin/deploy tls-renew`: an ACME certificate renewed when due (compose engines)."""
        print(f"tls-renew: {self.env.name}'s engine serves no HTTPS of pushdeploy's", flush=True)
        return 1

    def teardown(self, volumes: bool) -> list:
        """`teardown`: everything the environment runs stopped and removed (its volumes too,
        if asked); what went, as lines."""
        raise NotImplementedError


def read_request(path: str) -> dict:
    values = {}
    with open(path, errors="replace") as file:
        for line in file:
            key, _, value = line.rstrip("\n").partition("=")
            values[key] = value
    return values


def elapsed(since: float) -> str:
    return f"{time.time() - since:.1f}"


def step(run: Run, name: str, action, *args) -> bool:
    """Run one named step: prints its outcome and duration, records it for the history."""
    print(f"==> {name}", flush=True)
    started = time.time()
    try:
        rc = int(action(run, *args) or 0)
    except OSError as error:  # a file or a command the step needed: the step failed, says why
        print(f"{name}: {error}", flush=True)
        rc = 1
    took = elapsed(started)
    with open(run.file("steps"), "a") as steps:
        steps.write(f"{name}\t{took}\t{int(rc == 0)}\n")
    if rc == 0:
        print(f" ok {name} ({took}s)", flush=True)
        return True
    print(f" FAILED {name} (exit {rc}, {took}s)", flush=True)
    run.failed_step = run.failed_step or name
    return False


def deploy(run: Run, strategy) -> int:
    """The whole deploy; 0 when the new version serves, else 1 (the old one serves)."""
    from . import release

    env = run.env
    run.previous = envs.current_version(env) or "none"
    run.started = time.time()
    print(
        f"{now_iso()} {run.kind} of {run.version} to {env.name} ({strategy.where}running: {run.previous}) by {run.by or 'unknown'}",
        flush=True,
    )
    if run.why:
        print(f"going back: {run.why}", flush=True)
    if run.restore:
        from . import restoredb

        point = restoredb.Point(run.restore, run.lost_since, run.restore_for)
        print(f"restoring the database: {restoredb.statement(point)}", flush=True)
    notify(run, "started")
    if all(step(run, name, action) for name, action in steps(run, strategy)):
        outcome = "ok"
        if run.order:
            envs.write_text(os.path.join(env.state_dir, "order"), f"{run.order}\n")
        strategy.finish(run)
        after_hooks(run, strategy)
    else:
        outcome = "failed"
        step(run, "rollback", strategy.undo)
        if run.restored:  # the version that still serves needs its data back
            run.restored = not step(run, "restore-back", lambda run: strategy.restore(run, run.backup))
        elif run.unapplied:  # the version that still serves needs its migrations back
            step(run, "remigrate", lambda run: release.remigrate(run, strategy))
    if run.maintenance and outcome != "ok" and run.restored:
        print(
            f"maintenance mode stays on: the database holds the restored backup, which {envs.current_version(env)} "
            f"does not know, and putting back {run.backup} failed: restore it by hand (README: Restoring a backup), then "
            f"`inv deploy.maintenance --env {env.name} off`",
            flush=True,
        )
    elif run.maintenance:
        step(run, "maintenance-off", maintenance, False)
    took = elapsed(run.started)
    record(run, outcome, took)
    notify(run, "finished")
    if outcome == "ok":
        print(f"deployed {run.version} to {env.name} in {took}s (was {run.previous})", flush=True)
        return 0
    strategy.describe_failure(run)
    print(
        f"deploy of {run.version} to {env.name} FAILED at {run.failed_step} after {took}s; {env.name} serves {envs.current_version(env)}",
        flush=True,
    )
    return 1


def steps(run: Run, strategy) -> list:
    """(name, action) in order: what deploy_steps (plan) lists, and what runs."""
    from . import release

    env = run.env
    warm = strategy.warm_steps(run) if run.kind == "rollback" else None
    if warm:  # an instant rollback: the previous version's containers, kept ready
        return warm
    chosen = [("preflight", strategy.preflight), ("pull", strategy.pull)]
    chosen += list(strategy.database_steps)
    if env["BACKUP"] == "yes" and not run.skip_migrate and not run.restore:
        chosen.append(("backup", strategy.backup))
    if run.maintenance:
        chosen.append(("maintenance-on", lambda run: maintenance(run, True)))
    if run.restore:  # the data as it is now saved, then the data as it was before
        chosen += [("backup", strategy.backup), ("restore", lambda run: restore(run, strategy))]
    undo = [] if run.restore else unapplying(run)
    if undo:  # a rollback past migrations: unapplied first, with the image that has them
        chosen.append(("unmigrate", lambda run: release.unapply(run, strategy, undo)))
    chosen.append(("static" if run.skip_migrate else "migrate", lambda run: release.release_tasks(run, strategy)))
    if env["HOOK_BEFORE_SWITCH"]:
        chosen.append(("hooks-before", lambda run: release.hooks(run, strategy, env["HOOK_BEFORE_SWITCH"])))
    return chosen + list(strategy.switch_steps)


def restore(run: Run, strategy) -> int:
    rc = strategy.restore(run, run.restore)
    run.restored = rc == 0 or run.restored
    return rc


def unapplying(run: Run) -> list:
    """The migrations a rollback must unapply first: what was applied here since the
    version it brings back last served (none for a later batch of a shared database: the
    first host did it)."""
    if run.kind != "rollback" or run.skip_migrate:
        return []
    tools = runner.lib_module("history")
    return tools.to_unapply(tools.brief(run.env.history), run.version) or []


def step_names(run: Run, strategy) -> list:
    """Every step a successful deploy runs, in order (what plan shows)."""
    names = [name for name, _ in steps(run, strategy)] + list(strategy.finish_steps)
    names += ["hooks-after"] if run.env["HOOK_AFTER_SWITCH"] else []
    return names + (["maintenance-off"] if run.maintenance else [])


def strategy_for(env: envs.Env) -> Strategy:
    """How the environment puts a version in place: the strategy its engine and switch name
    (strategies/: a module per strategy, found by name)."""
    import importlib

    from . import strategies

    name = strategies.module(env["ENGINE"], env["SWITCH"])
    return importlib.import_module(f"{strategies.__name__}.{name}").Strategy(env)


def after_hooks(run: Run, strategy) -> None:
    """After the switch the new version serves whatever its hooks say: a failing
    after_switch hook is a warning in the log and in the step's record."""
    from . import release

    hooks = run.env["HOOK_AFTER_SWITCH"]
    if not hooks:
        return
    failed = run.failed_step
    if not step(run, "hooks-after", lambda run: release.hooks(run, strategy, hooks)):
        run.failed_step = failed
        run.warning = f"an after_switch hook failed (see the log above); {run.version} serves"
        print(f"warning: {run.warning}", flush=True)


def maintenance(run: Run, on: bool) -> int:
    folder = os.path.join(run.env.app_dir, "maintenance")
    os.makedirs(folder, mode=0o755, exist_ok=True)
    os.chmod(folder, 0o755)
    flag = os.path.join(folder, "on")
    if on:
        with open(os.open(flag, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), "w") as file:
            file.write(now_iso() + "\n")
        os.chmod(flag, 0o644)
        print("maintenance mode on: the proxy answers 503", flush=True)
    else:
        try:
            os.unlink(flag)
        except FileNotFoundError:
            pass
        print("maintenance mode off", flush=True)
    return 0


def record(run: Run, outcome: str, duration: str) -> None:
    """One line of the history (lib/history.py writes it), the last log lines if it failed."""
    tail = ""
    if outcome != "ok":
        lines = [
            line for line in _read(run.file("log")).splitlines() if not line.startswith("==> ") and " ok " not in line
        ]
        tail = "\n".join(lines[-15:]) + ("\n" if lines else "")
    history = runner.lib_module("history")
    pairs = {
        "time": now_iso(),
        "env": run.env.name,
        "kind": run.kind,
        "version": run.version,
        "previous": run.previous,
        "order": run.order,
        "by": run.by,
        "url": run.url,
        "sudo_user": os.environ.get("SUDO_USER") or "root",
        "outcome": outcome,
        "failed_step": run.failed_step,
        "duration": duration,
        "digest": run.digest,
        "run": run.id,
    }
    if run.keep_good:
        pairs["keep_good"] = "yes"
    if run.migrations:
        pairs["migrations"] = run.migrations
    if run.unapplied:
        pairs["unapplied"] = run.unapplied
    if run.backup:
        pairs["backup"] = os.path.basename(run.backup)
    pushed = history.secrets_since_run(history.brief(run.env.history))
    if pushed and outcome == "ok":  # the secrets pushed since the last run now serve (names only)
        pairs["secrets"] = " ".join(pushed)
    if run.restored:
        pairs.update(restored=os.path.basename(run.restore), lost_since=run.lost_since)
    steps_path = run.file("steps")
    tail_path = run.file("tail")
    envs.write_text(tail_path, tail)
    history.append(
        run.env.history, [f"{k}={v}" for k, v in pairs.items()] + [f"steps=@{steps_path}", f"log_tail=@{tail_path}"]
    )
    os.unlink(tail_path)
    run.recorded = outcome


NOTIFY_LIMIT = 30  # seconds, all webhooks and retries included


def notify(run: Run, event: str) -> None:
    """A run's EVENT (started, finished) to the environment's webhooks."""
    import socket

    env = run.env
    facts = {
        "env": env.name,
        "project": env["PROJECT"],
        "host": socket.gethostname(),
        "kind": run.kind,
        "version": run.version,
        "previous": run.previous,
        "by": run.by,
        "url": run.url,
        "time": now_iso(),
    }
    post_webhooks(env, event, env.history, facts, f"notifying the webhooks: {event}")


def post_webhooks(env, event: str, history: str, facts: dict, said: str) -> None:
    """Post EVENT to the environment's webhooks, if it has any (saying SAID), in the background
    (lib/notify.py: a finished run's facts are the last record of HISTORY), in its own session
    and under a hard time limit: a slow webhook never delays or fails what sent it."""
    import subprocess

    hooks = os.path.join(os.path.dirname(env.conf_path), f"{env.name}.webhooks")
    try:
        if os.path.getsize(hooks) == 0:
            return
    except OSError:
        return
    print(said, flush=True)
    argv = ["timeout", "-k", "2", str(NOTIFY_LIMIT), "python3", "-I", os.path.join(runner.LIB, "notify.py")]
    argv += ["send", hooks, event, history, *(f"{k}={v}" for k, v in facts.items())]
    with open(os.path.join(env.state_dir, "notify.log"), "ab") as log:
        # The lock stays with the deploy (close_fds): the next deploy must not wait for a webhook.
        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@contextlib.contextmanager
def teed(path: str):
    """Everything written to stdout and stderr, ours and our commands', goes to the log at
    PATH as well (a deploy run in the caller's process: review-up, db-restore)."""
    sys.stdout.flush()
    sys.stderr.flush()
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    saved = os.dup(1), os.dup(2)
    read, write = os.pipe()
    os.dup2(write, 1)
    os.dup2(write, 2)
    os.close(write)

    def pump():
        caller_gone = False
        while True:
            chunk = os.read(read, 65536)
            if not chunk:
                break
            os.write(log, chunk)
            while chunk and not caller_gone:  # a dropped connection must not stop the log
                try:
                    chunk = chunk[os.write(saved[0], chunk) :]
                except OSError:
                    caller_gone = True

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        thread.join(5)
        for fd in (*saved, read, log):
            os.close(fd)


def _read(path: str) -> str:
    try:
        with open(path, errors="replace") as file:
            return file.read()
    except FileNotFoundError:
        return ""
