#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# pushdeploy lib/deploy.sh: the verbs still in bash, the deploy above all, as root.
#
# bin/deploy (lib/pdserver) runs it once it has checked a request and found no
# Python verb for it; the deploy account reaches it only through the entrypoint,
# sudo and bin/deploy. It trusts none of its input: every word is checked again here, the environment's settings come from a root-owned file,
# and nothing is ever passed through a shell or sed. The parts live in lib/,
# root-owned too, one concern a file:
#   lib/protocol.sh  what client and server agree on      lib/config.sh   settings, compose, .env
#   lib/steps.sh     steps before the switch, step runner lib/switch.sh   the zero-downtime switch
#   lib/order.sh     refusing older versions              lib/history.sh  the history (history.py)
#   lib/detach.sh    detached runs, lock, reattach        lib/recreate.sh the switch by restart (switch: recreate)
#   lib/manage.sh    management commands: manage, hooks   lib/plan.sh     what a deploy would do (plan)
#   lib/pull.sh      pull mode: the agent, pinned versions lib/notify.sh  webhooks (notify.py)
#   lib/swarm.sh     engine: swarm (stack deploy, watch, whole-stack rollback; lib/swarm.py reads Docker's JSON)
#   lib/review.sh    review environments (review-*)       lib/refresh.sh  database dump and restore (db-*, admin only)
#   lib/priority.sh  the deploy yields the CPU to serving (PRIORITY=low)
set -euo pipefail
shopt -s extglob
export LC_ALL=C
# Compose's progress bars are noise in a deploy log; our steps say what happens.
export COMPOSE_PROGRESS=quiet COMPOSE_ANSI=never
umask 077

