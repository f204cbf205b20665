# shellcheck shell=bash disable=SC2034,SC2153 # variables shared across the files bin/deploy sources
# pushdeploy server side: the deploy history (HISTORY, one JSON object a line),
# written and read by lib/history.py, a real JSON tool, never by printf and sed.

history_tool() { python3 -I "$PD_HOME/lib/history.py" "$@"; }

record() { # outcome duration log-file
  local outcome=$1 duration=$2 log=$3 tail_file
  tail_file=$(mktemp)
  if [[ $outcome != ok ]]; then grep -v '^==> \| ok ' "$log" 2>/dev/null | tail -n 15 >"$tail_file" || true; fi
  history_tool append "$HISTORY" "time=$(now_iso)" "env=$ENV_NAME" "kind=$KIND" "version=$NEW_VERSION" \
    "previous=$PREVIOUS_VERSION" "order=$ORDER" "by=$BY" "url=$URL" "sudo_user=${SUDO_USER:-root}" "outcome=$outcome" \
    "failed_step=$FAILED_STEP" "duration=$duration" "digest=${DIGEST:-}" "run=${PD_RUN_ID-}" "steps=@$STEPS_FILE" "log_tail=@$tail_file"
  RECORDED=$outcome
  rm -f "$tail_file"
}

# The summary append keeps beside the history: no Python for `status`, which
# every host runs at once before a deploy. A history older than the summary
# (written by an earlier server side) is read the slow way.
last_deploy() {
  local line
  if [[ ! -f $HISTORY ]]; then
    echo none
  elif [[ -f $HISTORY.last && ! $HISTORY -nt $HISTORY.last ]] && IFS= read -r line <"$HISTORY.last"; then
    printf '%s\n' "$line"
  else
    history_tool last "$HISTORY"
  fi
}
