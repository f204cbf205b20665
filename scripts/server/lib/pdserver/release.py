"""What a deploy runs inside the app's own image, the same for every engine: the
release tasks (migrate, collectstatic), the hooks, and pruning old static files.
Each is a short program for Django's `manage.py shell -c`, run in a one-off
container of the new version (the strategy says how: compose run, docker run on
a swarm's network) before any traffic reaches it.
"""

from __future__ import annotations

from . import run as runner

# Migrations (unless PD_MIGRATE=0), then static files without --clear (pages of the
# old version still ask for the old assets). One container and one Django start for
# both saves a second. Exit 3: migrate failed; 4: collectstatic failed.
RELEASE_TASKS_PY = """
import os, sys, traceback
from django.core.management import call_command
for name, code, args in (("migrate", 3, {}), ("collectstatic", 4, {})):
    if name == "migrate" and os.environ.get("PD_MIGRATE") != "1":
        continue
    if name == "migrate":  # what it applies, for the history: a rollback must know (MIGRATIONS_LINE)
        try:
            from django.db import DEFAULT_DB_ALIAS, connections
            from django.db.migrations.executor import MigrationExecutor
            executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
            todo = executor.migration_plan(executor.loader.graph.leaf_nodes())
            names = " ".join("%s.%s" % (m.app_label, m.name) for m, backwards in todo if not backwards)
            print("--- migrations to apply: %s" % (names or "none"), flush=True)
        except BaseException:
            traceback.print_exc()
            sys.exit(code)
    print("--- manage.py %s" % name, flush=True)
    if name == "collectstatic":
        from django.conf import settings
        root = str(settings.STATIC_ROOT or "")
        if root and os.path.isdir(root) and not os.access(root, os.W_OK):
            print("STATIC_ROOT %s is not writable by uid %d, the user the image runs as: create the folder in "
                  "the image, owned by that user (RUN mkdir -p %s && chown USER %s, before USER), so that Docker "
                  "gives the volume its owner (a volume made before keeps its owner: chown it once on the server)"
                  % (root, os.getuid(), root, root), flush=True)
            sys.exit(code)
    try:
        call_command(name, interactive=False, **args)
    except BaseException:
        traceback.print_exc()
        sys.exit(code)
"""

# Each hook of PD_HOOKS (hooks separated by ";", words by " ", all checked words)
# through call_command, in order, stopping at the first that fails (exit 5).
HOOKS_PY = """
import os, sys, traceback
from django.core.management import call_command
from django.core.management.base import CommandError
for hook in os.environ["PD_HOOKS"].split(";"):
    words = hook.split()
    print("--- manage.py %s" % " ".join(words), flush=True)
    try:
        call_command(*words)
    except CommandError as error:
        print("%s: %s" % (type(error).__name__, error), flush=True)
        sys.exit(5)
    except BaseException:
        traceback.print_exc()
        sys.exit(5)
"""

# Keeps the hashed static files named in the manifests of the last PD_STATIC_KEEP
# releases and deletes older hashed files: cached pages of recent releases still
# find their assets while the volume stops growing.
PRUNE_STATIC_PY = """
import json, os, re
from django.conf import settings
root = settings.STATIC_ROOT
manifest = os.path.join(root, "staticfiles.json")
if not os.path.exists(manifest):
    raise SystemExit("no staticfiles.json (not ManifestStaticFilesStorage): nothing pruned")
releases = os.path.join(root, ".pushdeploy-releases")
os.makedirs(releases, exist_ok=True)
with open(manifest) as src, open(os.path.join(releases, os.environ["PD_VERSION"] + ".json"), "w") as dst:
    dst.write(src.read())
kept = sorted((os.path.join(releases, n) for n in os.listdir(releases)), key=os.path.getmtime, reverse=True)
for old in kept[int(os.environ["PD_STATIC_KEEP"]):]:
    os.remove(old)
kept = kept[:int(os.environ["PD_STATIC_KEEP"])]
used = set()
for path in kept:
    with open(path) as f:
        used.update(json.load(f).get("paths", {}).values())
hashed = re.compile(r"[.][0-9a-f]{12}([.][^/.]+)?$")
removed = 0
for folder, subfolders, names in os.walk(root):
    subfolders[:] = [d for d in subfolders if d != ".pushdeploy-releases"]
    for name in names:
        if hashed.search(name) and os.path.relpath(os.path.join(folder, name), root) not in used:
            os.remove(os.path.join(folder, name))
            removed += 1
print("kept the static files of %d release(s), removed %d older file(s)" % (len(kept), removed))
"""


# A rollback's own: the migrations the version it undoes applied, unapplied with that
# version's image (it has their files) while it still serves. Per app, back to the parent
# of the earliest one; Django's backwards plan (dependents in other apps included) is
# printed first, and any migration in it that cannot be unapplied (RunPython or RunSQL
# without a reverse) stops it before anything changes (exit 6). PD_CHECK_ONLY=1: the plan only.
UNAPPLY_PY = """
import os, sys, traceback
from django.core.management import call_command
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
try:
    executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
    graph, applied = executor.loader.graph, executor.loader.applied_migrations
    asked = [tuple(name.split(".", 1)) for name in os.environ["PD_UNAPPLY"].split()]
    asked = [key for key in asked if key in applied and key in graph.nodes]
    targets = []
    for app in sorted({app for app, _ in asked}):
        mine = [key for key in asked if key[0] == app]
        first = min(mine, key=lambda key: len(graph.forwards_plan(key)))
        parents = sorted(parent.key for parent in graph.node_map[first].parents if parent.key[0] == app)
        targets.append((app, parents[-1][1] if parents else None))
    plan = [migration for migration, backwards in executor.migration_plan(targets) if backwards]
    names = ["%s.%s" % (m.app_label, m.name) for m in plan]
    print("--- migrations to unapply: %s" % (" ".join(names) or "none"), flush=True)
    stuck = ["%s.%s" % (m.app_label, m.name) for m in plan if not all(op.reversible for op in m.operations)]
    if stuck:
        print("--- irreversible: %s" % " ".join(stuck), flush=True)
        sys.exit(6)
    if os.environ.get("PD_CHECK_ONLY") == "1":
        sys.exit(0)
    for app, target in targets:
        print("--- manage.py migrate %s %s" % (app, target or "zero"), flush=True)
        call_command("migrate", app, target or "zero", interactive=False)
    print("--- unapplied: %s" % (" ".join(names) or "none"), flush=True)
except SystemExit:
    raise
except BaseException:
    traceback.print_exc()
    sys.exit(3)
"""

