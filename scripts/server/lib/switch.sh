# shellcheck shell=bash disable=SC2034,SC2153 # variables shared across the files bin/deploy sources
# pushdeploy server side: the zero-downtime switch.
#
# The proxy routes to one of two DNS names, WEB-blue or WEB-green (the slots),
# choosing per request by a flag file (APP_DIR/routing/green). A deploy:
#   start    creates the new web containers beside the old ones, named only in
#            the idle slot: nothing routes to them yet;
#   health   runs their own health check until it passes;
#   admit    gives them the service name too (for anything else that calls it);
#   switch   flips the flag: from the next request on, the proxy asks for the new
#            slot's name. The old containers keep their name and address, so a
#            request already on its way to them is answered;
#   retire   after DRAIN_SECONDS (requests that read the flag before the flip
#            reach the old containers) and once they have answered every
#            connection they were sent (wait_idle), stops them gracefully: each
#            finishes what it is serving, then exits.
# No proxy ever holds the address of a container that is gone: the old slot's
# name is not asked for any more when its containers stop, and the new slot's
# name is asked for only when every cached answer for it has expired (DNS_VALID
# after the slot last served, see flip_to).

IDLE_WAIT=30 # seconds, at most, for retired containers to answer what they were sent
OLD_IDS='' NEW_IDS='' LIVE_SLOT='' NEW_SLOT='' ADMITTED=0 FLIPPED=0 SWITCHED=0

first_slot() { echo "${PD_SLOTS%% *}"; }
second_slot() { echo "${PD_SLOTS#* }"; }
slot_alias() { printf '%s-%s\n' "$WEB_SERVICE" "$1"; }
routing_flag() { printf '%s/%s/%s\n' "$APP_DIR" "$PD_ROUTING_DIR" "$(second_slot)"; }

live_slot() {
  if [[ -e $(routing_flag) ]]; then second_slot; else first_slot; fi
}

other_slot() { # slot
  if [[ $1 == "$(first_slot)" ]]; then second_slot; else first_slot; fi
}

# Points the proxy at SLOT: an atomic create or remove of the flag file, which
# the proxy checks on every request. Moving to a slot whose name the proxy may
# still have cached from its previous containers first waits out DNS_VALID.
flip_to() { # slot [back]
  local slot=$1 last wait dir
  dir="$APP_DIR/$PD_ROUTING_DIR"
  install -d -m 0755 "$dir" || return 1
  if [[ ${2-} != back ]]; then
    last=$(cat "$STATE_DIR/flipped-at" 2>/dev/null || echo 0)
    wait=$(awk -v last="$last" -v now="$EPOCHREALTIME" -v valid="$DNS_VALID" 'BEGIN { w = last + valid + 0.2 - now; if (w > 0) printf "%.2f", w }')
    if [[ -n $wait ]]; then
      echo "waiting ${wait}s for the proxy's cached answers for $(slot_alias "$slot") to expire"
      sleep "$wait"
    fi
  fi
  if [[ $slot == "$(second_slot)" ]]; then
    : >"$dir/.flag.tmp" && chmod 0644 "$dir/.flag.tmp" && mv -f "$dir/.flag.tmp" "$(routing_flag)" || return 1
  else
    rm -f "$(routing_flag)" || return 1
  fi
  echo "$EPOCHREALTIME" >"$STATE_DIR/flipped-at"
  echo "the proxy now routes to $(slot_alias "$slot")"
}

# Reconnects a container to each of its networks with exactly these pushdeploy
# names (the service name, the slots) and its other aliases as they were.
set_aliases() { # id alias...
  local id=$1 network aliases alias
  shift
  local -a keep
  while read -r network aliases; do
    [[ -n $network ]] || continue
    keep=()
    for alias in ${aliases//[\[\]]/}; do
      case $alias in
        "$WEB_SERVICE" | "$(slot_alias "$(first_slot)")" | "$(slot_alias "$(second_slot)")" | "${id:0:12}") ;;
        *) keep+=(--alias "$alias") ;;
      esac
    done
    for alias in "$@"; do keep+=(--alias "$alias"); done
    docker network disconnect "$network" "$id" >/dev/null &&
      docker network connect "${keep[@]}" "$network" "$id" >/dev/null || return 1
  done < <(docker inspect -f '{{range $net, $cfg := .NetworkSettings.Networks}}{{$net}} {{$cfg.Aliases}}{{"\n"}}{{end}}' "$id")
}

