"""Moving a database between environments, for the admin connection only (`inv
db.refresh`). The client streams the dump from one host's `db-dump` to another's (or
the same host's) `db-restore` through its own memory:
  db-dump ENV [--fresh]       the newest backup of ENV (or a fresh pg_dump) on stdout
  db-restore ENV --from=SRC   the dump on stdin, then a trailer line
                              "pushdeploy-sha256:HEX": restored with ENV in maintenance
                              mode, migrated, scrubbed (SCRUB), recorded
A dump that arrives cut short fails its checksum before anything changes; a restore
that fails rolls back (one transaction) and the old data serves on; a scrub that fails
leaves maintenance mode on, so unscrubbed data is never served.

Review environments seeded from a backup (review.py) restore and scrub the same way.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time

from . import compose, facts, pipeline, runs
from . import containers as ct
from . import env as envs
from . import run as runner
from .lock import hold, now_iso
from .request import Refused, Request
from .result import Result

TRAILER_BYTES = 84  # "\npushdeploy-sha256:" + 64 hex digits + "\n"
_TRAILER = re.compile(rb"^pushdeploy-sha256:([0-9a-f]{64})$")


def latest_backup(folder: str) -> str:
    """The newest *.dump of FOLDER, or '' (no backups yet)."""
    try:
        dumps = [os.path.join(folder, name) for name in os.listdir(folder) if name.endswith(".dump")]
    except FileNotFoundError:
        return ""
    return max(dumps, key=os.path.getmtime, default="")


def backup_version(path: str) -> str:
    """The version a backup holds data of, from its name (TIME-VERSION.dump), or ''."""
    match = re.match(r"^[0-9]{8}T[0-9]{6}Z-(.+)\.dump$", os.path.basename(path))
    version = match.group(1) if match else ""
    return version if version != "none" and facts.matches(facts.VERSION_RE, version) else ""


PG_DUMP = 'pg_dump -U "$POSTGRES_USER" -Fc "$POSTGRES_DB"'
PG_RESTORE = (
    "pg_restore --clean --if-exists --no-owner --no-acl --single-transaction --exit-on-error "
    '-U "$POSTGRES_USER" -d "$POSTGRES_DB"'
)
PSQL = 'psql -v ON_ERROR_STOP=1 -q -U "$POSTGRES_USER" -d "$POSTGRES_DB"'

# A rollback's restore (--restore-db) puts the database back exactly as the dump has it, in
# one transaction: every table, sequence and view of the schema dropped first (a table a
# later release made would otherwise stay, and its migration fail at the next deploy), then
# the dump's objects and rows. A dump that cannot be read to its end sends an error in place
# of COMMIT, so nothing changes. (No single quotes: it travels inside sh's.)
REPLACE_SQL = """DO $$ DECLARE r record; BEGIN
FOR r IN SELECT tablename AS name FROM pg_tables WHERE schemaname = current_schema() LOOP
EXECUTE format($q$DROP TABLE IF EXISTS %I CASCADE$q$, r.name); END LOOP;
FOR r IN SELECT sequence_name AS name FROM information_schema.sequences WHERE sequence_schema = current_schema() LOOP
EXECUTE format($q$DROP SEQUENCE IF EXISTS %I CASCADE$q$, r.name); END LOOP;
FOR r IN SELECT viewname AS name FROM pg_views WHERE schemaname = current_schema() LOOP
EXECUTE format($q$DROP VIEW IF EXISTS %I CASCADE$q$, r.name); END LOOP;
END $$;"""


def replace_sh(connect: str) -> str:
    """The shell command (in a container with pg_restore and psql, the dump on stdin) that
    replaces the database's contents with the dump's; CONNECT: psql's connection words."""
    unreadable = "DO $$ BEGIN RAISE EXCEPTION $e$the dump could not be read to its end: nothing restored$e$; END $$;"
    return (
        f"{{ echo 'BEGIN;'; echo '{REPLACE_SQL}'; if pg_restore --no-owner --no-acl -f -; then echo 'COMMIT;'; "
        f"else echo '{unreadable}'; fi; }} | psql -v ON_ERROR_STOP=1 -q -o /dev/null {connect}"
    )


# The same, in a one-off container of BACKUP_IMAGE reaching a database server outside the
# project (swarm; compose without db_service) with the web service's libpq settings.
REPLACE_EXTERNAL_SH = ct.PG_SETTINGS_SH + replace_sh('"$@"')