SELF=$(readlink -f "${BASH_SOURCE[0]}")
PD_HOME=${SELF%/*/*}
# shellcheck source=../lib/protocol.sh
. "$PD_HOME/lib/protocol.sh"
# shellcheck source=../lib/config.sh
. "$PD_HOME/lib/config.sh"
# shellcheck source=../lib/steps.sh
. "$PD_HOME/lib/steps.sh"
# shellcheck source=../lib/switch.sh
. "$PD_HOME/lib/switch.sh"
# shellcheck source=../lib/priority.sh
. "$PD_HOME/lib/priority.sh"
# shellcheck source=../lib/recreate.sh
. "$PD_HOME/lib/recreate.sh"
# shellcheck source=../lib/order.sh
. "$PD_HOME/lib/order.sh"
# shellcheck source=../lib/history.sh
. "$PD_HOME/lib/history.sh"
# shellcheck source=../lib/detach.sh
. "$PD_HOME/lib/detach.sh"
# shellcheck source=../lib/manage.sh
. "$PD_HOME/lib/manage.sh"
# shellcheck source=../lib/plan.sh
. "$PD_HOME/lib/plan.sh"
# shellcheck source=../lib/pull.sh
. "$PD_HOME/lib/pull.sh"
# shellcheck source=../lib/notify.sh
. "$PD_HOME/lib/notify.sh"
# shellcheck source=../lib/swarm.sh
. "$PD_HOME/lib/swarm.sh"
# shellcheck source=../lib/review.sh
. "$PD_HOME/lib/review.sh"
# shellcheck source=../lib/refresh.sh
. "$PD_HOME/lib/refresh.sh"

usage() {
  cat <<EOF
usage: deploy VERB ENV [OPTIONS]

  deploy ENV VERSION [--id=ID] [--wait=SECONDS] [--force] [--maintenance] [--order=N] [--skip-migrate]
                     [--by=WHO] [--url=BUILD_URL] [--expect=HASH]
        pull VERSION, back up the database (if configured), migrate and collect
        static files with it, start it beside the running version, and move
        traffic once it is healthy; on any failure the old version keeps serving.
        With \`switch: recreate\` (SWITCH=recreate) it recreates web and proxy in
        place instead, after migrations: a short restart, which it measures
        (not-serving); a version that does not come up is replaced by the old one.
        Refuses a version older than the deployed one unless --force.
  rollback ENV [--to=VERSION] [--id=ID] [--by=WHO] [--url=BUILD_URL] [--expect=HASH]
        deploy the previous successful version again (or VERSION).
  status ENV [--expect=HASH]   deployed version, running deploy, compose services
  history ENV [--limit=N]      the last deploys, one JSON object a line
  logs ENV [--follow]          the last deploy's log
  maintenance ENV on|off       the proxy answers 503 (a page, or JSON) while on
  backups ENV                  the database backups kept on this server
  check ENV                    facts for \`inv server.check\` (key=value lines)
  manage ENV [--expect=HASH] NAME ARGS...
        run one management command of the environment's allowlist (manage_commands)
        in a one-off container of the deployed version; its output and exit code.
  plan ENV VERSION [--order=N] [--maintenance] [--skip-migrate] [--force] [--expect=HASH]
        what a deploy of VERSION would do here (key=value lines): versions, order
        check, steps, estimate, and the migrations it would apply (pulls the image).
  version                      the hash of this server side
  pull-status ENV [--expect=HASH]  pull mode: the channel, the agent, the last check and change
  pull ENV                     (root only: the pull agent's timer or cron entry) deploy the
                               channel's image if its digest changed since the last check
  review-up TEMPLATE-N VERSION [--id=ID] [--by=WHO] [--url=URL] [--expect=HASH]
        make (or update) the review environment TEMPLATE-N from the review template
        TEMPLATE, deploy VERSION there, route pr-N.DOMAIN to it; prints its url.
        Past the template's review_max live environments it refuses (exit $PD_EXIT_FULL).
  review-down TEMPLATE-N       remove it: containers, volumes, networks, files, route
  review-list TEMPLATE         live review environments: name, version, created, last deploy, url
  db-dump ENV [--fresh]        (admin only) the newest backup, or a fresh pg_dump, on stdout
  db-restore ENV --from=SRC    (admin only) restore the dump on stdin, migrate, scrub, record

Exit codes: 0 ok, 1 deploy failed, $PD_EXIT_USAGE bad request, $PD_EXIT_BUSY another deploy
runs, $PD_EXIT_OLDER older than the deployed version, $PD_EXIT_OUTDATED server side or settings differ from the client's.
EOF
}

die() { # code message...
  local code=$1
  shift
  printf 'pushdeploy: %s\n' "$*" >&2
  exit "$code"
}

# ---------------------------------------------------------------- the deploy

# The whole deploy, in order. Until `switch` (or `recreate`) the site runs the old
# version untouched; if anything fails, the new containers go and the old serve on.
run_deploy() {
  [[ $ENGINE != swarm ]] || { settle_dead_runs "${PD_RUN_ID-}"; run_swarm_deploy "$@"; return; }
  local log=$1 outcome=ok migrate_step=migrate took undo=discard_new
  settle_dead_runs "${PD_RUN_ID-}"
  PREVIOUS_VERSION=$(current_version)
  PREVIOUS_VERSION=${PREVIOUS_VERSION:-none}
  RUN_STARTED=$EPOCHREALTIME # from here on, a stopped run undoes what it did
  ((!SKIP_MIGRATE)) || migrate_step=static
  [[ $SWITCH != recreate ]] || undo=undo_recreate
  printf '%s %s of %s to %s (running: %s) by %s\n' "$(now_iso)" "$KIND" "$NEW_VERSION" "$ENV_NAME" "$PREVIOUS_VERSION" "${BY:-unknown}"
  notify started

  if step preflight preflight &&
    step pull pull_image &&
    step database start_database &&
    { [[ $BACKUP != yes ]] || ((SKIP_MIGRATE)) || step backup backup_database; } &&
    { ((!MAINTENANCE)) || step maintenance-on maintenance on; } &&
    step "$migrate_step" release_tasks &&
    { ((${#HOOKS_BEFORE[@]} == 0)) || step hooks-before run_hooks before; } &&
    if [[ $SWITCH == recreate ]]; then
      step recreate recreate_services &&
        step up wait_recreated_up
    else
      step start start_new &&
        step health wait_new_healthy &&
        step admit admit_new &&
        step switch switch_traffic
    fi
  then
    [[ -z $ORDER ]] || echo "$ORDER" >"$STATE_DIR/order"
    prune_static_start
    [[ $SWITCH == recreate ]] || step retire retire_old
    step prune-static prune_static_wait
    run_after_hooks
  else
    outcome=failed
    step rollback "$undo" || true
  fi
  if ((MAINTENANCE)); then step maintenance-off maintenance off || true; fi

  took=$(elapsed "$RUN_STARTED")
  record "$outcome" "$took" "$log"
  notify finished
  if [[ $outcome == ok ]]; then
    printf 'deployed %s to %s in %ss (was %s)\n' "$NEW_VERSION" "$ENV_NAME" "$took" "$PREVIOUS_VERSION"
    return 0
  fi
  printf 'deploy of %s to %s FAILED at %s after %ss; %s serves %s\n' \
    "$NEW_VERSION" "$ENV_NAME" "$FAILED_STEP" "$took" "$ENV_NAME" "$(current_version)"
  return 1
}

# ---------------------------------------------------------------- verbs
# version, status, history, logs, maintenance, backups, check, pull-status, manage,
# review-list and plan (but a swarm's) are answered by lib/pdserver/verbs.py.

parse_options() { # words...
  OPT_ID='' OPT_EXPECT='' OPT_FORCE=0 MAINTENANCE=0 SKIP_MIGRATE=0 ORDER=''
  BY='' URL='' POSITIONAL=() OPT_FRESH=0 OPT_FROM=''
  local word
  for word in "$@"; do
    [[ $word =~ $PD_ARG_RE ]] || die "$PD_EXIT_USAGE" "invalid argument '$word'"
    case $word in
      --id=*)
        OPT_ID=${word#*=}
        [[ $OPT_ID =~ $PD_ID_RE ]] || die "$PD_EXIT_USAGE" "invalid deploy id '$OPT_ID'"
        ;;
      --expect=*) OPT_EXPECT=${word#*=} ;;
      --force) OPT_FORCE=1 ;;
      --maintenance) MAINTENANCE=1 ;;
      --skip-migrate) SKIP_MIGRATE=1 ;;
      --order=+([0-9])) ORDER=$((10#${word#*=})) ;;
      --by=*) BY=${word#*=} ;;
      --url=*) URL=${word#*=} ;;
      --fresh) OPT_FRESH=1 ;;
      --from=*) OPT_FROM=${word#*=} ;;
      --*) die "$PD_EXIT_USAGE" "unknown option '$word'" ;;
      *) POSITIONAL+=("$word") ;;
    esac
  done
}

# The pull agent's verb: root only, never the deploy account (the entrypoint does not
# offer it, and a sudo from an account that pushdeploy's sudoers names is refused here).
cmd_pull() {
  if [[ -n ${SUDO_USER-} && -e /etc/sudoers.d/pushdeploy-$SUDO_USER ]] || (($(id -u) != 0)); then
    die "$PD_EXIT_USAGE" "pull runs as root from the pull agent's timer or cron entry, not through the deploy account"
  fi
  [[ -n $PULL_CHANNEL ]] || die "$PD_EXIT_USAGE" "$ENV_NAME has no pull channel: set \`pull: {channel: ...}\` in invoke.yaml and run \`inv server.setup --env $ENV_NAME\`"
  (( ${#POSITIONAL[@]} == 0 )) || die "$PD_EXIT_USAGE" "usage: pull ENV"
  pull_once
}

main() {
  (($# >= 1)) || { usage >&2; exit "$PD_EXIT_USAGE"; }
  local verb=$1
  shift
  case $verb in
    -h | --help) usage; return 0 ;;
    version) server_hash; return 0 ;;
    __run) load_env_conf "${1-}"; worker "$@"; return ;;
    pull) load_env_conf "${1-}"; shift; parse_options "$@"; KIND=deploy NEW_VERSION='' PREVIOUS_VERSION='' SWITCHED=0; cmd_pull; return ;;
    # Not a verb of the deploy account: bin/install runs it as root after installing.
    setup-check) load_env_conf "${1-}"; [[ $ENGINE != swarm ]] || swarm_setup_check; return ;;
  esac
  [[ " $PD_VERBS $PD_ADMIN_VERBS " == *" $verb "* ]] || die "$PD_EXIT_USAGE" "unknown command '$verb' (one of: $PD_VERBS)"
  [[ " $PD_ADMIN_VERBS " != *" $verb "* ]] || check_admin_caller "$verb"
  (($# >= 1)) || die "$PD_EXIT_USAGE" "usage: $verb ENV ..."
  if [[ $verb == review-* ]]; then load_review "$verb" "$1"; else load_env_conf "$1"; fi  # templates: refused by bin/deploy (pdserver/guard.py)
  shift
  parse_options "$@"
  # plan reports an outdated server side instead of refusing.
  [[ $verb != plan ]] || { PLAN_EXPECT=$OPT_EXPECT OPT_EXPECT=''; }
  check_expected "$OPT_EXPECT"
  KIND=$verb NEW_VERSION='' PREVIOUS_VERSION='' OLD_IDS='' NEW_IDS='' SWITCHED=0
  "cmd_${verb//-/_}"
}

# Sourcing this file (tests do) defines the functions without running anything.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
