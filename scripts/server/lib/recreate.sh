# shellcheck shell=bash disable=SC2034,SC2153 # variables shared across the files bin/deploy sources
# pushdeploy server side: the recreate switch (`switch: recreate`), for layouts
# the slots cannot serve, such as gunicorn on a unix socket that the proxy reads
# from a shared volume (two versions cannot run side by side). It costs a short
# restart, which the deploy measures:
#   recreate  writes VERSION= to .env and recreates the configured services (web
#             and proxy) on the new version: compose stops the old containers,
#             then creates and starts the new ones;
#   up        waits until the new web works: healthy, if it has a Docker health
#             check; else running without a restart for RECREATE_SETTLE seconds
#             and answering a request through the proxy;
#   not-serving (a figure in the history, not a step): from the first old
#             container's stop signal to the new web being up, as this script
#             sees it (an upper bound: up is noticed within about half a second).
# If the new version does not come up, undo_recreate puts the old one back the
# same way and waits until it runs again.

RECREATE_SETTLE=3
RECREATING=0 STOPS_FILE='' STOPS_PID='' UP_AT='' UP_HOW=''

# Every container of the configured services, one id a line.
services_containers() {
  local service
  for service in "${SERVICE_LIST[@]}"; do compose ps -q "$service"; done | sed '/^$/d' | sort -u
}

recreate_services() {
  watch_stops "$(services_containers)"
  RECREATING=1
  write_env_version "$NEW_VERSION" || { echo "could not write $APP_DIR/.env"; return 1; }
  echo "VERSION=$NEW_VERSION in $APP_DIR/.env; recreating ${SERVICE_LIST[*]}"
  compose_at "$NEW_VERSION" up -d --no-deps --force-recreate "${SERVICE_LIST[@]}"
}

# Records when each replaced container got its stop signal (Docker's own
# clock), in the background: compose stops them somewhere inside `up`.
watch_stops() { # ids
  local id
  local -a filters=()
  [[ -n $1 ]] || return 0
  for id in $1; do filters+=(--filter "container=$id"); done
  STOPS_FILE=$(mktemp)
  # Bounded, so a deploy killed with -9 leaves no watcher behind for long.
  timeout $((2 * HEALTH_TIMEOUT + 300)) docker events --since "$EPOCHREALTIME" --filter type=container \
    --filter event=kill --filter event=die "${filters[@]}" --format '{{.TimeNano}}' >"$STOPS_FILE" 2>/dev/null &
  STOPS_PID=$!
}

# Prints and records (as a step figure in the history) how long nothing served.
report_not_serving() { # what
  local first gap
  [[ -n $STOPS_FILE && -n $UP_AT ]] || return 0
  first=$(sort -n "$STOPS_FILE" | head -n 1)
  if [[ -z $first ]]; then
    echo "no stop of the old containers was seen: no not-serving figure"
    return 0
  fi
  gap=$(awk -v up="$UP_AT" -v stop="$first" 'BEGIN { g = up - stop / 1e9; printf "%.1f", (g > 0 ? g : 0) }')
  printf ' not serving for %ss: from the old containers'"'"' stop to %s (%s)\n' "$gap" "$1" "$UP_HOW"
  printf '%s\t%s\t%s\n' not-serving "$gap" 1 >>"$STEPS_FILE"
}

stop_watching() {
  [[ -n $STOPS_PID ]] && kill "$STOPS_PID" 2>/dev/null
  [[ -n $STOPS_FILE ]] && rm -f "$STOPS_FILE"
  STOPS_PID='' STOPS_FILE=''
}

# The step: the new web containers work (see the top of this file); from here
# on the new version serves.
wait_recreated_up() {
  wait_web_up || return 1
  SWITCHED=1
  report_not_serving "the new $WEB_SERVICE being up"
  stop_watching
}