# The web containers named in SLOT (its alias on any network), from IDS.
in_slot() { # slot ids
  local alias
  alias=$(slot_alias "$1")
  [[ -n ${2//[[:space:]]/} ]] || return 0
  # A container gone since it was listed is in no slot.
  # shellcheck disable=SC2086 # one id per word
  { docker inspect -f '{{.Id}}{{range .NetworkSettings.Networks}}{{range .Aliases}} {{.}}{{end}}{{end}}' $2 2>/dev/null || true; } |
    awk -v alias="$alias" '{ for (i = 2; i <= NF; i++) if ($i == alias) { print $1; next } }'
}

# New containers beside the old (compose --scale with --no-recreate leaves the
# old as they are), named only in the idle slot until they proved healthy.
# Running containers already in the idle slot were left by a run that died
# mid-deploy (SIGKILL: no trap ran): the proxy never routed to them, so they go
# first, gracefully (they may have been admitted under the service name), and
# are not counted as old.
start_new() {
  local count all stopped leftover id
  all=$(service_containers "$WEB_SERVICE" -a)
  OLD_IDS=$(service_containers "$WEB_SERVICE")
  stopped=$(comm -23 <(echo "$all") <(echo "$OLD_IDS") | sed '/^$/d')
  if [[ -n $stopped ]]; then
    # shellcheck disable=SC2086 # one id per word
    docker rm -f $stopped >/dev/null || return 1
    echo "removed $(wc -w <<<"$stopped") stopped $WEB_SERVICE container(s)"
  fi
  LIVE_SLOT=$(live_slot)
  NEW_SLOT=$(other_slot "$LIVE_SLOT")
  leftover=$(in_slot "$NEW_SLOT" "$OLD_IDS") || return 1
  if [[ -n $leftover ]]; then
    echo "$(wc -w <<<"$leftover") $WEB_SERVICE container(s) left by a deploy that did not finish are still in $(slot_alias "$NEW_SLOT"), which the proxy does not route to: removing them"
    retire "$leftover" leftover || return 1
    OLD_IDS=$(comm -23 <(echo "$OLD_IDS") <(echo "$leftover") | sed '/^$/d')
  fi
  echo "$NEW_VERSION" >"$STATE_DIR/slot-$NEW_SLOT"
  count=$(wc -w <<<"$OLD_IDS")
  compose_at "$NEW_VERSION" up --no-start --no-deps --no-recreate --scale "$WEB_SERVICE=$((count > 0 ? 2 * count : 1))" "$WEB_SERVICE"
  NEW_IDS=$(service_containers "$WEB_SERVICE" -a | comm -13 <(echo "$OLD_IDS") - | sed '/^$/d')
  [[ -n $NEW_IDS ]] || { echo "compose created no new $WEB_SERVICE container"; return 1; }
  # shellcheck disable=SC2086 # one id per word
  yield_cpu $NEW_IDS
  for id in $NEW_IDS; do
    set_aliases "$id" "$(slot_alias "$NEW_SLOT")" && docker start "$id" >/dev/null || return 1
  done
  echo "started $(wc -w <<<"$NEW_IDS") new $WEB_SERVICE container(s) as $(slot_alias "$NEW_SLOT") beside $count old ($(slot_alias "$LIVE_SLOT"))"
}

# The web service's health check, as words separated by NUL: CMD ARGS... or CMD-SHELL TEXT.
health_test() { # id
  docker inspect -f '{{with .Config.Healthcheck}}{{range .Test}}{{.}}{{"\x00"}}{{end}}{{end}}' "$1"
}

# Runs the container's own health check now, instead of waiting for Docker's
# next interval: a release is admitted as soon as it can be, not seconds later.
probe() { # id test-words...
  local id=$1
  shift
  case $1 in
    CMD) timeout 10 docker exec "$id" "${@:2}" >/dev/null 2>&1 ;;
    CMD-SHELL) timeout 10 docker exec "$id" /bin/sh -c "$2" >/dev/null 2>&1 ;;
    *) return 2 ;;
  esac
}

