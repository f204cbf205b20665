# shellcheck shell=bash disable=SC2034,SC2153 # variables shared across the files bin/deploy sources
# pushdeploy server side: the steps before the switch (pull, database, backup,
# maintenance, migrations and static files), and the step runner.

FAILED_STEP='' DIGEST=''
STEPS_FILE=/dev/null

now_iso() { date -u +%Y-%m-%dT%H:%M:%SZ; }

elapsed() { # start-time -> seconds, one decimal
  local end=$EPOCHREALTIME
  awk -v a="$1" -v b="$end" 'BEGIN { printf "%.1f", b - a }'
}

# Runs one named step, prints its outcome and duration, records it for history.
step() { # name function args...
  local name=$1 started=$EPOCHREALTIME rc=0 took
  shift
  printf '==> %s\n' "$name"
  "$@" || rc=$?
  took=$(elapsed "$started")
  printf '%s\t%s\t%s\n' "$name" "$took" "$((rc == 0))" >>"$STEPS_FILE"
  if [[ $rc -eq 0 ]]; then
    printf ' ok %s (%ss)\n' "$name" "$took"
  else
    printf ' FAILED %s (exit %s, %ss)\n' "$name" "$rc" "$took"
    FAILED_STEP=${FAILED_STEP:-$name}
  fi
  return "$rc"
}

preflight() {
  [[ -d $APP_DIR && -f $APP_DIR/.env ]] || { echo "missing $APP_DIR/.env: run \`inv server.setup --env $ENV_NAME\`"; return 1; }
  compose_at "$NEW_VERSION" config -q || { echo "the compose files do not validate"; return 1; }
}

pull_image() {
  local ref
  echo "pulling $WEB_SERVICE at $NEW_VERSION"
  if is_pinned_version "$NEW_VERSION"; then
    pull_pinned "$NEW_VERSION" || return 1
  else
    compose_at "$NEW_VERSION" pull -q "$WEB_SERVICE" || return 1
  fi
  # The history pins the version to what the tag pointed to now: a moved tag shows.
  if ref=$(web_image_ref "$NEW_VERSION") && DIGEST=$(repo_digest "$ref"); then echo "digest: $DIGEST"; fi
}

# A service's containers, by the labels compose (v1 and v2) puts on them: the
# docker CLI answers in a tenth of the time `compose ps` takes to read the files.
# One-off containers (compose run) are not the service's.
service_containers() { # service [-a: stopped ones too]
  docker ps ${2:+"$2"} -q --no-trunc --filter "label=com.docker.compose.project=$PROJECT" \
    --filter "label=com.docker.compose.service=$1" --filter "label=com.docker.compose.oneoff=False" | sort
}

container_state() { # id
  docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$1" 2>/dev/null
}

# The database must answer before migrations run (depends_on does not wait).
# A healthy one is left alone: `compose up` costs a second even when it does nothing.
start_database() {
  local ids id state
  [[ -n $DB_SERVICE ]] || { echo "no db_service configured"; return 0; }
  ids=$(service_containers "$DB_SERVICE")
  for id in $ids; do
    state=$(container_state "$id")
    if [[ $state == healthy ]]; then
      echo "$DB_SERVICE is healthy"
      return 0
    fi
  done
  compose up -d --no-recreate "$DB_SERVICE" && wait_running_healthy "$(service_containers "$DB_SERVICE")"
}

# Waits until every container passes its Docker health check (or runs, if its
# image has none); on failure shows the last log lines of the one that did not.
wait_running_healthy() { # ids (one per line)
  local deadline=$((SECONDS + HEALTH_TIMEOUT)) id state
  [[ -n $1 ]] || { echo "no container to wait for"; return 1; }
  for id in $1; do
    while :; do
      state=$(container_state "$id" || true)
      case $state in
        healthy | running) echo "${id:0:12} is $state"; break ;;
        unhealthy | exited | dead) ;;
        *) if ((SECONDS < deadline)); then sleep 0.25; continue; fi ;;
      esac
      show_failure "$id" "$state"
      return 1
    done
  done
}

show_failure() { # id state
  echo "last log lines of ${1:0:12}:"
  docker logs --tail 10 "$1" 2>&1 | sed 's/^/  /'
  echo "${1:0:12} is ${2:-gone}"
}

# pg_dump of the database service, custom format, into a root-only directory;
# keeps the newest BACKUP_KEEP. A failed backup stops the deploy.
backup_database() {
  local file
  [[ -n $DB_SERVICE ]] || { echo "backup needs db_service"; return 1; }
  file=$(new_backup_file) || return 1
  # shellcheck disable=SC2016 # expanded by the container's shell, from its own environment
  if ! compose exec -T "$DB_SERVICE" sh -c 'pg_dump -U "$POSTGRES_USER" -Fc "$POSTGRES_DB"' >"$file.part"; then
    rm -f "$file.part"
    return 1
  fi
  store_backup "$file"
}