def replace_with(run, path: str, command: runner.Command) -> int:
    """A rollback's restore: the database replaced by the dump at PATH (COMMAND runs
    replace_sh where the database is reached)."""
    print(
        f"replacing {run.env.name}'s database with {os.path.basename(path)} ({ct.human_size(os.path.getsize(path))}), in one transaction",
        flush=True,
    )
    rc = runner.from_file(command, path)
    if rc == 0:
        print(f"the database holds what {os.path.basename(path)} holds", flush=True)
    return rc


def restore_file(run, path: str) -> int:
    env = run.env
    if not path or not os.path.isfile(path):
        print("no dump to restore (no backup yet?)", flush=True)
        return 1
    print(
        f"restoring {ct.human_size(os.path.getsize(path))} into {env.name}'s {env['DB_SERVICE']}, in one transaction",
        flush=True,
    )
    command = compose.compose(env, "exec", "-T", env["DB_SERVICE"], "sh", "-c", PG_RESTORE)
    return runner.from_file(command, path)


def scrub(run, version: str) -> int:
    """The target's scrub step (SCRUB): an SQL file of the app directory run by psql, or
    one management command run in a one-off container of VERSION: the release the data
    came from, never whatever the deploy account deployed last."""
    env = run.env
    kind, _, what = env["SCRUB"].partition(":")
    if kind == "sql":
        path = os.path.join(env.app_dir, what)
        if not re.match(r"^[A-Za-z0-9_.@+-]+(/[A-Za-z0-9_.@+-]+)*$", what) or ".." in what or not os.path.isfile(path):
            print(
                f"scrub file {path} is missing: list it under files: and run `inv server.setup --env {run.setup_name}`",
                flush=True,
            )
            return 1
        print(f"scrubbing with {what}", flush=True)
        return runner.from_file(compose.compose(env, "exec", "-T", env["DB_SERVICE"], "sh", "-c", PSQL), path)
    if kind == "manage":
        if not re.match(r"^[a-z][a-z0-9_]{0,63}$", what):
            print(f"SCRUB: '{what}' is not a management command name", flush=True)
            return 1
        if not version:
            print("the data's release is unknown: no image to scrub it with", flush=True)
            return 1
        print(f"scrubbing with manage.py {what} in {version}", flush=True)
        return runner.streamed(compose.manage(env, version, [what]))
    print("no scrub step configured (scrub: in invoke.yaml)", flush=True)
    return 1


def migrate(run, version: str) -> int:
    print(f"migrating to what {version} expects", flush=True)
    return runner.streamed(compose.manage(run.env, version, ["migrate", "--noinput"]))


def scrub_then_catch_up(run, data: str, current: str) -> int:
    """Scrub in the release the data is of; only then may the image deployed here (which
    the deploy account chose) touch it: migrated to what that one expects."""
    code = scrub(run, data)
    if code or current in ("", "none", data):
        return code
    print(f"the data is scrubbed: {run.env.name} serves {current}", flush=True)
    return migrate(run, current)


_DATA_VERSION = re.compile(rb"\npushdeploy-data-version:([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})\n\Z")


def receive(path: str, found: dict) -> int:
    """The dump and its trailer from stdin into a root-only file, checked; the release the
    data is of (the line the client puts between dump and trailer) into found."""
    digest = hashlib.sha256()
    size = 0
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
        while True:
            chunk = sys.stdin.buffer.read(1 << 20)
            if not chunk:
                break
            out.write(chunk)
            size += len(chunk)
    if size <= TRAILER_BYTES:
        print(f"received {size} bytes: no dump (did the source fail?)", flush=True)
        return 1
    with open(path, "rb+") as dump:
        dump.seek(size - TRAILER_BYTES)
        trailer = dump.read()
        match = _TRAILER.match(trailer[1:-1]) if trailer[:1] == b"\n" and trailer[-1:] == b"\n" else None
        if not match:
            print("the dump arrived without its checksum trailer (cut short?)", flush=True)
            return 1
        dump.truncate(size - TRAILER_BYTES)
        dump.seek(0)
        while True:
            chunk = dump.read(1 << 20)
            if not chunk:
                break
            digest.update(chunk)
    if digest.hexdigest() != match.group(1).decode():
        print("the dump's checksum does not match: not restoring it", flush=True)
        return 1
    size -= TRAILER_BYTES
    with open(path, "rb+") as dump:
        dump.seek(max(0, size - 200))
        tail = dump.read()
        named = _DATA_VERSION.search(tail)
        if not named:
            print(
                "the dump came without the release its data is of (a client older than this server side?): "
                "run `inv db.refresh` from a current checkout",
                flush=True,
            )
            return 1
        size -= len(named.group(0))
        dump.truncate(size)
    found["data_version"] = named.group(1).decode()
    print(f"received {size} bytes, checksum ok; the data is of release {found['data_version']}", flush=True)
    return 0