# Waits for every web container: it must keep running (no exit, no restart by
# its restart policy) until it passes its health check, or, without one, for
# RECREATE_SETTLE seconds and until it answers through the proxy (when that can
# be asked, see proxy_answers). NEW_IDS is set only once they are up: a deploy
# interrupted before must not take them for containers it may remove.
wait_web_up() {
  local ids id
  ids=$(service_containers "$WEB_SERVICE")
  [[ -n $ids ]] || { echo "compose left no $WEB_SERVICE container"; return 1; }
  for id in $ids; do wait_container_up "$id" || return 1; done
  NEW_IDS=$ids
}

wait_container_up() { # id
  local id=$1 deadline=$((SECONDS + HEALTH_TIMEOUT)) first now state since='' rc
  local -a test
  mapfile -d '' -t test < <(health_test "$id")
  [[ ${test[0]-NONE} == CMD || ${test[0]-NONE} == CMD-SHELL ]] || test=()
  first=$(run_marks "$id")
  UP_AT=''
  while :; do
    now=$(run_marks "$id")
    state=${now%% *}
    if [[ $state != running ]]; then
      show_failure "$id" "${state:-gone}: it exited"
      return 1
    elif [[ $now != "$first" || ${now##* } != 0 ]]; then
      show_failure "$id" "running again, but it exited and its restart policy restarted it"
      return 1
    fi
    [[ -n $since ]] || since=$EPOCHREALTIME
    if ((${#test[@]})); then
      case $(container_state "$id") in
        unhealthy) show_failure "$id" unhealthy; return 1 ;;
        healthy) UP_AT=$EPOCHREALTIME ;;
        *) if probe "$id" "${test[@]}"; then UP_AT=$EPOCHREALTIME; fi ;;
      esac
      if [[ -n $UP_AT ]]; then
        UP_HOW="its health check passed"
        echo "${id:0:12} is healthy"
        return 0
      fi
    elif [[ -z $UP_AT ]]; then
      rc=0
      proxy_answers "$id" || rc=$?
      case $rc in
        0) UP_AT=$EPOCHREALTIME UP_HOW="a request through $PROXY_SERVICE was answered" ;;
        2) UP_AT=$since UP_HOW="its container ran; nothing could ask it a request, so the figure may be short" ;;
      esac
    fi
    if [[ -n $UP_AT ]] && awk -v a="$since" -v b="$EPOCHREALTIME" -v s="$RECREATE_SETTLE" 'BEGIN { exit !(b - a >= s) }'; then
      echo "${id:0:12} is up ($UP_HOW) and kept running for ${RECREATE_SETTLE}s"
      return 0
    fi
    if ((SECONDS >= deadline)); then
      if ((${#test[@]})); then
        show_failure "$id" "still failing its health check after ${HEALTH_TIMEOUT}s"
      else
        show_failure "$id" "running, but no request through $PROXY_SERVICE was answered within ${HEALTH_TIMEOUT}s"
      fi
      return 1
    fi
    # While it is not up yet, the probe itself paces the loop: up is noticed sooner.
    if [[ -n $UP_AT ]]; then sleep 0.25; else sleep 0.05; fi
  done
}

# What changes when a container exits or is restarted by its restart policy.
run_marks() { # id
  docker inspect -f '{{.State.Status}} {{.State.StartedAt}} {{.RestartCount}}' "$1" 2>/dev/null
}

# Asks for / through the proxy, from inside the web container (a Django image
# has Python; the proxy's image may have nothing but nginx and sh), at the
# proxy's address on a network they share. Any answer below 500 means the proxy
# reached the app; a 5xx (502: no socket yet) or no answer means not yet.
# Returns 0 answered, 1 not yet, 2 cannot ask (no proxy, no shared network, no Python).
# shellcheck disable=SC2016 # Python, not shell
PROXY_PROBE_PY='
import sys, urllib.error, urllib.request
class Stay(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None
try:
    status = urllib.request.build_opener(Stay).open(sys.argv[1], timeout=3).status
except urllib.error.HTTPError as error:
    status = error.code
except Exception:
    sys.exit(1)
sys.exit(0 if status < 500 else 1)
'
PROBE_URL='' PROBE_PYTHON=''

proxy_answers() { # web-id
  local id=$1 python rc
  if [[ -z $PROBE_URL ]]; then
    PROBE_URL=$(proxy_url "$id") || { echo "$PROBE_URL"; PROBE_URL=none; }
    [[ $PROBE_URL == none ]] || echo "probing $PROBE_URL (through $PROXY_SERVICE) from ${id:0:12}"
  fi
  [[ $PROBE_URL != none && $PROBE_PYTHON != none ]] || return 2
  for python in ${PROBE_PYTHON:-python3 python}; do
    rc=0
    timeout 10 docker exec "$id" "$python" -c "$PROXY_PROBE_PY" "$PROBE_URL" >/dev/null 2>&1 || rc=$?
    if ((rc == 0 || rc == 1)); then
      PROBE_PYTHON=$python
      return "$rc"
    fi
    # 126/127: no such interpreter in the image. Anything else: not yet.
    ((rc == 126 || rc == 127)) || return 1
  done
  echo "no python3 or python in the $WEB_SERVICE image: cannot ask it a request through $PROXY_SERVICE"
  PROBE_PYTHON=none
  return 2
}

# http://PROXY-IP:PORT/ on the first network the proxy shares with the web
# container, PORT the proxy's first exposed TCP port (80 if none).
proxy_url() { # web-id
  local proxy network address port web_networks
  [[ -n $PROXY_SERVICE ]] || { echo "no proxy_service configured: no request through it"; return 1; }
  proxy=$(compose ps -q "$PROXY_SERVICE" | head -n 1)
  [[ -n $proxy ]] || { echo "no $PROXY_SERVICE container: no request through it"; return 1; }
  web_networks=" $(docker inspect -f '{{range $net, $cfg := .NetworkSettings.Networks}}{{$net}} {{end}}' "$1") "
  port=$(docker inspect -f '{{range $port, $_ := .Config.ExposedPorts}}{{$port}} {{end}}' "$proxy" | tr ' ' '\n' | sed -n 's|/tcp$||p' | sort -n | head -n 1)
  while read -r network address; do
    if [[ -n $address && $web_networks == *" $network "* ]]; then
      printf 'http://%s:%s/\n' "$address" "${port:-80}"
      return 0
    fi
  done < <(docker inspect -f '{{range $net, $cfg := .NetworkSettings.Networks}}{{$net}} {{$cfg.IPAddress}}{{"\n"}}{{end}}' "$proxy")
  echo "$PROXY_SERVICE and $WEB_SERVICE share no network: no request through it"
  return 1
}

# Puts the old version back the way the new one came: .env, then a recreate,
# then the same wait. Before the recreate began, nothing changed.
undo_recreate() {
  if ((SWITCHED)); then
    echo "the new version already serves: nothing to roll back"
    return 0
  fi
  if ((!RECREATING)); then
    echo "$ENV_NAME still serves $PREVIOUS_VERSION: nothing was recreated"
    return 0
  fi
  write_env_version "$PREVIOUS_VERSION" || { echo "could not write $APP_DIR/.env"; return 1; }
  echo "VERSION=$PREVIOUS_VERSION in $APP_DIR/.env again"
  if [[ $PREVIOUS_VERSION == none ]]; then
    compose rm -s -f "${SERVICE_LIST[@]}" || return 1
    echo "nothing was deployed before: removed the new containers"
    stop_watching
    return 0
  fi
  echo "recreating ${SERVICE_LIST[*]} on $PREVIOUS_VERSION"
  PROBE_URL=''
  if compose_at "$PREVIOUS_VERSION" up -d --no-deps --force-recreate "${SERVICE_LIST[@]}" && wait_web_up; then
    NEW_IDS=''
    report_not_serving "$PREVIOUS_VERSION being up again"
    stop_watching
    echo "$ENV_NAME serves $PREVIOUS_VERSION again"
    return 0
  fi
  stop_watching
  echo "$PREVIOUS_VERSION did not come up again either: see \`inv deploy.status --env $ENV_NAME\`"
  return 1
}
