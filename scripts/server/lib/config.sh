# shellcheck shell=bash disable=SC2034,SC2153 # variables shared across the files bin/deploy sources
# pushdeploy server side: the environment's settings, the server's version, and .env.
# Sourced by bin/deploy; defines functions only.

# Reads /etc/pushdeploy/ENV.conf (written by `inv server.setup`) without
# sourcing it: only known keys, each value checked.
load_env_conf() { # env
  local env=$1 key value file
  [[ $env =~ $PD_ENV_RE ]] || die "$PD_EXIT_USAGE" "invalid environment name '$env'"
  file="$PD_ETC/$env.conf"
  [[ -f $file ]] || die "$PD_EXIT_USAGE" "environment '$env' is not set up on this server: run \`inv server.setup --env $env\`"
  ENV_NAME=$env
  ENV_CONF=$file
  APP_DIR='' PROJECT='' COMPOSE='docker compose' COMPOSE_FILES='docker-compose.yml'
  SERVICES='web proxy' WEB_SERVICE='web' DB_SERVICE='' PROXY_SERVICE='' MANAGE='python manage.py' VERSION_RE=''
  DOCKER_HOST_VALUE='' HEALTH_TIMEOUT='60' BACKUP='no' BACKUP_KEEP='10' DRAIN_SECONDS='1' DNS_VALID='1' STATIC_KEEP='3'
  ORDERING='none' SWITCH='slots' PRIORITY='low' APP_FILES_SHA256=''
  HOOKS_BEFORE=() HOOKS_AFTER=() MANAGE_COMMANDS=()
  PULL_CHANNEL='' PULL_EVERY='60'
  ENGINE='compose' MANAGER_COMPOSE_FILES='' CONVERGE_TIMEOUT='300' BACKUP_IMAGE=''
  REVIEW_TEMPLATE='no' REVIEW_DOMAIN='' REVIEW_MAX='5' REVIEW_PORT='8088' REVIEW_SEED='fresh' SCRUB=''
  while IFS='=' read -r key value || [[ -n $key ]]; do
    case $key in
      '' | '#'*) ;;
      APP_DIR) APP_DIR=$value ;;
      PROJECT) PROJECT=$value ;;
      COMPOSE) COMPOSE=$value ;;
      COMPOSE_FILES) COMPOSE_FILES=$value ;;
      SERVICES) SERVICES=$value ;;
      WEB_SERVICE) WEB_SERVICE=$value ;;
      DB_SERVICE) DB_SERVICE=$value ;;
      PROXY_SERVICE) PROXY_SERVICE=$value ;;
      BACKUP) BACKUP=$value ;;
      BACKUP_KEEP) BACKUP_KEEP=$value ;;
      DRAIN_SECONDS) DRAIN_SECONDS=$value ;;
      DNS_VALID) DNS_VALID=$value ;;
      STATIC_KEEP) STATIC_KEEP=$value ;;
      ORDERING) ORDERING=$value ;;
      SWITCH) SWITCH=$value ;;
      PRIORITY) PRIORITY=$value ;;
      MANAGE) MANAGE=$value ;;
      VERSION_RE) VERSION_RE=$value ;;
      DOCKER_HOST) DOCKER_HOST_VALUE=$value ;;
      HEALTH_TIMEOUT) HEALTH_TIMEOUT=$value ;;
      APP_FILES_SHA256) APP_FILES_SHA256=$value ;;
      HOOK_BEFORE_SWITCH) HOOKS_BEFORE+=("$value") ;;
      HOOK_AFTER_SWITCH) HOOKS_AFTER+=("$value") ;;
      MANAGE_COMMAND) MANAGE_COMMANDS+=("$value") ;;
      PULL_CHANNEL) PULL_CHANNEL=$value ;;
      PULL_EVERY) PULL_EVERY=$value ;;
      ENGINE) ENGINE=$value ;;
      MANAGER_COMPOSE_FILES) MANAGER_COMPOSE_FILES=$value ;;
      CONVERGE_TIMEOUT) CONVERGE_TIMEOUT=$value ;;
      BACKUP_IMAGE) BACKUP_IMAGE=$value ;;
      KEYS_SHA256) ;; # the named keys' scopes (PD_KEYS_FILE), for the settings hash only
      REVIEW_TEMPLATE | REVIEW_DOMAIN | REVIEW_MAX | REVIEW_PORT | REVIEW_SEED | SCRUB) printf -v "$key" '%s' "$value" ;; # lib/review.sh, lib/refresh.sh check them
      *) die 1 "$file: unknown key '$key': reinstall with \`inv server.setup --env $env\`" ;;
    esac
  done <"$file"
  [[ $APP_DIR == /* && $APP_DIR != *..* ]] || die 1 "$file: APP_DIR must be an absolute path"
  [[ $PROJECT =~ ^[a-z0-9][a-z0-9_-]*$ ]] || die 1 "$file: invalid PROJECT '$PROJECT'"
  [[ $WEB_SERVICE =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || die 1 "$file: invalid WEB_SERVICE '$WEB_SERVICE'"
  local number
  for number in "$HEALTH_TIMEOUT" "$BACKUP_KEEP" "$DRAIN_SECONDS" "$DNS_VALID" "$STATIC_KEEP"; do
    [[ $number =~ ^[0-9]{1,5}$ ]] || die 1 "$file: HEALTH_TIMEOUT, BACKUP_KEEP, DRAIN_SECONDS, DNS_VALID and STATIC_KEEP are whole numbers"
  done
  [[ $ORDERING =~ ^(none|semver|build)$ ]] || die 1 "$file: ORDERING is none, semver or build"
  [[ $SWITCH =~ ^(slots|recreate)$ ]] || die 1 "$file: SWITCH is slots or recreate"
  [[ $PRIORITY =~ ^(low|normal)$ ]] || die 1 "$file: PRIORITY is low or normal"
  check_management_conf
  [[ -z $PULL_CHANNEL || $PULL_CHANNEL =~ $PD_CHANNEL_RE ]] || die 1 "$file: invalid PULL_CHANNEL '$PULL_CHANNEL'"
  [[ $PULL_EVERY =~ ^[1-9][0-9]{0,5}$ ]] || die 1 "$file: PULL_EVERY is a whole number of seconds"
  [[ $ENGINE =~ ^(compose|swarm)$ ]] || die 1 "$file: ENGINE is compose or swarm"
  [[ $CONVERGE_TIMEOUT =~ ^[0-9]{1,5}$ ]] || die 1 "$file: CONVERGE_TIMEOUT is a whole number"
  [[ -z $BACKUP_IMAGE || $BACKUP_IMAGE =~ $PD_IMAGE_RE ]] || die 1 "$file: invalid BACKUP_IMAGE"
  [[ $MANAGER_COMPOSE_FILES =~ ^[A-Za-z0-9_.\ /-]*$ && $MANAGER_COMPOSE_FILES != *..* ]] || die 1 "$file: MANAGER_COMPOSE_FILES are relative paths"
  read -r -a COMPOSE_CMD <<<"$COMPOSE"
  read -r -a MANAGE_CMD <<<"$MANAGE"
  read -r -a SERVICE_LIST <<<"$SERVICES"
  FILE_ARGS=()
  local f
  for f in $COMPOSE_FILES; do FILE_ARGS+=(-f "$f"); done
  if [[ -n $DOCKER_HOST_VALUE ]]; then export DOCKER_HOST=$DOCKER_HOST_VALUE; fi
  STATE_DIR="$PD_STATE/$env"
  RUNS_DIR="$STATE_DIR/runs"
  HISTORY="$STATE_DIR/history.jsonl"
  [[ -d $RUNS_DIR ]] || mkdir -p "$RUNS_DIR"
}

# The hash of the installed server side: the files of PD_SERVER_FILES, in order.
# Every request checks it (--expect), so it costs two processes, not one per file.
server_hash() {
  local name sum
  local -a files=()
  for name in $PD_SERVER_FILES; do files+=("$PD_HOME/$name"); done
  read -r sum _ < <(cat "${files[@]}" | sha256sum)
  printf '%s\n' "${sum:0:16}"
}

conf_hash() {
  local sum
  read -r sum _ < <(sha256sum <"$ENV_CONF")
  printf '%s\n' "${sum:0:16}"
}

# The client sends --expect=SERVERHASH.CONFHASH: both must match what is installed.
check_expected() { # expected
  local expected=$1 actual
  [[ -z $expected ]] && return 0
  actual="$(server_hash).$(conf_hash)"
  [[ $expected == "$actual" ]] && return 0
  if [[ ${expected%%.*} != "${actual%%.*}" ]]; then
    die "$PD_EXIT_OUTDATED" "the server side here ($(server_hash)) differs from your project's (${expected%%.*}): run \`inv server.setup --env ${TEMPLATE:-$ENV_NAME}\`"
  fi
  die "$PD_EXIT_OUTDATED" "the settings installed for '$ENV_NAME' differ from your invoke.yaml and project files: run \`inv server.setup --env ${TEMPLATE:-$ENV_NAME}\`"
}

check_version() { # version
  [[ $1 =~ $PD_VERSION_RE ]] || die "$PD_EXIT_USAGE" "invalid version '$1': a Docker tag is [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
  [[ -z $VERSION_RE || $1 =~ $VERSION_RE ]] || is_pinned_version "$1" || die "$PD_EXIT_USAGE" "version '$1' does not match $ENV_NAME's pattern $VERSION_RE"
}

# ---------------------------------------------------------------- compose and .env

compose() { (cd "$APP_DIR" && "${COMPOSE_CMD[@]}" -p "$PROJECT" "${FILE_ARGS[@]}" "$@"); }

# Compose reads VERSION from .env; a variable in the environment wins, which lets
# us pull and migrate with the new version before .env says so.
compose_at() { # version compose-args...
  local version=$1
  shift
  VERSION=$version compose "$@"
}

current_version() {
  local line
  [[ -f $APP_DIR/.env ]] || return 0
  while IFS= read -r line || [[ -n $line ]]; do
    if [[ $line == VERSION=* ]]; then
      printf '%s\n' "${line#VERSION=}"
      return 0
    fi
  done <"$APP_DIR/.env"
}

# Rewrites VERSION= in .env through a temp file and a rename: every other line
# stays byte for byte, and a crash leaves either the old file or the new one.
write_env_version() { # version
  local version=$1 file="$APP_DIR/.env" tmp line found=0 nl
  tmp=$(mktemp "$file.XXXXXX") || return 1
  {
    while IFS= read -r line; nl=$?; [[ $nl -eq 0 || -n $line ]]; do
      if [[ $line == VERSION=* && $found -eq 0 ]]; then
        line="VERSION=$version"
        found=1
      fi
      if [[ $nl -eq 0 ]]; then printf '%s\n' "$line"; else printf '%s' "$line"; fi
    done <"$file"
    if [[ $found -eq 0 ]]; then printf 'VERSION=%s\n' "$version"; fi
  } >"$tmp" || { rm -f "$tmp"; return 1; }
  chown root:root "$tmp" && chmod 0600 "$tmp" && sync "$tmp" && mv -f "$tmp" "$file"
}
