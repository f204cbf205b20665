# shellcheck shell=bash disable=SC2034,SC2153 # variables shared across the files bin/deploy sources
# pushdeploy server side: the detached run's worker (pdserver/runs.py starts it,
# holding the lock on fd 9, and follows its log), its end when stopped half way,
# and the settling of runs whose process died.

run_file() { printf '%s/%s.%s' "$RUNS_DIR" "$1" "$2"; }

# The deploy lock is fd 9 on $STATE_DIR/lock; lock.info names its holder as
# "ID WHAT". It is empty only for the moment a run takes or gives back the
# lock, so a contender that finds it empty waits that moment out instead of
# reporting an unknown holder (or refusing a lock that is being freed).
UNNAMED_HOLDER='- another run (starting or finishing)'

read_lock_info() { # -> LOCK_HOLDER, empty while a run takes or gives back the lock
  LOCK_HOLDER=''
  { IFS= read -r LOCK_HOLDER <"$STATE_DIR/lock.info"; } 2>/dev/null || true
}

# What holds the lock, for the contenders: "ID WHAT by WHO in progress since TIME".
name_lock_holder() { # id what
  printf '%s %s by %s in progress since %s\n' "$1" "$2" "${BY:-unknown}" "$(now_iso)" >"$STATE_DIR/lock.info"
}

# Whether a run holds the lock, for status and plan, without taking it: a shared
# probe, so probes at the same moment (a pre-flight reaching one server under
# two names, two people asking for status) never see each other as a run.
lock_busy() { # -> 0 with LOCK_HOLDER set ("ID WHAT") while a run holds the lock, else 1
  exec 8>>"$STATE_DIR/lock"
  if flock -n -s 8 || wait_out_handover 8 -s; then
    exec 8>&-
    return 1
  fi
  exec 8>&-
  return 0
}

take_lock() { # -> 0 holding fd 9, or 1 with LOCK_HOLDER set ("ID WHAT")
  exec 9>>"$STATE_DIR/lock"
  # A status or plan probe holds it (shared) for an instant, whatever lock.info
  # says (after a run was killed outright, it still names that run).
  flock -n 9 || flock -w 0.3 9 || wait_out_handover 9
}

# While lock.info is empty, a run is taking or giving back the lock: tries FD's
# lock (with FLOCK-OPTION, e.g. -s) for up to 3 s. Else names the holder.
wait_out_handover() { # fd [flock-option] -> 0 holding the lock, or 1 with LOCK_HOLDER set
  local tries=0
  while read_lock_info && [[ -z $LOCK_HOLDER ]] && ((tries++ < 30)); do
    flock ${2:+"$2"} -w 0.1 "$1" && return 0
  done
  LOCK_HOLDER=${LOCK_HOLDER:-$UNNAMED_HOLDER}
  return 1
}

# The run's request, as pdserver/runs.py wrote it, into the globals the deploy reads.
read_request() { # id
  local key value
  KIND=deploy NEW_VERSION='' BY='' URL='' ORDER='' MAINTENANCE=0 SKIP_MIGRATE=0
  while IFS='=' read -r key value; do
    case $key in
      KIND) KIND=$value ;; VERSION) NEW_VERSION=$value ;; BY) BY=$value ;; URL) URL=$value ;;
      ORDER) ORDER=$value ;; MAINTENANCE) MAINTENANCE=$value ;; SKIP_MIGRATE) SKIP_MIGRATE=$value ;;
    esac
  done <"$(run_file "$1" request)"
}

worker() { # env id  (started by start_run only, holding the lock on fd 9)
  local id=$2 rc=0
  RECORDED='' RUN_STARTED=''
  [[ ${PD_RUN_ID-} == "$id" && -f $(run_file "$id" token) && ${PD_RUN_TOKEN-} == "$(cat "$(run_file "$id" token)")" ]] ||
    die "$PD_EXIT_USAGE" "not a deploy started by this script"
  rm -f "$(run_file "$id" token)"
  read_request "$id"
  STEPS_FILE=$(run_file "$id" steps)
  : >"$STEPS_FILE"
  trap '' HUP PIPE
  # A shutdown mid-deploy still cleans up, records the failure and answers.
  # A global in the trap: it runs inside whatever function the signal interrupts,
  # where a local of the same name (id) would stand in for this one.
  trap 'interrupted "$PD_RUN_ID"' TERM INT
  # The safety net: a worker that exits with no result recorded cleans up the
  # same way. Bash 5.2 can fail to parse a trap's command when the signal lands
  # while it expands a $(...), and then exits (status 2) without running it.
  trap 'exited_early "$PD_RUN_ID"' EXIT
  run_deploy "$(run_file "$id" log)" || rc=$?
  echo "$rc" >"$(run_file "$id" status)"
  : >"$STATE_DIR/lock.info"
  prune_runs
}

interrupted() { # id
  trap '' TERM INT
  echo "deploy interrupted (signal)"
  end_unfinished "$1"
}

exited_early() { # id  (the worker's EXIT trap)
  local rc=$?
  [[ -f $(run_file "$1" status) ]] && return "$rc"
  trap '' TERM INT
  echo "deploy ended unexpectedly (exit $rc)"
  end_unfinished "$1"
}

