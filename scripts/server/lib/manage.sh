# shellcheck shell=bash disable=SC2034,SC2153 # variables shared across the files bin/deploy sources
# pushdeploy server side: Django management commands in a deploy: the before_switch
# and after_switch hooks (the `manage` verb is lib/pdserver/verbs.py's). Both lists come from the root-owned ENV.conf (MANAGE_COMMAND,
# HOOK_BEFORE_SWITCH, HOOK_AFTER_SWITCH lines written by `inv server.setup`), never
# from the request, and are checked here with the rules of deploy/management.py.

HOOKS_BEFORE=() HOOKS_AFTER=() MANAGE_COMMANDS=()

is_forbidden_command() { [[ " $PD_MANAGE_FORBIDDEN " == *" $1 "* ]]; }

# --settings=X, --pythonpath X, or a prefix Django's parser would take for one (--set=X).
changes_django_setup() { # word
  local name=${1%%=*} option
  ((${#name} >= 3)) || return 1
  for option in $PD_MANAGE_FORBIDDEN_OPTIONS; do
    [[ $option == "$name"* ]] && return 0
  done
  return 1
}

# A command line from ENV.conf (hook or allowlist entry): a permitted name, then
# words (hooks: PD_ARG_RE words; allowlist: patterns without spaces or backslashes).
check_management_line() { # what kind(hook|allow) line
  local what=$1 kind=$2 name word
  local -a words
  read -r -a words <<<"$3"
  name=${words[0]-}
  if [[ ! $name =~ $PD_MANAGE_NAME_RE ]] || is_forbidden_command "$name"; then
    die 1 "$ENV_CONF: $what: '$name' is not a permitted management command: fix invoke.yaml and run \`inv server.setup --env $ENV_NAME\`"
  fi
  for word in "${words[@]:1}"; do
    if [[ $kind == hook ]]; then
      if [[ ! $word =~ $PD_ARG_RE ]] || changes_django_setup "$word"; then die 1 "$ENV_CONF: $what: invalid argument '$word'"; fi
    else
      [[ $word != *\\* ]] || die 1 "$ENV_CONF: $what: backslash in pattern '$word'"
    fi
  done
}

# Called by load_env_conf once the file is read.
check_management_conf() {
  local line
  for line in "${HOOKS_BEFORE[@]}"; do check_management_line HOOK_BEFORE_SWITCH hook "$line"; done
  for line in "${HOOKS_AFTER[@]}"; do check_management_line HOOK_AFTER_SWITCH hook "$line"; done
  for line in "${MANAGE_COMMANDS[@]}"; do check_management_line MANAGE_COMMAND allow "$line"; done
}

# The one-off container both use: the web service's image at VERSION, no
# dependencies started, no TTY, removed afterwards; output unbuffered so it streams.
manage_run() { # version compose-run-args...
  local version=$1
  shift
  compose_at "$version" run --rm --no-deps -T -e PYTHONUNBUFFERED=1 "$@"
}

# Run by Django's `manage.py shell -c` in one one-off container of the new version:
# each hook of PD_HOOKS (hooks separated by ";", words by " ", all PD_ARG_RE words)
# through call_command, in order, stopping at the first that fails (exit 5).
# shellcheck disable=SC2016 # Python, not shell
HOOKS_PY='
import os, sys, traceback
from django.core.management import call_command
from django.core.management.base import CommandError
for hook in os.environ["PD_HOOKS"].split(";"):
    words = hook.split()
    print("--- manage.py %s" % " ".join(words), flush=True)
    try:
        call_command(*words)
    except CommandError as error:
        print("%s: %s" % (type(error).__name__, error), flush=True)
        sys.exit(5)
    except BaseException:
        traceback.print_exc()
        sys.exit(5)
'

run_hooks() { # before|after
  local -a hooks
  if [[ $1 == before ]]; then hooks=("${HOOKS_BEFORE[@]}"); else hooks=("${HOOKS_AFTER[@]}"); fi
  ((${#hooks[@]})) || return 0
  manage_run "$NEW_VERSION" -e "PD_HOOKS=$(IFS=';' && echo "${hooks[*]}")" "$WEB_SERVICE" \
    "${MANAGE_CMD[@]}" shell -c "$HOOKS_PY"
}

# After the switch the new version serves whatever its hooks say: a failure is a
# warning in the log and in the step's record, not a failed deploy.
run_after_hooks() {
  local failed=$FAILED_STEP
  ((${#HOOKS_AFTER[@]})) || return 0
  if ! step hooks-after run_hooks after; then
    FAILED_STEP=$failed
    HOOKS_WARNING="an after_switch hook failed (see the log above); $NEW_VERSION serves"
    echo "warning: $HOOKS_WARNING"
  fi
}
HOOKS_WARNING=''