MIGRATIONS_LINE = "--- migrations to apply: "


def last_value(log_text: str, prefix: str) -> str:
    """The value of the last `PREFIX...` line of a run's log ('' for none)."""
    found = ""
    for line in log_text.splitlines():
        if line.startswith(prefix):
            found = line[len(prefix) :].strip()
    return "" if found == "none" else found


def applied_migrations(log_text: str) -> str:
    """The migrations the release tasks applied, from the run's log ('' for none)."""
    return last_value(log_text, MIGRATIONS_LINE)


def manage_py(run, script: str) -> list:
    """The argument list of `manage.py shell -c SCRIPT -v 0` (the environment's MANAGE
    prefix): verbosity 0 for the shell alone keeps Django 5.2's "N objects imported
    automatically" out of every step; the commands it calls keep their own output."""
    return [*run.env["MANAGE"].split(), "shell", "-c", script, "-v", "0"]


def logged(run, prefix: str) -> str:
    """The value of the last `PREFIX...` line in the run's log so far ('' for none)."""
    try:
        with open(run.file("log"), errors="replace") as log:
            return last_value(log.read(), prefix)
    except OSError:
        return ""


def one_off_of_previous(run, strategy, script: str, environ: dict) -> int:
    """SCRIPT in a one-off container of the version being undone (run.previous), not of the
    one the run brings: the strategies' one_off takes its image from run.version."""
    version = run.version
    run.version = run.previous
    try:
        return strategy.one_off(run, manage_py(run, script), environ)
    finally:
        run.version = version


def unapply(run, strategy, names: list, check_only: bool = False) -> int:
    """NAMES unapplied, in a one-off container of the version being undone (its image has
    their files), before the version brought back starts. Exit 6 (nothing changed) when one
    of them cannot be unapplied."""
    environ = {"PD_UNAPPLY": " ".join(names), "PD_CHECK_ONLY": "1" if check_only else "0"}
    rc = one_off_of_previous(run, strategy, UNAPPLY_PY, environ)
    if rc == 6:
        print(
            f"{logged(run, '--- irreversible: ') or 'the migrations above'} cannot be unapplied (no reverse operation): {run.version} would run "
            f"on a schema it does not know. Nothing was changed. Deploy a fix forward instead, or roll back "
            f"--to a version that has these migrations",
            flush=True,
        )
    elif rc == 0 and not check_only:
        run.unapplied = logged(run, "--- unapplied: ")
    return rc


def remigrate(run, strategy) -> int:
    """A rollback that unapplied migrations and then failed: the version still serving gets
    them back (its own release tasks, with its image)."""
    rc = one_off_of_previous(run, strategy, RELEASE_TASKS_PY, {"PD_MIGRATE": "1"})
    if rc == 0:
        print(f"applied {run.unapplied} again for {run.previous}", flush=True)
        run.unapplied = ""
    return rc


def release_tasks(run, strategy) -> int:
    environ = {"PD_MIGRATE": "0" if run.skip_migrate else "1"}
    rc = strategy.one_off(run, manage_py(run, RELEASE_TASKS_PY), environ)
    run.migrations = logged(run, MIGRATIONS_LINE)
    if rc == 4:
        run.failed_step = "static"
    elif rc:
        run.failed_step = run.failed_step or "migrate"
    return rc


def hooks(run, strategy, lines) -> int:
    return strategy.one_off(run, manage_py(run, HOOKS_PY), {"PD_HOOKS": ";".join(lines)})


def prune_static(run, container: str):
    """Start pruning in a running new container (no one-off container to create) while
    the old ones drain: a Popen whose output prune_static_report shows, or None."""
    import subprocess
    import tempfile

    keep = int(run.env["STATIC_KEEP"])
    if keep <= 0 or not container:
        return None
    out = tempfile.TemporaryFile()
    argv = ["docker", "exec", "-e", f"PD_STATIC_KEEP={keep}", "-e", f"PD_VERSION={run.version}", container]
    command = runner.Command(argv + manage_py(run, PRUNE_STATIC_PY), None, _docker_env(run))
    proc = subprocess.Popen(
        command.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=runner.environ(command)
    )
    proc.out = out
    return proc


def prune_static_report(run, proc) -> int:
    if int(run.env["STATIC_KEEP"]) <= 0:
        print("static_keep is 0: nothing pruned", flush=True)
        return 0
    if proc is None:
        print("no new container to prune from", flush=True)
        return 0
    if runner.wait(proc) != 0:
        print("warning: could not prune old static files (the deploy itself succeeded):", flush=True)
    proc.out.seek(0)
    print(proc.out.read().decode(errors="replace"), end="", flush=True)
    proc.out.close()
    return 0


def _docker_env(run) -> dict:
    return {"DOCKER_HOST": run.env["DOCKER_HOST"]} if run.env["DOCKER_HOST"] else {}
