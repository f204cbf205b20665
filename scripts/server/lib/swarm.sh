# shellcheck shell=bash disable=SC2034,SC2153 # variables shared across the files bin/deploy sources
# pushdeploy server side: `engine: swarm`. The environment's host is a swarm
# manager; the compose files are a stack (`docker stack deploy -c`), named PROJECT.
# A deploy, in the same step vocabulary as compose:
#   preflight  this node is a manager; the stack file renders (`docker stack config`)
#              and every service tagged with the version updates start-first,
#              gated by a health check (lib/swarm.py problems)
#   pull       the new image on the manager, and its digest (the nodes pull that
#              digest through the registry: stack deploy pins it)
#   backup     (BACKUP=yes) pg_dump of the web service's database server, from a
#              one-off container of BACKUP_IMAGE on the stack's network
#   migrate    migrations and collectstatic in a one-off container of the new image
#              on the stack's (attachable overlay) network, before any service changes
#   proxy      the services outside the stack (MANAGER_COMPOSE_FILES: a proxy that
#              must not be a swarm task) up with compose on the manager
#   deploy     `docker stack deploy` with VERSION set to the new version
#   converge   every service of the stack watched until converged, failed (update
#              paused, or rolled back by swarm itself) or CONVERGE_TIMEOUT: stack
#              deploy returns before anything converged; then VERSION in .env
# On any failure after `deploy`, the WHOLE stack goes back to the previous
# version (stack deploy again with it, watched the same way): swarm's own
# rollback works service by service and would leave the others on the new one.

STACK_DEPLOYED=0 SWARM_SINCE='' WATCH_REPORT=''

indent() { local line; while IFS= read -r line; do printf '  %s\n' "$line"; done; }

swarm_py() { python3 -I "$PD_HOME/lib/swarm.py" "$@"; }

