# shellcheck shell=bash disable=SC2034,SC2153 # variables shared across the files bin/deploy sources
# pushdeploy server side: review environments, throwaway instances of a review
# template (an environment whose conf says REVIEW_TEMPLATE=yes), one per pull
# request. `review-up review-12 TAG` makes, from the template `review`:
#   APP_DIR-12        the template's files, and a .env from the template's own
#                     (secrets come from the server, never from the client)
#   PROJECT-12        its own compose project: its own containers, database volume
#   PD_STATE/review-12  its state and history (review.created marks it live)
#   a route           pr-12.DOMAIN on the shared front proxy (one nginx container
#                     per template, on 127.0.0.1:REVIEW_PORT, network pushdeploy-TEMPLATE)
# then deploys TAG there with the ordinary deploy steps. `review-down` removes all
# of it; a failed first `review-up` does too, so nothing is left half made.

REVIEW_CREATED=review.created

# Loads the template of NAME (review-list: NAME is the template itself) and, for an
# instance, points APP_DIR, PROJECT and the state at the instance's own.
load_review() { # verb name
  local verb=$1 name=$2 template number=''
  if [[ $verb == review-list ]]; then
    template=$name
  else
    [[ $name =~ $PD_REVIEW_RE ]] ||
      die "$PD_EXIT_USAGE" "invalid review environment '$name': review environments are named TEMPLATE-N for pull request N (e.g. review-12)"
    template=${BASH_REMATCH[1]} number=${BASH_REMATCH[2]}
  fi
  load_env_conf "$template"
  [[ $REVIEW_TEMPLATE == yes ]] ||
    die "$PD_EXIT_USAGE" "'$template' is not a review template on this server: only names the template allows (TEMPLATE-N of an environment with review_template: true) may be made"
  [[ $REVIEW_DOMAIN =~ ^[a-z0-9]([a-z0-9.-]{0,200}[a-z0-9])?$ && $REVIEW_MAX =~ ^[0-9]{1,3}$ && $REVIEW_PORT =~ ^[0-9]{1,5}$ ]] ||
    die 1 "$ENV_CONF: REVIEW_DOMAIN, REVIEW_MAX or REVIEW_PORT is invalid: run \`inv server.setup --env $template\`"
  TEMPLATE=$template TEMPLATE_APP_DIR=$APP_DIR TEMPLATE_PROJECT=$PROJECT TEMPLATE_STATE=$STATE_DIR
  REVIEW_NETWORK="pushdeploy-$template" FRONT="pushdeploy-$template-front" FRONT_DIR="$STATE_DIR/front"
  [[ -n $number ]] || return 0
  PR=$number ENV_NAME="$template-$number"
  APP_DIR="$TEMPLATE_APP_DIR-$number" PROJECT="$TEMPLATE_PROJECT-$number"
  STATE_DIR="$PD_STATE/$ENV_NAME" RUNS_DIR="$PD_STATE/$ENV_NAME/runs" HISTORY="$PD_STATE/$ENV_NAME/history.jsonl"
}

review_host() { printf 'pr-%s.%s\n' "$1" "$REVIEW_DOMAIN"; } # number
review_url() { # number
  if [[ $REVIEW_PORT == 80 ]]; then printf 'http://%s/\n' "$(review_host "$1")"; else printf 'http://%s:%s/\n' "$(review_host "$1")" "$REVIEW_PORT"; fi
}

# Live instances of this template, one name a line.
review_instances() {
  local marker
  for marker in "$PD_STATE/$TEMPLATE"-*/"$REVIEW_CREATED"; do
    [[ -f $marker ]] || continue
    marker=${marker%/*}
    [[ ${marker##*/} =~ $PD_REVIEW_RE ]] && printf '%s\n' "${marker##*/}"
  done
}

# Everything that changes instances runs under one lock per template: the cap
# counts, and the front proxy's routes change, one request at a time.
review_lock() {
  exec 8>>"$TEMPLATE_STATE/review.lock"
  flock -w 300 8 || die "$PD_EXIT_BUSY" "another review-up or review-down of $TEMPLATE runs; try again later"
}

# ------------------------------------------------------------ the front proxy

# The nginx server block routing pr-N.DOMAIN to the instance's proxy, which is
# on the template's network under the alias TEMPLATE-N. Docker's DNS is asked per
# request (a variable in proxy_pass), so the front starts before an instance does.
render_route() { # name number
  cat <<EOF
# pushdeploy review environment $1 (written by bin/deploy review-up)
server {
    listen 80;
    server_name $(review_host "$2");
    location / {
        resolver 127.0.0.11 valid=5s ipv6=off;
        set \$review_upstream $1;
        proxy_pass http://\$review_upstream:80;
        proxy_set_header Host \$host;
        proxy_set_header X-Real-IP \$remote_addr;
        proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto \$scheme;
        proxy_connect_timeout 2s;
        proxy_read_timeout 60s;
    }
}
EOF
}

render_front_default() {
  cat <<EOF
# pushdeploy review front proxy: a host name with no review environment gets 404.
server {
    listen 80 default_server;
    server_name _;
    default_type text/plain;
    return 404 'no review environment answers for this host name\n';
}
EOF
}