# Where the next backup goes: the time and the version it holds (the running one).
new_backup_file() {
  mkdir -p "$STATE_DIR/backups" && echo "$STATE_DIR/backups/$(date -u +%Y%m%dT%H%M%SZ)-$PREVIOUS_VERSION.dump"
}

# A finished dump (FILE.part) becomes FILE; the newest BACKUP_KEEP in its directory are kept.
store_backup() { # file
  mv "$1.part" "$1" || return 1
  echo "saved $1 ($(du -h "$1" | cut -f1))"
  find "${1%/*}" -maxdepth 1 -name '*.dump' -printf '%T@ %p\n' | sort -rn | tail -n "+$((BACKUP_KEEP + 1))" | cut -d' ' -f2- | xargs -r rm -f
}

maintenance() { # on|off
  install -d -m 0755 "$APP_DIR/maintenance" || return 1
  if [[ $1 == on ]]; then
    now_iso >"$APP_DIR/maintenance/on" && chmod 0644 "$APP_DIR/maintenance/on" || return 1
    echo "maintenance mode on: the proxy answers 503"
  else
    rm -f "$APP_DIR/maintenance/on" || return 1
    echo "maintenance mode off"
  fi
}

# Run by Django's `manage.py shell -c` in one one-off container of the new
# version, before any traffic reaches it: migrations (unless PD_MIGRATE=0), then
# static files without --clear (pages of the old version still ask for the old
# assets). One container and one Django start-up for both saves a second.
# Exit 3: migrate failed; 4: collectstatic failed.
# shellcheck disable=SC2016 # Python, not shell
RELEASE_TASKS_PY='
import os, sys, traceback
from django.core.management import call_command
for name, code, args in (("migrate", 3, {}), ("collectstatic", 4, {})):
    if name == "migrate" and os.environ.get("PD_MIGRATE") != "1":
        continue
    print("--- manage.py %s" % name, flush=True)
    try:
        call_command(name, interactive=False, **args)
    except BaseException:
        traceback.print_exc()
        sys.exit(code)
'

release_tasks() {
  local rc=0 watcher
  yield_cpu_of_oneoff "$WEB_SERVICE" &
  watcher=$!
  compose_at "$NEW_VERSION" run --rm --no-deps -T -e "PD_MIGRATE=$((!SKIP_MIGRATE))" \
    "$WEB_SERVICE" "${MANAGE_CMD[@]}" shell -c "$RELEASE_TASKS_PY" || rc=$?
  kill "$watcher" 2>/dev/null || true
  wait "$watcher" 2>/dev/null || true
  case $rc in
    0) return 0 ;;
    4) FAILED_STEP=static ;;
    *) FAILED_STEP=${FAILED_STEP:-migrate} ;;
  esac
  return "$rc"
}

# Run inside a new web container by Django's `manage.py shell -c`: keeps the
# hashed static files named in the manifests of the last PD_STATIC_KEEP
# releases and deletes older hashed files, so cached pages of recent releases
# still find their assets while the volume stops growing.
# shellcheck disable=SC2016 # Python, not shell
PRUNE_STATIC_PY='
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
'

# Pruning runs in a new container (already started: no one-off container to
# create) while the old ones drain; prune_static_wait reports it.
PRUNE_PID='' PRUNE_OUT=''
prune_static_start() {
  local id
  ((STATIC_KEEP > 0)) || return 0
  id=$(head -n 1 <<<"$NEW_IDS")
  [[ -n $id ]] || return 0
  PRUNE_OUT=$(mktemp)
  docker exec -e "PD_STATIC_KEEP=$STATIC_KEEP" -e "PD_VERSION=$NEW_VERSION" "$id" \
    "${MANAGE_CMD[@]}" shell -c "$PRUNE_STATIC_PY" >"$PRUNE_OUT" 2>&1 &
  PRUNE_PID=$!
}

prune_static_wait() {
  ((STATIC_KEEP > 0)) || { echo "static_keep is 0: nothing pruned"; return 0; }
  [[ -n $PRUNE_PID ]] || { echo "no new container to prune from"; return 0; }
  if ! wait "$PRUNE_PID"; then
    echo "warning: could not prune old static files (the deploy itself succeeded):"
  fi
  cat "$PRUNE_OUT"
  rm -f "$PRUNE_OUT"
  PRUNE_PID=''
}
