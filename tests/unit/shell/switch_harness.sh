# shellcheck shell=bash disable=SC2034,SC1091 # sets the variables bin/deploy reads
# Sources lib/deploy.sh with docker replaced by a function that records its words
# and answers like a small fake Docker: one old web container (old1) serving,
# compose creating one new one (new1); state that must outlive subshells is in files. The scenario (first argument) picks the
# fault; the recorded commands go to stdout, one a line, for exact comparison.
set -euo pipefail
# shellcheck source=../../../scripts/server/lib/deploy.sh
. "$PD_ROOT/scripts/server/lib/deploy.sh"

SCENARIO=$1
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
APP_DIR=$WORK/app STATE_DIR=$WORK/state ENV_NAME=test PROJECT=pixel-test
WEB_SERVICE=web PROXY_SERVICE=proxy SERVICE_LIST=(web proxy) COMPOSE_CMD=(docker compose) FILE_ARGS=(-f docker-compose.yml)
DRAIN_SECONDS=1 DNS_VALID=1 HEALTH_TIMEOUT=3 PRIORITY=low APP_FILES_SHA256=conf1 NEW_VERSION=2.0 PREVIOUS_VERSION=1.0 SKIP_MIGRATE=0
mkdir -p "$APP_DIR" "$STATE_DIR"
printf 'VERSION=1.0\nSECRET=x\n' >"$APP_DIR/.env"
# What the last deploy applied: the same configuration, unless the scenario changed it.
if [[ $SCENARIO == fail-switch || $SCENARIO == config-changed ]]; then echo conf0; else echo conf1; fi >"$STATE_DIR/services-config"
if [[ $SCENARIO == config-changed ]]; then echo conf0; else echo conf1; fi >"$STATE_DIR/proxy-config"

say() { printf '%s\n' "$*" >&3; }
sleep() { say "sleep $*"; }

docker() {
  say "docker $*"
  case "$*" in
    "ps "*"service=web"*)
      echo old1
      [[ $SCENARIO != leftover || -e $WORK/left-gone ]] || echo left1 # started by a deploy that was killed
      [[ ! -e $WORK/created ]] || echo new1
      ;;
    "inspect -f {{.Id}}{{range .NetworkSettings.Networks}}"*)
      echo "old1 web-blue pixel-test-web-1 web"
      [[ $* != *left1* ]] || echo "left1 web-green pixel-test-web-2 web"
      ;;
    "rm left1") : >"$WORK/left-gone" ;;
    "ps "*"service=proxy"*) echo proxy1 ;;
    "compose -p pixel-test -f docker-compose.yml up --no-start"*) : >"$WORK/created" ;;
    "compose -p pixel-test -f docker-compose.yml up -d --no-deps proxy") [[ $SCENARIO != fail-switch ]] ;;
    "inspect -f {{.State.Running}} proxy1") echo true ;;
    "inspect -f {{range \$net, \$cfg := .NetworkSettings.Networks}}"*) echo "pixel-test_default [web-green pixel-test-web-2 new1]" ;;
    "inspect -f {{with .Config.Healthcheck}}"*) printf 'CMD\0python3\0-c\0check()\0' ;;
    "inspect -f {{if .State.Health}}"*) if [[ $SCENARIO == fail-health ]]; then echo unhealthy; else echo starting; fi ;;
    "network connect --alias pixel-test-web-2 --alias web-green --alias web pixel-test_default new1") [[ $SCENARIO != fail-admit ]] ;;
    "exec new1 python3 -c check()") [[ $SCENARIO != fail-health ]] ;;
    "logs"*) echo "a log line" ;;
    "inspect -f {{.Id}} {{.HostConfig.CpuShares}} new1") echo "new1 0" ;;
    "inspect -f {{.State.Pid}} "*) echo 0 ;; # not a process here: bin/deploy reads the table with exec
    "exec "*" cat /proc/net/tcp /proc/net/tcp6")
      # The old container is still answering one request the first time it is asked.
      echo "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"
      echo "   0: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000 10001        0 1 1"
      if [[ ! -e $WORK/asked-${*:2:1} ]]; then
        echo "   1: 030012AC:1F40 040012AC:D3C2 01 00000000:00000000 00:00000000 00000000 10001        0 2 1"
        : >"$WORK/asked-${*:2:1}"
      fi
      ;;
  esac
}
timeout() { shift; "$@"; }
# File changes are part of the sequence too: the routing flag and .env.
eval "real_$(declare -f flip_to)"
flip_to() { say "flip to $1${2:+ ($2)}"; real_flip_to "$@" >/dev/null; }
eval "real_$(declare -f write_env_version)"
write_env_version() { say "write VERSION=$1 to .env"; real_write_env_version "$@"; }

run() { # steps in bin/deploy's order; on failure, discard_new as run_deploy does
  if start_new && wait_new_healthy && admit_new && switch_traffic; then
    retire_old
    say "-> switched; .env: $(current_version); routing: $(live_slot)"
  else
    say "-> failed"
    discard_new
    say "-> discarded; .env: $(current_version); routing: $(live_slot)"
  fi
}

if [[ $SCENARIO == env-ahead ]]; then
  # A deploy killed between writing .env and moving the proxy: blue (old1) serves 1.0.
  ENGINE=compose SWITCH=slots
  { write_env_version 2.0 && echo 1.0 >"$STATE_DIR/slot-blue"; env_names_live_slot; say "-> .env: $(current_version); routing: $(live_slot)"; } 3>&1 >/dev/null
  exit
fi
run 3>&1 >/dev/null