def db_dump(request: Request) -> Result:
    """The newest backup (or a fresh pg_dump) on stdout; the release its data is of in
    the result (stdout is the dump)."""
    env = envs.load_checked(request)
    if not env["DB_SERVICE"]:
        raise Refused(f"{env.name} has no db_service to dump")
    newest = "" if request.option("fresh") else latest_backup(os.path.join(env.state_dir, "backups"))
    if newest:
        print(f"sending the newest backup of {env.name}: {os.path.basename(newest)}", file=sys.stderr, flush=True)
        with open(newest, "rb") as dump:
            runs.copy(dump)
        return Result(0, {"data_version": backup_version(newest) or envs.current_version(env)})
    print(f"taking a fresh pg_dump of {env.name}", file=sys.stderr, flush=True)
    version = envs.current_version(env)
    code = runner.streamed(compose.compose(env, "exec", "-T", env["DB_SERVICE"], "sh", "-c", PG_DUMP))
    return Result(code, {"data_version": version})


def db_restore(request: Request) -> Result:
    sys.stdout.reconfigure(line_buffering=True)
    env = envs.load_checked(request)
    source = str(request.option("from"))
    if source == env.name:
        raise Refused("usage: db-restore ENV --from=SOURCE_ENV (the dump on stdin)")
    if not env["DB_SERVICE"]:
        raise Refused(f"{env.name} has no db_service to restore into")
    if not env["SCRUB"]:
        raise Refused(
            f"{env.name} has no scrub step (scrub: in invoke.yaml): refusing to serve {source}'s data unscrubbed"
        )
    os.makedirs(env.runs_dir, mode=0o700, exist_ok=True)
    lock = hold(env.state_dir, "refresh", f"refresh of {env.name} from {source}", str(request.option("by", "")))
    run_id = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-refresh-{os.getpid()}"
    run = pipeline.Run(
        env, run_id, {"KIND": "refresh", "BY": request.option("by", ""), "URL": request.option("url", "")}
    )
    try:
        with pipeline.teed(run.file("log")):
            return refresh(run, source)
    finally:
        lock.release()


def refresh(run, source: str) -> Result:
    """The refresh, in order. Nothing changes until the dump arrived whole."""
    env = run.env
    dump = os.path.join(env.state_dir, f"refresh-{os.getpid()}.dump")
    open(run.file("steps"), "w").close()
    run.started = time.time()
    current = envs.current_version(env)
    print(f"{now_iso()} refresh of {env.name} from {source} by {run.by or 'unknown'}", flush=True)
    step = pipeline.step
    outcome = "ok"
    found = {}  # the release the data is of: it migrates and scrubs, never `current`'s image
    arrived = (
        step(run, "receive", lambda run: receive(dump, found))
        and step(run, "maintenance-on", pipeline.maintenance, True)
        and step(run, "database", ct.ComposeEngine(env).database)
    )
    restored = arrived and step(run, "restore", restore_file, dump)
    data = found.get("data_version", "")
    if restored and step(run, "migrate", migrate, data) and step(run, "scrub", scrub_then_catch_up, data, current):
        if not step(run, "maintenance-off", pipeline.maintenance, False):
            outcome = "failed"
    else:
        outcome = "failed"
        if restored:
            print(
                f"the scrub did not finish: {env.name} stays in maintenance mode (fix the scrub, then refresh again)",
                flush=True,
            )
        elif os.path.exists(os.path.join(env.app_dir, "maintenance", "on")):
            step(run, "maintenance-off", pipeline.maintenance, False)
    if os.path.exists(dump):
        os.unlink(dump)
    took = pipeline.elapsed(run.started)
    _record(run, source, current, outcome, took)
    result = {"source": source, "data_version": data, "failed_step": run.failed_step, "run": run.id}
    if outcome == "ok":
        print(f"refreshed {env.name} from {source} in {took}s (scrubbed)", flush=True)
        return Result(0, result)
    print(f"refresh of {env.name} from {source} FAILED at {run.failed_step} after {took}s", flush=True)
    return Result(1, result)


def _record(run, source: str, current: str, outcome: str, took: str) -> None:
    """The refresh in the target's history (lib/history.py writes it)."""
    env = run.env
    history = runner.lib_module("history")
    pairs = {
        "time": now_iso(),
        "env": env.name,
        "kind": "refresh",
        "source": source,
        "version": current,
        "previous": current,
        "by": run.by,
        "url": run.url,
        "sudo_user": os.environ.get("SUDO_USER") or "root",
        "outcome": outcome,
        "failed_step": run.failed_step,
        "duration": took,
    }
    history.append(env.history, [f"{k}={v}" for k, v in pairs.items()] + [f"steps=@{run.file('steps')}"])
