# shellcheck shell=bash disable=SC2034,SC2153 # variables bin/install sets
# pushdeploy server side: pull mode. Instead of CI connecting to deploy, an agent on
# the server (a systemd timer, or a cron entry where systemd is not PID 1) runs
# `bin/deploy pull ENV` as root every PULL_EVERY seconds. It resolves the channel,
# a tag of the web image that CI moves (e.g. pixel:production-approved), to its
# digest, and when that changed deploys it through the same run as a pushed deploy
# (lock, validation, history, switch, rollback) as version CHANNEL-<12 hex of the
# digest>, pinned: the version names exactly one image, whatever the tag does later.
#
# This file is bin/install's part: the pure parts first (names, unit texts, the
# scheduler choice: table-tested), then installing and removing the agent. The agent
# itself, `bin/deploy pull ENV`, is lib/pdserver/agent.py.

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
