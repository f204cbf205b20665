# shellcheck shell=bash disable=SC2034,SC2153 # variables shared across the files bin/deploy sources
# pushdeploy server side: moving a database between environments, for the admin
# connection only (`inv db.refresh`). The client streams the dump from one host's
# `db-dump` to another's (or the same host's) `db-restore` through its own memory:
#   db-dump ENV [--fresh]        the newest backup of ENV (or a fresh pg_dump) on stdout
#   db-restore ENV --from=SRC    the dump on stdin, then a trailer line
#                                "pushdeploy-sha256:HEX": restored with ENV in
#                                maintenance mode, migrated, scrubbed (SCRUB), recorded
# A dump that arrives cut short fails its checksum before anything changes; a
# restore that fails rolls back (one transaction) and the old data serves on; a
# scrub that fails leaves maintenance mode on, so unscrubbed data is never served.

REFRESH_TRAILER_BYTES=84 # "\npushdeploy-sha256:" + 64 hex digits + "\n"

# Admin verbs are refused to an account whose keys are forced to the entrypoint
# (a deploy account), even if it found a way to ask sudo for them.
check_admin_caller() { # verb
  local home
  [[ -n ${SUDO_USER-} && $SUDO_USER != root ]] || return 0
  home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
  if [[ -n $home && -f $home/.ssh/authorized_keys ]] && grep -qF "command=\"$PD_PREFIX/bin/entrypoint" "$home/.ssh/authorized_keys"; then
    die "$PD_EXIT_USAGE" "$1 is for the admin connection only (it reads or replaces a whole database): a deploy account may not run it"
  fi
}

latest_backup() { # dir -> newest *.dump, or nothing
  # No backups directory (no deploy with backup: true yet) is "nothing", not a failure:
  # under pipefail find's error would end db-dump silently instead of taking a fresh dump.
  [[ -d $1 ]] || return 0
  find "$1" -maxdepth 1 -name '*.dump' -printf '%T@ %p\n' 2>/dev/null | sort -rn | head -n 1 | cut -d' ' -f2-
}

# shellcheck disable=SC2016 # expanded by the database container's shell
restore_file() { # dump-file
  [[ -n $1 && -f $1 ]] || { echo "no dump to restore (no backup yet?)"; return 1; }
  echo "restoring $(du -h "$1" | cut -f1) into $ENV_NAME's $DB_SERVICE, in one transaction"
  compose exec -T "$DB_SERVICE" sh -c 'pg_restore --clean --if-exists --no-owner --no-acl --single-transaction --exit-on-error -U "$POSTGRES_USER" -d "$POSTGRES_DB"' <"$1"
}

# The scrub step of the target environment (SCRUB in its conf): an SQL file of
# the app directory, run by psql, or one management command of the app.
# shellcheck disable=SC2016 # expanded by the database container's shell
scrub_database() {
  local path
  case $SCRUB in
    sql:*)
      path=${SCRUB#sql:}
      [[ $path =~ ^[A-Za-z0-9_.@+-]+(/[A-Za-z0-9_.@+-]+)*$ && $path != *..* && -f $APP_DIR/$path ]] ||
        { echo "scrub file $APP_DIR/$path is missing: list it under files: and run \`inv server.setup --env ${TEMPLATE:-$ENV_NAME}\`"; return 1; }
      echo "scrubbing with $path"
      compose exec -T "$DB_SERVICE" sh -c 'psql -v ON_ERROR_STOP=1 -q -U "$POSTGRES_USER" -d "$POSTGRES_DB"' <"$APP_DIR/$path"
      ;;
    manage:*)
      path=${SCRUB#manage:}
      [[ $path =~ ^[a-z][a-z0-9_]{0,63}$ ]] || { echo "SCRUB: '$path' is not a management command name"; return 1; }
      echo "scrubbing with manage.py $path"
      compose run --rm --no-deps -T "$WEB_SERVICE" "${MANAGE_CMD[@]}" "$path" </dev/null
      ;;
    *) echo "no scrub step configured (scrub: in invoke.yaml)"; return 1 ;;
  esac
}

# Reads the dump and its trailer from stdin into a root-only file; checks it.
receive_dump() { # file
  local file=$1 size trailer digest
  cat >"$file" || return 1
  size=$(stat -c %s "$file")
  ((size > REFRESH_TRAILER_BYTES)) || { echo "received $size bytes: no dump (did the source fail?)"; return 1; }
  local re='^pushdeploy-sha256:([0-9a-f]{64})$'
  trailer=$(tail -c "$((REFRESH_TRAILER_BYTES - 1))" "$file")
  [[ $(tail -c "$REFRESH_TRAILER_BYTES" "$file" | head -c 1) == '' && $trailer =~ $re ]] || { echo "the dump arrived without its checksum trailer (cut short?)"; return 1; }
  truncate -s "$((size - REFRESH_TRAILER_BYTES))" "$file" || return 1
  digest=$(sha256sum <"$file" | cut -c1-64)
  [[ $digest == "${BASH_REMATCH[1]}" ]] || { echo "the dump's checksum does not match: not restoring it"; return 1; }
  echo "received $((size - REFRESH_TRAILER_BYTES)) bytes, checksum ok"
}

