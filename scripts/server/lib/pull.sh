# shellcheck shell=bash disable=SC2034,SC2153 # variables shared across the files bin/deploy and bin/install source
# pushdeploy server side: pull mode. Instead of CI connecting to deploy, an agent on
# the server (a systemd timer, or a cron entry where systemd is not PID 1) runs
# `bin/deploy pull ENV` as root every PULL_EVERY seconds. It resolves the channel,
# a tag of the web image that CI moves (e.g. pixel:production-approved), to its
# digest, and when that changed deploys it through the same run as a pushed deploy
# (lock, validation, history, switch, rollback) as version CHANNEL-<12 hex of the
# digest>, pinned: the version names exactly one image, whatever the tag does later.
#
# Pure parts first (names, unit texts, the scheduler choice: table-tested), then the
# installer's part, then the agent.

pull_unit() { printf 'pushdeploy-pull-%s\n' "$1"; } # env

# systemd where it runs as PID 1 (then RUN_DIR, /run/systemd/system, exists: what
# sd_booted(3) checks), else cron where there is a cron.d, else none.
pull_scheduler() { # systemd-run-dir cron-dir
  if [[ -d $1 ]]; then
    echo systemd
  elif [[ -d $2 ]]; then
    echo cron
  else
    echo none
  fi
}

pull_service_text() { # env
  cat <<EOF
# Managed by pushdeploy (inv server.setup): the pull agent of $1.
[Unit]
Description=pushdeploy pull agent for $1: deploy the channel's image when it changed
After=network-online.target docker.service
Wants=network-online.target

[Service]
Type=oneshot
ExecStart=$PD_PREFIX/bin/deploy pull $1
EOF
}

pull_timer_text() { # env every-seconds
  cat <<EOF
# Managed by pushdeploy (inv server.setup): the pull agent of $1, every $2 s.
[Unit]
Description=pushdeploy pull agent for $1, every $2 s

[Timer]
OnBootSec=$2s
OnUnitActiveSec=$2s
AccuracySec=1s

[Install]
WantedBy=timers.target
EOF
}

# cron counts minutes: every ceil(EVERY/60) minutes, at least every minute.
pull_cron_minutes() { echo $((($1 + 59) / 60)); } # every-seconds

pull_cron_text() { # env every-seconds
  local minutes
  minutes=$(pull_cron_minutes "$2")
  printf '# Managed by pushdeploy (inv server.setup): the pull agent of %s, every %s min.\n' "$1" "$minutes"
  printf 'SHELL=/bin/sh\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n'
  printf '*/%s * * * * root %s/bin/deploy pull %s >>%s/%s/pull/agent.log 2>&1\n' "$minutes" "$PD_PREFIX" "$1" "$PD_STATE" "$1"
}

# Where the agent of ENV is installed, as one line (server.check, pull-status).
pull_agent_where() { # env systemd-dir cron-dir
  local unit
  unit=$(pull_unit "$1")
  if [[ -f $2/$unit.timer ]]; then
    printf 'systemd timer %s.timer (%s)\n' "$unit" "$(systemctl is-active "$unit.timer" 2>/dev/null || true)"
  elif [[ -f $3/$unit ]]; then
    printf 'cron %s/%s\n' "$3" "$unit"
  else
    echo none
  fi
}

# ---------------------------------------------------------------- installer (bin/install)

PD_SYSTEMD_RUN=/run/systemd/system PD_SYSTEMD_DIR=/etc/systemd/system PD_CRON_DIR=/etc/cron.d

# Reads PULL_CHANNEL and PULL_EVERY from the bundle's env.conf (nothing else).
bundle_pull_settings() { # conf-file
  local key value
  PULL_CHANNEL='' PULL_EVERY=60
  while IFS='=' read -r key value || [[ -n $key ]]; do
    case $key in
      PULL_CHANNEL) PULL_CHANNEL=$value ;;
      PULL_EVERY) PULL_EVERY=$value ;;
    esac
  done <"$1"
  [[ -z $PULL_CHANNEL || $PULL_CHANNEL =~ $PD_CHANNEL_RE ]] || die "invalid pull channel '$PULL_CHANNEL'"
  [[ $PULL_EVERY =~ ^[1-9][0-9]{0,5}$ ]] || die "invalid pull interval '$PULL_EVERY'"
}