# Runs a command in APP_DIR with .env's variables in its environment (docker
# stack deploy reads no .env file), VERSION set to VERSION and PD_STACK to PROJECT.
with_dotenv() { # version command...
  local version=$1 line key value
  shift
  local -a vars=()
  if [[ -f $APP_DIR/.env ]]; then
    while IFS= read -r line || [[ -n $line ]]; do
      [[ $line =~ ^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || continue
      key=${BASH_REMATCH[2]} value=${BASH_REMATCH[3]}
      if [[ $value =~ ^\"(.*)\"$ || $value =~ ^\'(.*)\'$ ]]; then value=${BASH_REMATCH[1]}; fi
      vars+=("$key=$value")
    done <"$APP_DIR/.env"
  fi
  (cd "$APP_DIR" && env "${vars[@]}" "VERSION=$version" "PD_STACK=$PROJECT" "$@")
}

stack_file_args() {
  local f
  for f in $COMPOSE_FILES; do printf -- '-c\n%s\n' "$f"; done
}

# The stack files as compose renders them (with .env), as JSON: lib/swarm.py reads it.
# Compose's warnings (deploy: keys it does not apply itself) are not ours to
# show: its stderr only when it fails.
stack_json() { # version
  local err out rc=0
  err=$(mktemp)
  out=$(compose_at "$1" config --format json 2>"$err") || rc=$?
  if ((rc == 0)); then printf '%s\n' "$out"; else cat "$err"; fi
  rm -f "$err"
  return "$rc"
}

manager_compose() {
  local f
  local -a files=()
  for f in $MANAGER_COMPOSE_FILES; do files+=(-f "$f"); done
  (cd "$APP_DIR" && PD_STACK=$PROJECT "${COMPOSE_CMD[@]}" -p "$PROJECT" "${files[@]}" "$@")
}

swarm_role() {
  local state
  state=$(docker info -f '{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}' 2>&1) || { echo "unreachable: $state"; return 0; }
  case $state in
    'active true') echo manager ;;
    'active false') echo worker ;;
    *) echo "${state%% *}" ;;
  esac
}

# What stops a deploy of VERSION, one problem a line; none: ready.
swarm_problems() { # version
  local version=$1 role json out
  role=$(swarm_role)
  [[ $role == manager ]] || echo "this node is not a swarm manager (it is: $role): list a manager in the environment's hosts, or run \`docker swarm init\` here"
  [[ -f $APP_DIR/.env ]] || echo "missing $APP_DIR/.env: run \`inv server.setup --env $ENV_NAME\`"
  local -a stack_args
  mapfile -t stack_args < <(stack_file_args)
  if ! out=$(with_dotenv "$version" docker stack config "${stack_args[@]}" 2>&1 >/dev/null); then
    echo "\`docker stack config\` rejects the stack file(s) $COMPOSE_FILES: $out"
  fi
  if ! json=$(stack_json "$version" 2>&1); then
    echo "the stack file(s) $COMPOSE_FILES do not render: $json"
    return 0
  fi
  swarm_py problems "$version" <<<"$json"
}

swarm_preflight() {
  local problems
  problems=$(swarm_problems "$NEW_VERSION")
  [[ -z $problems ]] || { echo "$ENV_NAME cannot be deployed safely:"; indent <<<"$problems"; return 1; }
  echo "$(docker info -f '{{.Name}}') is a manager of a swarm of $(docker node ls -q | wc -l) node(s); the stack file is ready"
}

# The one-off container's settings (image=, network=, mount= lines) for VERSION;
# WEB_SERVICE's environment goes to ENV_FILE.
release_settings() { # version env-file
  stack_json "$1" | swarm_py release "$WEB_SERVICE" "$2"
}

swarm_pull() {
  local image
  image=$(release_settings "$NEW_VERSION" /dev/null | sed -n 's/^image=//p')
  [[ -n $image ]] || return 1
  echo "pulling $image"
  docker pull -q "$image" >/dev/null || { echo "could not pull $image: is it pushed, and does this node reach the registry?"; return 1; }
  echo "digest $(docker image inspect -f '{{join .RepoDigests " "}}' "$image")"
}

# The stack's network must exist before the stack does (first deploy): made here
# as stack deploy would, labelled with the stack, so stack deploy adopts it.
ensure_stack_network() { # name
  local attachable
  if attachable=$(docker network inspect -f '{{.Attachable}}' "$1" 2>/dev/null); then
    [[ $attachable == true ]] && return 0
    echo "network $1 is not attachable: declare it \`attachable: true\` in the stack file (the one-off container joins it), then \`docker stack rm $PROJECT\` once to recreate it"
    return 1
  fi
  docker network create -d overlay --attachable --label "com.docker.stack.namespace=$PROJECT" "$1" >/dev/null || return 1
  echo "created the stack's network $1 (overlay, attachable)"
}

# Migrations and static files (RELEASE_TASKS_PY, lib/steps.sh) in a one-off
# container of the new version on the stack's network, on this node.
swarm_release_tasks() {
  local env_file settings image network rc=0 line
  local -a mounts=()
  env_file=$(mktemp)
  settings=$(release_settings "$NEW_VERSION" "$env_file") || { rm -f "$env_file"; return 1; }
  image=$(sed -n 's/^image=//p' <<<"$settings")
  network=$(sed -n 's/^network=//p' <<<"$settings")
  while IFS= read -r line; do mounts+=(-v "${line#mount=}"); done < <(grep '^mount=' <<<"$settings")
  ensure_stack_network "$network" || { rm -f "$env_file"; return 1; }
  echo "one-off container of $image on $network"
  docker run --rm --name "$PROJECT-release-$$" --network "$network" --env-file "$env_file" "$(oneoff_cpu_option)" \
    -e "PD_MIGRATE=$((!SKIP_MIGRATE))" "${mounts[@]}" "$image" "${MANAGE_CMD[@]}" shell -c "$RELEASE_TASKS_PY" || rc=$?
  rm -f "$env_file"
  case $rc in
    0) return 0 ;;
    4) FAILED_STEP=static ;;
    *) FAILED_STEP=${FAILED_STEP:-migrate} ;;
  esac
  return "$rc"
}

# libpq's settings from the web service's own environment, for pg_dump in a
# one-off container: PG* if it has them, else POSTGRES_HOST, _PORT, _DB, _USER and
# _PASSWORD, else DATABASE_URL.
# shellcheck disable=SC2016 # expanded by the one-off container's shell
SWARM_BACKUP_SH='export PGHOST="${PGHOST:-${POSTGRES_HOST:-}}" PGPORT="${PGPORT:-${POSTGRES_PORT:-5432}}" \
PGUSER="${PGUSER:-${POSTGRES_USER:-}}" PGPASSWORD="${PGPASSWORD:-${POSTGRES_PASSWORD:-}}" PGDATABASE="${PGDATABASE:-${POSTGRES_DB:-}}"
if [ -z "$PGHOST" ] && [ -n "${DATABASE_URL:-}" ]; then exec pg_dump -Fc "$DATABASE_URL"; fi
[ -n "$PGHOST" ] || { echo "the web service names no database server (PGHOST, POSTGRES_HOST or DATABASE_URL)" >&2; exit 2; }
exec pg_dump -Fc'