template_env_value() { # key: from the template's server-side .env
  local line
  while IFS= read -r line || [[ -n $line ]]; do
    if [[ $line == "$1="* ]]; then
      printf '%s\n' "${line#*=}"
      return 0
    fi
  done <"$TEMPLATE_APP_DIR/.env"
}

ensure_network() {
  docker network inspect "$REVIEW_NETWORK" >/dev/null 2>&1 ||
    docker network create --label "pushdeploy.review=$TEMPLATE" "$REVIEW_NETWORK" >/dev/null
}

# Starts the front proxy if it does not run, else reloads its routes.
front_reload() {
  local image state
  install -d -m 0755 "$FRONT_DIR" && render_front_default >"$FRONT_DIR/default.conf" || return 1
  chmod 0644 "$FRONT_DIR"/*.conf
  ensure_network || return 1
  state=$(docker inspect -f '{{.State.Status}}' "$FRONT" 2>/dev/null || true)
  if [[ $state == running ]]; then
    docker exec "$FRONT" nginx -s reload >/dev/null 2>&1 && return 0
    docker rm -f "$FRONT" >/dev/null
  elif [[ -n $state ]]; then
    docker rm -f "$FRONT" >/dev/null
  fi
  image=$(template_env_value PROXY_IMAGE)
  docker run -d --name "$FRONT" --label "pushdeploy.review=$TEMPLATE" --network "$REVIEW_NETWORK" \
    --restart unless-stopped -p "127.0.0.1:$REVIEW_PORT:80" -v "$FRONT_DIR:/etc/nginx/conf.d:ro" \
    "${image:-nginx:1.27}" nginx -g 'daemon off;' >/dev/null || return 1
  echo "front proxy $FRONT started on 127.0.0.1:$REVIEW_PORT"
}

route_add() {
  install -d -m 0755 "$FRONT_DIR" && render_route "$ENV_NAME" "$PR" >"$FRONT_DIR/$ENV_NAME.conf" || return 1
  front_reload && echo "routing $(review_host "$PR") to $ENV_NAME"
}

route_remove() {
  rm -f "$FRONT_DIR/$ENV_NAME.conf"
  if docker inspect "$FRONT" >/dev/null 2>&1; then docker exec "$FRONT" nginx -s reload >/dev/null 2>&1 || true; fi
}

# The front proxy and the template's network go with the last instance (once
# its containers left the network).
front_remove_if_unused() {
  local others
  others=$(review_instances | grep -vx "$ENV_NAME" || true)
  [[ -z $others ]] || return 0
  docker rm -f "$FRONT" >/dev/null 2>&1 || true
  docker network rm "$REVIEW_NETWORK" >/dev/null 2>&1 || true
  rm -rf "$FRONT_DIR"
}

# ------------------------------------------------------------ making and removing

# The instance's .env: the template's (its secrets), with this instance's names.
write_instance_env() {
  local line
  {
    echo "# review environment $ENV_NAME, from the template $TEMPLATE's .env (bin/deploy review-up)"
    while IFS= read -r line || [[ -n $line ]]; do
      case $line in VERSION=* | REVIEW_NAME=* | REVIEW_NETWORK=* | REVIEW_HOST=*) continue ;; esac
      printf '%s\n' "$line"
    done <"$TEMPLATE_APP_DIR/.env"
    printf 'VERSION=none\nREVIEW_NAME=%s\nREVIEW_NETWORK=%s\nREVIEW_HOST=%s\n' "$ENV_NAME" "$REVIEW_NETWORK" "$(review_host "$PR")"
  } >"$APP_DIR/.env" && chmod 0600 "$APP_DIR/.env"
}

review_create() {
  [[ -f $TEMPLATE_APP_DIR/.env ]] || { echo "the template has no $TEMPLATE_APP_DIR/.env: give it a server_env file and run \`inv server.setup --env $TEMPLATE\`"; return 1; }
  install -d -m 0700 "$STATE_DIR" "$RUNS_DIR" && now_iso >"$STATE_DIR/$REVIEW_CREATED" || return 1
  install -d -m 0755 "$APP_DIR" || return 1
  tar -C "$TEMPLATE_APP_DIR" --exclude=./.env --exclude=./maintenance --exclude=./routing -cf - . | tar -C "$APP_DIR" -xf - || return 1
  write_instance_env || return 1
  ensure_network || return 1
  echo "made $ENV_NAME in $APP_DIR (compose project $PROJECT) from the template $TEMPLATE"
  review_seed
}

# The database starts empty (migrations fill it), or from the newest backup of
# another environment on this host, scrubbed by the template's scrub step.
review_seed() {
  local source
  case $REVIEW_SEED in
    fresh | '') echo "database: fresh" ;;
    backup:*)
      source=${REVIEW_SEED#backup:}
      [[ $source =~ $PD_ENV_RE ]] || { echo "REVIEW_SEED: invalid environment '$source'"; return 1; }
      step database start_database && step seed restore_file "$(latest_backup "$PD_STATE/$source/backups")" && step scrub scrub_database
      ;;
    *) echo "REVIEW_SEED is fresh or backup:ENV, not '$REVIEW_SEED'"; return 1 ;;
  esac
}

# Everything the instance made: containers, volumes, networks (by compose's
# labels, also what compose alone would miss), files, state, route.
review_destroy() {
  local ids
  route_remove
  if [[ -f $APP_DIR/.env ]]; then compose down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1 || true; fi
  ids=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")
  # shellcheck disable=SC2086 # one id per word
  [[ -z $ids ]] || docker rm -f $ids >/dev/null
  ids=$(docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT")
  # shellcheck disable=SC2086
  [[ -z $ids ]] || docker volume rm $ids >/dev/null
  ids=$(docker network ls -q --filter "label=com.docker.compose.project=$PROJECT")
  # shellcheck disable=SC2086
  [[ -z $ids ]] || docker network rm $ids >/dev/null
  rm -rf "$APP_DIR" "$STATE_DIR"
  front_remove_if_unused
}

# A first review-up that does not finish removes what it made, however it ends:
# a failed step, a signal, or bash exiting on its own (the EXIT trap; see the
# worker's in lib/detach.sh for why a signal trap alone is not enough).
unmake_review() {
  [[ $MAKING == 1 ]] || return 0
  MAKING=0
  trap '' TERM INT HUP
  echo "removing what was made of $ENV_NAME"
  # Unmarked first: whatever else fails, it no longer counts as live, and
  # review-down (which looks for its files and containers) removes the rest.
  rm -f "$STATE_DIR/$REVIEW_CREATED"
  review_destroy || echo "warning: could not remove all of $ENV_NAME: run \`inv review.down --pr $PR\`"
}

# ------------------------------------------------------------ verbs

cmd_review_up() {
  (( ${#POSITIONAL[@]} == 1 )) || die "$PD_EXIT_USAGE" "usage: review-up TEMPLATE-N VERSION"
  check_version "${POSITIONAL[0]}"
  NEW_VERSION=${POSITIONAL[0]}
  local live created=0 rc=0 log last
  MAKING=0
  review_lock
  if [[ ! -f $STATE_DIR/$REVIEW_CREATED ]]; then
    live=$(review_instances | wc -l)
    ((live < REVIEW_MAX)) || die "$PD_EXIT_FULL" "$live review environments of $TEMPLATE are live, the most allowed (review_max: $REVIEW_MAX): take one down (\`inv review.down --pr N\`, \`inv review.prune\`) or raise review_max"
    created=1 MAKING=1
    trap 'echo "review-up of $ENV_NAME interrupted (signal)"; exit 1' TERM INT HUP
    trap unmake_review EXIT
    review_create || { echo "could not make $ENV_NAME"; unmake_review; die 1 "review-up of $ENV_NAME failed: nothing was left behind"; }
  fi
  take_lock || die "$PD_EXIT_BUSY" "busy: ${LOCK_HOLDER#* }; try again when it is done"
  name_lock_holder "review-$$" "review-up of $ENV_NAME at $NEW_VERSION"
  last=$(last_deploy)
  if ((!created)) && [[ $(current_version) == "$NEW_VERSION" && $last == *": ok"* ]]; then
    echo "$ENV_NAME already runs $NEW_VERSION (last deploy: $last)"
  else
    log="$RUNS_DIR/$(date -u +%Y%m%dT%H%M%SZ)-$$.log"
    STEPS_FILE="${log%.log}.steps"
    : >"$STEPS_FILE"
    KIND=deploy
    run_deploy "$log" 2>&1 | tee -a "$log" || rc=$?
    if ((rc)); then
      : >"$STATE_DIR/lock.info"
      exec 9>&-
      if ((created)); then
        echo "the first deploy of $ENV_NAME failed"
        unmake_review
        die 1 "review-up of $ENV_NAME failed: nothing was left behind"
      fi
      die 1 "review-up of $ENV_NAME failed; it still runs $(current_version)"
    fi
  fi
  route_add || { unmake_review; die 1 "could not route $(review_host "$PR") to $ENV_NAME"; }
  MAKING=0
  trap - TERM INT HUP EXIT
  : >"$STATE_DIR/lock.info"
  printf 'url: %s\n' "$(review_url "$PR")"
}

cmd_review_down() {
  (( ${#POSITIONAL[@]} == 0 )) || die "$PD_EXIT_USAGE" "usage: review-down TEMPLATE-N"
  review_lock
  if [[ ! -d $STATE_DIR && ! -d $APP_DIR ]] && ! docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" | grep -q .; then
    route_remove
    front_remove_if_unused
    echo "$ENV_NAME does not exist: nothing to remove"
    return 0
  fi
  take_lock || flock -w 120 9 || die "$PD_EXIT_BUSY" "busy: ${LOCK_HOLDER#* }; try again when it is done"
  review_destroy
  echo "removed $ENV_NAME: containers, volumes, networks, files, state and route"
}

# One line per live instance, tab-separated: name, version, created, last deploy, url.