end_unfinished() { # id: clean up after a run stopped half way, record it and answer
  local outcome=failed
  trap - EXIT
  if [[ -n ${RECORDED-} ]]; then
    # Stopped after the run recorded its outcome: only the answer is missing.
    outcome=$RECORDED
  elif [[ -z ${RUN_STARTED-} ]]; then
    : # stopped before this run changed anything (while it settled an earlier run)
  elif ((SWITCHED)); then
    # The new version serves already: finish retiring the old one, do not undo.
    retire_old || true
    outcome=ok
  else
    FAILED_STEP=${FAILED_STEP:-interrupted}
    if [[ $ENGINE == swarm ]]; then
      swarm_undo || true
    elif [[ $SWITCH == recreate ]]; then undo_recreate || true; else discard_new || true; fi
  fi
  if [[ -z ${RECORDED-} ]]; then
    PREVIOUS_VERSION=${PREVIOUS_VERSION:-$(current_version)}
    record "$outcome" "$(elapsed "${RUN_STARTED:-$EPOCHREALTIME}")" "$(run_file "$1" log)"
    notify finished
  fi
  [[ $outcome == ok ]] && echo 0 >"$(run_file "$1" status)" || echo 1 >"$(run_file "$1" status)"
  : >"$STATE_DIR/lock.info"
  exit 1
}

dead_runs() { # own-id -> the ids of runs with a request and no status but own-id's, one a line
  local request id
  for request in "$RUNS_DIR"/*.request; do
    id=${request##*/} id=${id%.request}
    [[ -f $request && $id != "$1" && ! -f $(run_file "$id" status) ]] && printf '%s\n' "$id"
  done
  return 0
}

# A run whose process died without a result (SIGKILL, the OOM killer, a power
# cut) ran no trap: no status, no history line. The next run, holding the lock
# (so no other run lives), records it (dead_run_outcome), marks it ended for
# anyone following it, and puts .env back in line with what serves; start_new
# removes the containers it left. Prints what it did.
settle_dead_runs() { # the caller's own id, or ''
  local id line outcome dead=0
  for id in $(dead_runs "$1"); do
    line=$(grep -F "\"run\": \"$id\"" "$HISTORY" 2>/dev/null | tail -n 1 || true)
    if [[ -n $line ]]; then
      echo "deploy $id ended before it answered (its process was killed, or the server stopped); its outcome is in the history"
      outcome=failed
      [[ $line != *'"outcome": "ok"'* ]] || outcome=ok
    else
      outcome=$(dead_run_outcome "$id")
      echo "deploy $id ended without a result (its process was killed, or the server stopped): recording it as $outcome"
      (record_dead_run "$id" "$outcome") || echo "warning: could not record deploy $id in the history"
    fi
    if [[ $outcome == ok ]]; then echo 0; else echo 1; fi >"$(run_file "$id" status)"
    printf '%s the process of this deploy died before it answered; the next run recorded it (%s) and cleaned up after it\n' "$(now_iso)" "$outcome" >>"$(run_file "$id" log)"
    dead=1
  done
  ((dead)) || return 0
  env_names_live_slot || echo "warning: could not set VERSION in $APP_DIR/.env to what serves"
}

# A run that died after its new version took over (slots: switch; recreate: up;
# swarm: converge) deployed it: only retiring the old was left, which the next
# run's start does. One that died before changed nothing that serves.
dead_run_outcome() { # id -> ok | failed
  if grep -qE $'^(switch|up|converge)\t[^\t]*\t1$' "$(run_file "$1" steps)" 2>/dev/null; then echo ok; else echo failed; fi
}

record_dead_run() { # id outcome  (in a subshell: it sets the run's globals)
  local id=$1 log started
  log=$(run_file "$id" log) STEPS_FILE=$(run_file "$id" steps) PD_RUN_ID=$id
  [[ -f $log ]] || : >"$log"
  [[ -f $STEPS_FILE ]] || : >"$STEPS_FILE"
  read_request "$id"
  PREVIOUS_VERSION=$(sed -n 's/^[^ ]* [a-z]* of [^ ]* to [^ ]* (\(swarm stack [^,]*, \)\{0,1\}running: \([^)]*\)) by .*/\2/p' "$log" | head -n 1)
  PREVIOUS_VERSION=${PREVIOUS_VERSION:-unknown} DIGEST='' FAILED_STEP=''
  if [[ $2 == ok ]]; then
    [[ -z $ORDER ]] || echo "$ORDER" >"$STATE_DIR/order"
  else
    FAILED_STEP=$(sed -n 's/^==> \([a-z-]*\)$/\1/p' "$log" | tail -n 1)
    FAILED_STEP="${FAILED_STEP:-start} (its process died)"
  fi
  started=$(stat -c %Y "$(run_file "$id" request)")
  record "$2" "$(($(stat -c %Y "$log") - started))" "$log"
}

prune_runs() {
  local old f
  old=$(find "$RUNS_DIR" -maxdepth 1 -name '*.log' -printf '%T@ %f\n' | sort -rn | tail -n +31 | cut -d' ' -f2)
  for f in $old; do rm -f "$RUNS_DIR/${f%.log}".*; done
}