# Installs (or, with no channel, removes) the agent of ENV; uses bin/install's put_file and report.
install_pull_agent() { # env channel every
  local env=$1 unit tmp scheduler before=$CHANGED
  unit=$(pull_unit "$env")
  if [[ -z $2 ]]; then
    remove_pull_agent "$env"
    return 0
  fi
  install -d -o root -g root -m 0700 "$PD_STATE/$env" "$PD_STATE/$env/pull"
  scheduler=$(pull_scheduler "$PD_SYSTEMD_RUN" "$PD_CRON_DIR")
  tmp=$(mktemp)
  case $scheduler in
    systemd)
      [[ ! -f $PD_CRON_DIR/$unit ]] || { rm -f "$PD_CRON_DIR/$unit"; report changed "removed $PD_CRON_DIR/$unit (systemd runs the agent now)"; }
      pull_service_text "$env" >"$tmp" && put_file "$tmp" "$PD_SYSTEMD_DIR/$unit.service" 0644
      pull_timer_text "$env" "$3" >"$tmp" && put_file "$tmp" "$PD_SYSTEMD_DIR/$unit.timer" 0644
      if ((CHANGED > before)); then
        if ! { systemctl daemon-reload && systemctl enable "$unit.timer" >/dev/null 2>&1 && systemctl restart "$unit.timer"; }; then
          die "could not start $unit.timer (see \`systemctl status $unit.timer\`)"
        fi
      elif [[ $(systemctl is-active "$unit.timer" 2>/dev/null) != active ]]; then
        systemctl enable --now "$unit.timer" >/dev/null 2>&1 || die "could not start $unit.timer (see \`systemctl status $unit.timer\`)"
        report changed "started $unit.timer"
      fi
      report agent "pull agent of $env: systemd timer $unit.timer, every $3 s, channel $2"
      ;;
    cron)
      pull_cron_text "$env" "$3" >"$tmp" && put_file "$tmp" "$PD_CRON_DIR/$unit" 0644
      report agent "pull agent of $env: cron ($PD_CRON_DIR/$unit, no systemd as PID 1), every $(pull_cron_minutes "$3") min, channel $2"
      ;;
    *)
      report missing "pull agent of $env: neither systemd (PID 1) nor $PD_CRON_DIR: install cron, or run \`$PD_PREFIX/bin/deploy pull $env\` from your own scheduler"
      ;;
  esac
  rm -f "$tmp"
}

remove_pull_agent() { # env
  local unit
  unit=$(pull_unit "$1")
  if [[ -f $PD_SYSTEMD_DIR/$unit.timer ]]; then
    systemctl disable --now "$unit.timer" >/dev/null 2>&1 || true
    rm -f "$PD_SYSTEMD_DIR/$unit.timer" "$PD_SYSTEMD_DIR/$unit.service"
    systemctl daemon-reload 2>/dev/null || true
    report changed "removed the pull agent of $1 (systemd timer $unit.timer): $1 is deployed by push"
  fi
  if [[ -f $PD_CRON_DIR/$unit ]]; then
    rm -f "$PD_CRON_DIR/$unit"
    report changed "removed the pull agent of $1 ($PD_CRON_DIR/$unit): $1 is deployed by push"
  fi
}

# ---------------------------------------------------------------- versions pinned by digest

pull_tool() { python3 -I "$PD_HOME/lib/pull.py" "$@"; }

pull_dir() { printf '%s/pull\n' "$STATE_DIR"; }

# A version the agent made: CHANNEL-<hex>, for the channel configured here.
is_pinned_version() { # version
  [[ -n ${PULL_CHANNEL-} && $1 =~ ^${PULL_CHANNEL}-[0-9a-f]{$PD_PIN_HEX}$ ]]
}

pinned_digest() { # version -> the digest it was pinned to
  local version digest
  [[ -f $(pull_dir)/pins ]] || return 1
  while read -r version digest; do
    [[ $version == "$1" ]] && { echo "$digest"; return 0; }
  done <"$(pull_dir)/pins"
  return 1
}