# pg_dump (custom format) of the database server the web service uses, from a
# one-off container of BACKUP_IMAGE on the stack's network (the server may be
# reachable only from there), into the same root-only directory and with the
# same rotation as compose's backups. A failed backup stops the deploy.
swarm_backup() {
  local env_file settings network file rc=0
  [[ -n $BACKUP_IMAGE ]] || { echo "backup needs backup_image (an image with pg_dump) for engine: swarm"; return 1; }
  file=$(new_backup_file) || return 1
  env_file=$(mktemp)
  settings=$(release_settings "$NEW_VERSION" "$env_file") || { rm -f "$env_file"; return 1; }
  network=$(sed -n 's/^network=//p' <<<"$settings")
  ensure_stack_network "$network" || { rm -f "$env_file"; return 1; }
  echo "pg_dump in a one-off container of $BACKUP_IMAGE on $network"
  docker run --rm --name "$PROJECT-backup-$$" --network "$network" --env-file "$env_file" "$(oneoff_cpu_option)" \
    "$BACKUP_IMAGE" sh -c "$SWARM_BACKUP_SH" >"$file.part" || rc=$?
  rm -f "$env_file"
  if ((rc != 0)) || [[ $(head -c 5 "$file.part") != PGDMP ]]; then
    rm -f "$file.part"
    echo "pg_dump failed (exit $rc): nothing changed; check the database server and backup_image's pg_dump version"
    return 1
  fi
  store_backup "$file"
}

# `migrate --plan` (deploy.plan) in a one-off container of VERSION on the
# stack's network, as swarm_release_tasks would migrate; printed like plan_migrations.
swarm_plan_migrations() { # version
  local env_file settings image network out rc=0
  env_file=$(mktemp)
  if ! settings=$(release_settings "$1" "$env_file" 2>&1); then
    rm -f "$env_file"
    echo "migrations=unknown (the stack file does not render: $(tail -n 1 <<<"$settings"))"
    return 0
  fi
  image=$(sed -n 's/^image=//p' <<<"$settings")
  network=$(sed -n 's/^network=//p' <<<"$settings")
  if ! out=$(docker pull -q "$image" 2>&1); then
    rm -f "$env_file"
    echo "migrations=unknown (could not pull $image: $(tail -n 1 <<<"$out"))"
    return 0
  fi
  out=$(docker run --rm --network "$network" --env-file "$env_file" "$(oneoff_cpu_option)" "$image" \
    "${MANAGE_CMD[@]}" migrate --plan 2>&1 </dev/null) || rc=$?
  rm -f "$env_file"
  report_migration_plan "$rc" "$out" "does the stack's network $network exist, and the database answer?"
}

# Services outside the stack, with compose on this node: created if missing,
# recreated only if their configuration changed; the proxy reloads changed files.
swarm_manager_services() {
  local applied="$STATE_DIR/proxy-config"
  [[ -n $MANAGER_COMPOSE_FILES ]] || { echo "no manager_compose_files: nothing outside the stack"; return 0; }
  manager_compose up -d || return 1
  [[ -z $PROXY_SERVICE || (-f $applied && $(cat "$applied") == "$APP_FILES_SHA256") ]] && return 0
  manager_compose exec -T "$PROXY_SERVICE" nginx -t -q && manager_compose exec -T "$PROXY_SERVICE" nginx -s reload || return 1
  echo "$APP_FILES_SHA256" >"$applied"
  echo "$PROXY_SERVICE runs with the current configuration"
}

swarm_stack_deploy() { # version
  local out rc=0
  local -a stack_args
  mapfile -t stack_args < <(stack_file_args)
  SWARM_SINCE=$EPOCHREALTIME
  STACK_DEPLOYED=1
  echo "docker stack deploy $PROJECT with VERSION=$1"
  out=$(with_dotenv "$1" docker stack deploy --resolve-image always "${stack_args[@]}" "$PROJECT" 2>&1) || rc=$?
  # Newer CLIs say they do not wait; we do (swarm_watch).
  grep -v 'detach=false\|^$' <<<"$out" || true
  return "$rc"
}

