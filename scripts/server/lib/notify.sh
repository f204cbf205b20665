# shellcheck shell=bash disable=SC2034,SC2153 # variables shared across the files bin/deploy sources
# pushdeploy server side: deploy notifications. The detached run calls `notify
# started` and `notify finished`; lib/notify.py posts to the environment's webhooks
# (PD_ETC/ENV.webhooks, root 0600, from server.setup) in its own session, in the
# background, under a hard time limit: a slow or failing webhook never delays or
# fails the deploy, and a killed client still gets its notifications.

NOTIFY_LIMIT=30 # seconds, all webhooks and retries included

webhooks_file() { printf '%s/%s.webhooks\n' "$PD_ETC" "$ENV_NAME"; }

notify() { # started|finished
  local file
  file=$(webhooks_file)
  [[ -s $file ]] || return 0
  echo "notifying the webhooks: $1"
  # The lock (fd 9) and the agent's lock (fd 8) stay with the deploy: the next deploy must not wait for a webhook.
  setsid timeout -k 2 "$NOTIFY_LIMIT" python3 -I "$PD_HOME/lib/notify.py" send "$file" "$1" "$HISTORY" \
    "env=$ENV_NAME" "project=$PROJECT" "host=$(hostname)" "kind=$KIND" "version=$NEW_VERSION" "previous=${PREVIOUS_VERSION:-}" \
    "by=${BY:-}" "url=${URL:-}" "time=$(now_iso)" </dev/null >>"$STATE_DIR/notify.log" 2>&1 8>&- 9>&- &
}