# The web service must prove it works: a container without a health check fails.
wait_new_healthy() {
  local deadline=$((SECONDS + HEALTH_TIMEOUT)) id state
  local -a test
  for id in $NEW_IDS; do
    mapfile -d '' -t test < <(health_test "$id")
    if [[ ${test[0]-NONE} != CMD && ${test[0]-NONE} != CMD-SHELL ]]; then
      echo "${id:0:12} has no Docker health check: give the service one (healthcheck: in the compose file) so a deploy can tell the new version works"
      return 1
    fi
    while :; do
      state=$(container_state "$id" || true)
      case $state in
        unhealthy | exited | dead | '') show_failure "$id" "$state"; return 1 ;;
        healthy) break ;;
      esac
      probe "$id" "${test[@]}" && break
      if ((SECONDS >= deadline)); then
        show_failure "$id" "still failing its health check after ${HEALTH_TIMEOUT}s"
        return 1
      fi
      sleep 0.2
    done
    echo "${id:0:12} is healthy"
  done
}

# Healthy new containers get the service name as well (other services may call it).
admit_new() {
  local id
  ADMITTED=1
  # shellcheck disable=SC2086 # one id per word
  restore_cpu $NEW_IDS || return 1
  for id in $NEW_IDS; do set_aliases "$id" "$(slot_alias "$NEW_SLOT")" "$WEB_SERVICE" || return 1; done
  echo "$(slot_alias "$NEW_SLOT") answers as $WEB_SERVICE too"
}

# .env gets the new version, the proxy moves to the new slot, and the other
# services (the proxy) are created if missing: from here on the new version serves.
switch_traffic() {
  write_env_version "$NEW_VERSION" || { echo "could not write $APP_DIR/.env"; return 1; }
  echo "VERSION=$NEW_VERSION in $APP_DIR/.env"
  flip_to "$NEW_SLOT" || return 1
  FLIPPED=1
  up_other_services || return 1
  SWITCHED=1
  reload_proxy_if_changed || echo "warning: $PROXY_SERVICE did not reload its new configuration: check \`nginx -t\` in it"
}

# Connections a container's server still owes an answer on, accepted or still
# in its listening socket's queue (ESTABLISHED, SYN_RECV or CLOSE_WAIT on a port
# it listens on), read in its network namespace. Prints nothing if unreadable.
open_requests() { # id
  local pid table
  pid=$(docker inspect -f '{{.State.Pid}}' "$1" 2>/dev/null) || return 0
  if [[ $pid =~ ^[1-9][0-9]*$ && -r /proc/$pid/net/tcp ]]; then
    table=$(cat "/proc/$pid/net/tcp" "/proc/$pid/net/tcp6" 2>/dev/null)
  else
    table=$(docker exec "$1" cat /proc/net/tcp /proc/net/tcp6 2>/dev/null) || return 0
  fi
  awk '$1 ~ /^[0-9]+:$/ { n++; port[n] = substr($2, index($2, ":") + 1); state[n] = $4; if ($4 == "0A") listening[port[n]] = 1 }
    END { for (i = 1; i <= n; i++) if (port[i] in listening && state[i] ~ /^(01|03|08)$/) open++; print open + 0 }' <<<"$table"
}

# Waits until the containers have answered every request they were sent (none
# open in 3 samples in a row, 0.1 s apart), at most IDLE_WAIT seconds. A server
# slowed down by load still holds requests the proxy sent it before the switch,
# queued in its listening socket: stopping it then would reset them.
wait_idle() { # ids what
  local started=${EPOCHREALTIME/./} quiet=0 id open total waited
  while :; do
    total=0
    for id in $1; do
      open=$(open_requests "$id")
      [[ -n $open ]] || return 0 # cannot tell: DRAIN_SECONDS alone decides
      total=$((total + open))
    done
    if ((total == 0)); then quiet=$((quiet + 1)); else quiet=0; fi
    waited=$(((${EPOCHREALTIME/./} - started) / 100000))
    ((quiet < 3)) || break
    if ((waited >= IDLE_WAIT * 10)); then
      echo "warning: the $2 $WEB_SERVICE container(s) still had $total request(s) open after $((waited / 10))s: stopping them anyway"
      return 0
    fi
    sleep 0.1
  done
  ((waited < 5)) || echo "the $2 $WEB_SERVICE container(s) answered their last requests $((waited / 10)).$((waited % 10))s after the drain"
}

