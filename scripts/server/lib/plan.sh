# shellcheck shell=bash disable=SC2034,SC2153 # variables shared across the files bin/deploy sources
# pushdeploy server side: the `plan` verb of a swarm environment (lib/pdserver/verbs.py
# answers it for compose ones; the two go together when the run pipeline moves to Python):
# what a deploy of VERSION would do here,
# without doing it. It pulls the image (to read its migrations) and runs one
# one-off container of it (`migrate --plan`); it never writes .env, the history,
# the lock or the app's containers. It answers in KEY=value lines, and one
# `migration=` line per line of Django's plan, for deploy/deploy_plan.py to format.

# The steps run_deploy would run with these settings, in its order. Keep in step
# with run_deploy (tests/e2e/test_plan.py compares this list with a real deploy's).
deploy_steps() {
  [[ ${ENGINE-compose} != swarm ]] || { swarm_deploy_steps; return; }
  local -a steps=(preflight pull database)
  [[ $BACKUP != yes ]] || ((SKIP_MIGRATE)) || steps+=(backup)
  ((!MAINTENANCE)) || steps+=(maintenance-on)
  if ((SKIP_MIGRATE)); then steps+=(static); else steps+=(migrate); fi
  ((${#HOOKS_BEFORE[@]} == 0)) || steps+=(hooks-before)
  if [[ $SWITCH == recreate ]]; then
    steps+=(recreate up prune-static)
  else
    steps+=(start health admit switch retire prune-static)
  fi
  ((${#HOOKS_AFTER[@]} == 0)) || steps+=(hooks-after)
  ((!MAINTENANCE)) || steps+=(maintenance-off)
  echo "${steps[*]}"
}

# The steps run_swarm_deploy (lib/swarm.sh) would run, in its order.
swarm_deploy_steps() {
  local -a steps=(preflight pull)
  [[ $BACKUP != yes ]] || ((SKIP_MIGRATE)) || steps+=(backup)
  ((!MAINTENANCE)) || steps+=(maintenance-on)
  if ((SKIP_MIGRATE)); then steps+=(static); else steps+=(migrate); fi
  steps+=(proxy deploy converge)
  ((!MAINTENANCE)) || steps+=(maintenance-off)
  echo "${steps[*]}"
}

# Django's `migrate --plan` for VERSION against the running database, one
# `migration=` line per output line. Needs the database up: it is not started here.
plan_migrations() { # version
  local out rc=0
  if ((SKIP_MIGRATE)); then
    echo "migrations=skipped (a later batch: the first host migrates the shared database)"
    return 0
  fi
  [[ ${ENGINE-compose} != swarm ]] || { swarm_plan_migrations "$1"; return; }
  if ! out=$(compose_at "$1" pull -q "$WEB_SERVICE" 2>&1); then
    echo "migrations=unknown (could not pull $1: $(tail -n 1 <<<"$out"))"
    return 0
  fi
  out=$(manage_run "$1" "$WEB_SERVICE" "${MANAGE_CMD[@]}" migrate --plan 2>&1 </dev/null) || rc=$?
  report_migration_plan "$rc" "$out" "is the database up?"
}

report_migration_plan() { # rc output hint: `migrate --plan`'s result as plan lines
  local line
  if (($1)); then
    echo "migrations=unknown (migrate --plan failed with exit $1; $3)"
  else
    echo "migrations=planned"
  fi
  while IFS= read -r line; do printf 'migration=%s\n' "$line"; done <<<"$2"
}

cmd_plan() {
  local version current order_check rc=0 estimate
  (( ${#POSITIONAL[@]} == 1 )) || die "$PD_EXIT_USAGE" "usage: plan ENV VERSION [--order=N] [--maintenance] [--skip-migrate] [--force] [--expect=HASH]"
  version=${POSITIONAL[0]}
  check_version "$version"
  current=$(current_version)
  printf 'current=%s\ntarget=%s\n' "${current:-none}" "$version"
  if [[ -z $PLAN_EXPECT ]]; then
    echo "server_side=not checked"
  elif order_check=$(check_expected "$PLAN_EXPECT" 2>&1); then
    echo "server_side=current"
  else
    printf 'server_side=outdated: %s\n' "${order_check#pushdeploy: }"
  fi
  if lock_busy 2>/dev/null; then
    printf 'busy=%s\n' "${LOCK_HOLDER#* }"
  else
    echo "busy=no"
  fi
  # check_order dies (in this subshell only) when it would refuse.
  order_check=$(KIND=deploy check_order "$version" "$ORDER" 2>&1) || rc=$?
  if ((rc)); then
    printf 'order=refused: %s\n' "${order_check#pushdeploy: }"
  elif [[ $version == "$current" ]]; then
    echo "order=ok (already deployed: a deploy would start it again)"
  else
    echo "order=ok ($ORDERING)"
  fi
  printf 'steps=%s\n' "$(deploy_steps)"
  printf 'hooks_before=%s\n' "${HOOKS_BEFORE[@]}"
  printf 'hooks_after=%s\n' "${HOOKS_AFTER[@]}"
  estimate=$(history_tool median-ok "$HISTORY" 10)
  printf 'estimate=%s\n' "$estimate"
  plan_migrations "$version"
}
PLAN_EXPECT=''