# Docker's JSON for lib/swarm.py watch: the stack's services, their tasks, the nodes.
swarm_snapshot() {
  local ids services='[]' tasks='[]' task_ids nodes
  ids=$(docker service ls -q --filter "label=com.docker.stack.namespace=$PROJECT")
  if [[ -n $ids ]]; then
    # shellcheck disable=SC2086 # one id per word
    services=$(docker service inspect $ids 2>/dev/null) || services='[]'
    # shellcheck disable=SC2086
    task_ids=$(docker service ps -q $ids 2>/dev/null || true)
    # A task may go between ps and inspect: inspect still prints the others.
    # shellcheck disable=SC2086
    [[ -z $task_ids ]] || tasks=$(docker inspect --type task $task_ids 2>/dev/null || true)
    [[ $tasks == \[* ]] || tasks='[]'
  fi
  # shellcheck disable=SC2046 # one id per word
  nodes=$(docker node inspect $(docker node ls -q) 2>/dev/null) || nodes='[]'
  printf '{"services": %s, "tasks": %s, "nodes": %s}\n' "$services" "$tasks" "$nodes"
}

# Watches every service of the stack until all converged (0), one failed (1) or
# CONVERGE_TIMEOUT passed (1). Prints each service's state whenever it changes.
swarm_watch() { # deploy|rollback since
  local phase=$1 since=$2 deadline=$((SECONDS + CONVERGE_TIMEOUT)) report last="" line name detail
  while :; do
    report=$(swarm_snapshot | swarm_py watch "$phase" "$since") ||
      report=$'updating\t?\tthe swarm\'s state could not be read (the manager is busy?)'
    if [[ $report != "$last" ]]; then
      while IFS=$'\t' read -r line name detail; do
        case $line in
          down) echo "node $name is DOWN (not answering the manager): its tasks are rescheduled elsewhere" ;;
          *) printf '  %-9s %s: %s\n' "$line" "$name" "$detail" ;;
        esac
      done < <(comm -13 <(sort <<<"$last") <(sort <<<"$report"))
      last=$report
    fi
    if grep -q '^failed' <<<"$report"; then
      echo "the update failed: $(grep '^failed' <<<"$report" | cut -f2 | paste -sd' ')"
      return 1
    fi
    if ! grep -q '^updating' <<<"$report"; then
      [[ -n $report ]] || { echo "the stack $PROJECT has no services"; return 1; }
      WATCH_REPORT=$report
      return 0
    fi
    if ((SECONDS >= deadline)); then
      echo "not converged after ${CONVERGE_TIMEOUT}s (converge_timeout): $(grep '^updating' <<<"$report" | cut -f2,3 | tr '\t' ' ' | paste -sd';')"
      return 1
    fi
    sleep 1
  done
}

swarm_converge() {
  swarm_watch deploy "$SWARM_SINCE" || return 1
  SWITCHED=1
  write_env_version "$NEW_VERSION" || { echo "could not write $APP_DIR/.env"; return 1; }
  echo "every service converged; VERSION=$NEW_VERSION in $APP_DIR/.env"
}

# Back to the previous version, the whole stack at once.
swarm_undo() {
  if ((!STACK_DEPLOYED)); then
    echo "no service was changed: $ENV_NAME still runs $PREVIOUS_VERSION"
    return 0
  fi
  if [[ $PREVIOUS_VERSION == none ]]; then
    echo "nothing was deployed here before: the stack stays on $NEW_VERSION as swarm left it; deploy a version that works"
    return 1
  fi
  echo "rolling the whole stack back to $PREVIOUS_VERSION (every service, not only the one that failed)"
  swarm_stack_deploy "$PREVIOUS_VERSION" || return 1
  swarm_pause_on_failure || echo "warning: could not set the services' update policy for the rollback (all at once, pause on failure)"
  swarm_watch rollback "$SWARM_SINCE" || return 1
  [[ $(current_version) == "$PREVIOUS_VERSION" ]] || write_env_version "$PREVIOUS_VERSION" || return 1
  local down
  down=$(docker node ls --format '{{.Hostname}} {{.Status}}' 2>/dev/null | awk '$2 != "Ready" { print $1 }' | paste -sd' ')
  if [[ -n $down ]]; then
    echo "$ENV_NAME runs $PREVIOUS_VERSION again on every node that answers; down: $down (a task still running there stops when its node answers the manager again)"
  else
    echo "$ENV_NAME runs $PREVIOUS_VERSION again on every node"
  fi
  if grep -q ' still running on ' <<<"$WATCH_REPORT"; then
    echo "swarm is still stopping tasks it replaced:$(grep -o '; [0-9]* task(s) of [^;]* still running on [^;]*' <<<"$WATCH_REPORT" | cut -c2- | paste -sd';')"
  fi
}