# Stops containers the proxy no longer routes to: after DRAIN_SECONDS, so that
# requests that chose them just before the flip reach them, and once they have
# answered everything they were sent, each finishes the requests it serves
# (docker stop: SIGTERM, then the service's stop_grace_period).
retire() { # ids what
  local ids=$1
  [[ -n $ids ]] || { echo "no $2 $WEB_SERVICE container to retire"; return 0; }
  sleep "$DRAIN_SECONDS"
  wait_idle "$ids" "$2"
  # shellcheck disable=SC2086 # one id per word
  if docker stop $ids >/dev/null && docker rm $ids >/dev/null; then
    echo "retired $(wc -w <<<"$ids") $2 $WEB_SERVICE container(s) after they finished their requests"
  else
    echo "warning: could not remove the $2 $WEB_SERVICE container(s): $ids"
    return 1
  fi
}

# After a run died mid-deploy, .env names what the live slot runs: the run may
# have written the new version and died before the proxy moved to it.
env_names_live_slot() {
  local live version
  [[ $ENGINE != swarm && $SWITCH != recreate ]] || return 0
  live=$(live_slot)
  version=$(cat "$STATE_DIR/slot-$live" 2>/dev/null) || return 0
  [[ -n $version && $version != "$(current_version)" && -n $(in_slot "$live" "$(service_containers "$WEB_SERVICE")") ]] || return 0
  write_env_version "$version" || return 1
  echo "VERSION=$version in $APP_DIR/.env again: the version $(slot_alias "$live") serves"
}

retire_old() {
  retire "$OLD_IDS" old || true
  OLD_IDS=''
}

# Proxies other than the web service are created if missing and recreated only
# if their own configuration changed (compose decides), never for a new web
# version; when nothing about them changed since the last deploy, compose is
# not even asked.
up_other_services() {
  local -a others=()
  local service applied="$STATE_DIR/services-config"
  for service in "${SERVICE_LIST[@]}"; do
    [[ $service == "$WEB_SERVICE" ]] || others+=("$service")
  done
  ((${#others[@]} == 0)) && return 0
  if [[ -f $applied && $(cat "$applied") == "$APP_FILES_SHA256" ]] && all_running "${others[@]}"; then
    return 0
  fi
  compose up -d --no-deps "${others[@]}" || return 1
  echo "$APP_FILES_SHA256" >"$applied"
}

all_running() { # services...
  local service id
  for service in "$@"; do
    id=$(service_containers "$service" | head -n 1)
    [[ -n $id && $(docker inspect -f '{{.State.Running}}' "$id" 2>/dev/null) == true ]] || return 1
  done
}

# The proxy's config files come with `inv server.setup`; when they changed
# since the last deploy, nginx reloads them gracefully (old workers finish).
reload_proxy_if_changed() {
  local applied="$STATE_DIR/proxy-config"
  [[ -n $PROXY_SERVICE ]] || return 0
  [[ -f $applied && $(cat "$applied") == "$APP_FILES_SHA256" ]] && return 0
  compose exec -T "$PROXY_SERVICE" nginx -t -q && compose exec -T "$PROXY_SERVICE" nginx -s reload || return 1
  echo "$APP_FILES_SHA256" >"$applied"
  echo "reloaded $PROXY_SERVICE (its configuration changed)"
}

# Undoes a switch that did not complete, in the same order as a retirement:
# the proxy goes back to the old slot first, then the new containers drain and
# stop gracefully, and .env names the old version again.
discard_new() {
  if ((SWITCHED)); then
    echo "the new version already serves: nothing to roll back"
    return 0
  fi
  if ((FLIPPED)); then
    flip_to "$LIVE_SLOT" back || echo "warning: could not move the proxy back to $(slot_alias "$LIVE_SLOT")"
    FLIPPED=0
  fi
  if [[ -n ${NEW_IDS-} ]]; then
    if ((ADMITTED)); then
      retire "$NEW_IDS" new || true
    else
      # Never reachable: no drain needed.
      # shellcheck disable=SC2086 # one id per word
      docker rm -f $NEW_IDS >/dev/null 2>&1 || true
      echo "removed the new $WEB_SERVICE container(s)"
    fi
    NEW_IDS=''
  fi
  if [[ $(current_version) != "$PREVIOUS_VERSION" ]]; then
    write_env_version "$PREVIOUS_VERSION" && echo "VERSION=$PREVIOUS_VERSION in $APP_DIR/.env again"
  fi
  echo "$ENV_NAME still serves $PREVIOUS_VERSION"
}