migrate_current() {
  echo "migrating to what $(current_version) expects"
  compose run --rm --no-deps -T "$WEB_SERVICE" "${MANAGE_CMD[@]}" migrate --noinput </dev/null
}

# The refresh, in order. Nothing changes until the dump arrived whole.
run_refresh() { # log
  local log=$1 dump="$STATE_DIR/refresh-$$.dump" outcome=ok restored=0 took
  RUN_STARTED=$EPOCHREALTIME
  printf '%s refresh of %s from %s by %s\n' "$(now_iso)" "$ENV_NAME" "$OPT_FROM" "${BY:-unknown}"
  if step receive receive_dump "$dump" &&
    step maintenance-on maintenance on &&
    step database start_database &&
    step restore restore_file "$dump" && restored=1 &&
    step migrate migrate_current &&
    step scrub scrub_database; then
    step maintenance-off maintenance off || outcome=failed
  else
    outcome=failed
    if ((restored)); then
      echo "the scrub did not finish: $ENV_NAME stays in maintenance mode (fix the scrub, then refresh again)"
    elif [[ -f $APP_DIR/maintenance/on ]]; then
      step maintenance-off maintenance off || true
    fi
  fi
  rm -f "$dump"
  took=$(elapsed "$RUN_STARTED")
  history_tool append "$HISTORY" "time=$(now_iso)" "env=$ENV_NAME" "kind=refresh" "source=$OPT_FROM" "version=$(current_version)" \
    "previous=$(current_version)" "by=$BY" "url=$URL" "sudo_user=${SUDO_USER:-root}" "outcome=$outcome" \
    "failed_step=$FAILED_STEP" "duration=$took" "steps=@$STEPS_FILE"
  if [[ $outcome == ok ]]; then
    printf 'refreshed %s from %s in %ss (scrubbed)\n' "$ENV_NAME" "$OPT_FROM" "$took"
    return 0
  fi
  printf 'refresh of %s from %s FAILED at %s after %ss\n' "$ENV_NAME" "$OPT_FROM" "$FAILED_STEP" "$took"
  return 1
}

# shellcheck disable=SC2016 # expanded by the database container's shell
cmd_db_dump() {
  local file=''
  (( ${#POSITIONAL[@]} == 0 )) || die "$PD_EXIT_USAGE" "usage: db-dump ENV [--fresh]"
  [[ -n $DB_SERVICE ]] || die "$PD_EXIT_USAGE" "$ENV_NAME has no db_service to dump"
  ((OPT_FRESH)) || file=$(latest_backup "$STATE_DIR/backups")
  if [[ -n $file ]]; then
    printf 'sending the newest backup of %s: %s\n' "$ENV_NAME" "${file##*/}" >&2
    cat "$file"
    return
  fi
  printf 'taking a fresh pg_dump of %s\n' "$ENV_NAME" >&2
  compose exec -T "$DB_SERVICE" sh -c 'pg_dump -U "$POSTGRES_USER" -Fc "$POSTGRES_DB"'
}

cmd_db_restore() {
  local log rc=0
  if (( ${#POSITIONAL[@]} != 0 )) || [[ ! $OPT_FROM =~ $PD_ENV_RE || $OPT_FROM == "$ENV_NAME" ]]; then
    die "$PD_EXIT_USAGE" "usage: db-restore ENV --from=SOURCE_ENV (the dump on stdin)"
  fi
  [[ -n $DB_SERVICE ]] || die "$PD_EXIT_USAGE" "$ENV_NAME has no db_service to restore into"
  [[ -n $SCRUB ]] || die "$PD_EXIT_USAGE" "$ENV_NAME has no scrub step (scrub: in invoke.yaml): refusing to serve $OPT_FROM's data unscrubbed"
  take_lock || die "$PD_EXIT_BUSY" "busy: ${LOCK_HOLDER#* }; try again when it is done"
  name_lock_holder "refresh-$$" "refresh of $ENV_NAME from $OPT_FROM"
  log="$RUNS_DIR/$(date -u +%Y%m%dT%H%M%SZ)-refresh-$$.log"
  STEPS_FILE="${log%.log}.steps"
  : >"$STEPS_FILE"
  run_refresh "$log" 2>&1 | tee -a "$log" || rc=$?
  : >"$STATE_DIR/lock.info"
  return "$rc"
}