# The rollback's update policy, until the next deploy's stack file sets the
# file's again (only the policy changes: no task is replaced for it):
#   all tasks at once (still start-first): a node that stopped answering holds
#   up only its own tasks, not the undone version's on every node after it;
#   pause on failure: swarm's own failure_action rollback would take a service
#   whose update fails later (a node that comes back and rejects its task) back
#   to its previous spec, the version just undone.
swarm_pause_on_failure() {
  local id
  for id in $(docker service ls -q --filter "label=com.docker.stack.namespace=$PROJECT"); do
    docker service update --detach --quiet --update-parallelism 0 --update-failure-action pause "$id" >/dev/null || return 1
  done
}

# The whole swarm deploy, in order (run_deploy hands over here for ENGINE=swarm).
run_swarm_deploy() {
  local log=$1 outcome=ok migrate_step=migrate took
  PREVIOUS_VERSION=$(current_version)
  PREVIOUS_VERSION=${PREVIOUS_VERSION:-none}
  RUN_STARTED=$EPOCHREALTIME
  ((!SKIP_MIGRATE)) || migrate_step=static
  printf '%s %s of %s to %s (swarm stack %s, running: %s) by %s\n' "$(now_iso)" "$KIND" "$NEW_VERSION" "$ENV_NAME" \
    "$PROJECT" "$PREVIOUS_VERSION" "${BY:-unknown}"

  if step preflight swarm_preflight &&
    step pull swarm_pull &&
    { [[ $BACKUP != yes ]] || ((SKIP_MIGRATE)) || step backup swarm_backup; } &&
    { ((!MAINTENANCE)) || step maintenance-on maintenance on; } &&
    step "$migrate_step" swarm_release_tasks &&
    step proxy swarm_manager_services &&
    step deploy swarm_stack_deploy "$NEW_VERSION" &&
    step converge swarm_converge
  then
    [[ -z $ORDER ]] || echo "$ORDER" >"$STATE_DIR/order"
  else
    outcome=failed
    step rollback swarm_undo || true
  fi
  if ((MAINTENANCE)); then step maintenance-off maintenance off || true; fi

  took=$(elapsed "$RUN_STARTED")
  record "$outcome" "$took" "$log"
  if [[ $outcome == ok ]]; then
    printf 'deployed %s to %s in %ss (was %s)\n' "$NEW_VERSION" "$ENV_NAME" "$took" "$PREVIOUS_VERSION"
    return 0
  fi
  printf 'the stack %s runs: %s\n' "$PROJECT" "$(stack_versions)"
  printf 'deploy of %s to %s FAILED at %s after %ss; %s serves %s\n' \
    "$NEW_VERSION" "$ENV_NAME" "$FAILED_STEP" "$took" "$ENV_NAME" "$(current_version)"
  return 1
}

# The versions the stack's services run now, e.g. "web=1.1.0".
stack_versions() {
  docker service ls --filter "label=com.docker.stack.namespace=$PROJECT" --format '{{.Name}}={{.Image}}' 2>/dev/null |
    sed -E "s/^${PROJECT}_//; s/@sha256:[0-9a-f]+//; s/=.*:/=/" | paste -sd' '
}

# `bin/deploy setup-check ENV` (run by bin/install as root): what a deploy
# would refuse, before the first deploy. Exit 1 with the problems.
swarm_setup_check() {
  local problems
  problems=$(swarm_problems pushdeploy-check)
  if [[ -n $problems ]]; then
    echo "pushdeploy: the swarm stack of $ENV_NAME is not ready for a safe deploy:"
    indent <<<"$problems"
    return 1
  fi
  echo "swarm: this node is a manager; the stack file is valid, its services update start-first behind a health check"
}