# The web service's image at VERSION, as compose resolves it (v1 and v2 print the
# same canonical YAML): services: / NAME: / image: REF.
web_image_ref() { # version
  compose_at "$1" config 2>/dev/null | awk -v svc="  $WEB_SERVICE:" '
    /^[^ ]/ { in_services = ($0 == "services:"); in_web = 0; next }
    in_services && /^  [^ ]/ { in_web = ($0 == svc); next }
    in_web && /^    image: / { sub(/^    image: /, ""); gsub(/["\047]/, ""); print; exit }'
}

# The registry digest of REF (repository@sha256:...), from the local image.
repo_digest() { # ref
  local repo=${1%:*} entry
  for entry in $(docker image inspect -f '{{join .RepoDigests " "}}' "$1" 2>/dev/null); do
    if [[ ${entry%@*} == "$repo" && ${entry#*@} =~ ^sha256:[0-9a-f]{64}$ ]]; then
      echo "${entry#*@}"
      return 0
    fi
  done
  return 1
}

# The pull step of a pinned version: the image by its digest, tagged as the version
# locally (the registry has no such tag); from the local copy if it is still there.
pull_pinned() { # version
  local version=$1 digest ref repo
  digest=$(pinned_digest "$version") || { echo "no digest pinned for $version in $(pull_dir)/pins"; return 1; }
  ref=$(web_image_ref "$version")
  [[ $ref == *:"$version" ]] || { echo "cannot tell the web image's repository from the compose files"; return 1; }
  repo=${ref%:*}
  echo "pinned: $repo@$digest"
  if ! docker image inspect "$repo@$digest" >/dev/null 2>&1; then
    docker pull -q "$repo@$digest" >/dev/null || return 1
  fi
  docker tag "$repo@$digest" "$ref"
}

# ---------------------------------------------------------------- the agent

# One check: resolve the channel, deploy its image if it changed since the last
# image the agent tried, and record the result (pull-status shows it). Run as root
# by the timer or cron entry; overlapping runs skip.
pull_once() {
  local dir ref repo out digest version last rc=0 id
  dir=$(pull_dir)
  install -d -m 0700 "$dir"
  exec 8>>"$dir/lock"
  flock -n 8 || { echo "another check of $ENV_NAME runs: skipped"; return 0; }
  trim_file "$dir/agent.log" 1048576
  echo "$(now_iso) checking $ENV_NAME's channel $PULL_CHANNEL"
  ref=$(web_image_ref "$PULL_CHANNEL")
  if [[ $ref != *:"$PULL_CHANNEL" ]]; then
    pull_check error '' '' "the web service's image in the compose files must be REPOSITORY:\${VERSION} (got '${ref:-nothing}')"
    return 1
  fi
  repo=${ref%:*}
  if ! out=$(docker pull "$ref" 2>&1); then
    pull_check error '' '' "docker pull $ref failed: $(tail -n 1 <<<"$out")"
    return 1
  fi
  digest=$(sed -n 's/^Digest: \(sha256:[0-9a-f]\{64\}\)$/\1/p' <<<"$out" | tail -n 1)
  [[ -n $digest ]] || digest=$(repo_digest "$ref") || true
  if [[ ! $digest =~ ^sha256:[0-9a-f]{64}$ ]]; then
    pull_check error '' '' "no registry digest for $ref"
    return 1
  fi
  version="$PULL_CHANNEL-${digest:7:$PD_PIN_HEX}"
  last=$(pull_tool last-digest "$dir/checks.jsonl")
  [[ -n $last ]] || last=$(pull_tool running-digest "$HISTORY" "$(current_version)")
  if [[ $digest == "$last" ]]; then
    pull_check unchanged "$digest" "$version" "$ref is still $digest"
    return 0
  fi
  echo "$ref moved to $digest: deploying it as $version"
  docker tag "$repo@$digest" "$repo:$version" || { pull_check error "$digest" "$version" "could not tag $repo@$digest"; return 1; }
  pinned_digest "$version" >/dev/null || printf '%s %s\n' "$version" "$digest" >>"$dir/pins"
  check_version "$version"
  # Unguessable: a deploy sent earlier with the same id would make this one "already ran".
  id="$(date -u +%Y%m%dT%H%M%SZ)-pull-$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  # The deploy verb itself, as root: the same checks, lock and detached run as any deploy.
  "$PD_HOME/bin/deploy" deploy "$ENV_NAME" "$version" "--id=$id" --force "--by=pull:$PULL_CHANNEL" || rc=$?
  case $rc in
    0) pull_check deployed "$digest" "$version" "deployed $version ($repo@$digest)" ;;
    "$PD_EXIT_BUSY") pull_check busy '' "$version" "another deploy of $ENV_NAME runs: trying again at the next check" ;;
    *) pull_check failed "$digest" "$version" "the deploy of $version failed (exit $rc): $(current_version) serves; not retried until the channel moves" ;;
  esac
  return "$rc"
}

pull_check() { # result digest version message
  echo "$1: $4"
  pull_tool record "$(pull_dir)/checks.jsonl" "time=$(now_iso)" "channel=$PULL_CHANNEL" "result=$1" "digest=$2" "version=$3" "message=$4"
}

trim_file() { # file max-bytes
  [[ -f $1 ]] && (($(stat -c %s "$1") > $2)) || return 0
  tail -c "$(($2 / 2))" "$1" >"$1.tmp" && mv -f "$1.tmp" "$1"
}
