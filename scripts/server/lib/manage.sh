# shellcheck shell=bash disable=SC2034,SC2153 # variables shared across the files bin/deploy sources
# pushdeploy server side: Django management commands. The `manage` verb runs one
# command of the environment's allowlist; the deploy runs the before_switch and
# after_switch hooks. Both lists come from the root-owned ENV.conf (MANAGE_COMMAND,
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

# Whether the allowlist lets NAME run with these arguments; says why not.
manage_allowed() { # name args...
  local name=$1 line word pattern ok found=''
  local -a entry
  shift
  [[ $name =~ $PD_MANAGE_NAME_RE ]] || { echo "'$name' is not a management command name"; return 1; }
  if is_forbidden_command "$name"; then
    echo "\`$name\` is not in $ENV_NAME's manage_commands and can never run through pushdeploy: it runs arbitrary code or SQL, or reads or replaces data wholesale ($PD_MANAGE_FORBIDDEN are refused)"
    return 1
  fi
  for line in "${MANAGE_COMMANDS[@]}"; do
    read -r -a entry <<<"$line"
    if [[ ${entry[0]} == "$name" ]]; then found=$line; break; fi
  done
  if [[ -z $found ]]; then
    echo "\`$name\` is not in $ENV_NAME's manage_commands (allowed: $(allowed_names))"
    return 1
  fi
  read -r -a entry <<<"$found"
  for word in "$@"; do
    ok=0
    [[ $word =~ $PD_ARG_RE ]] || { echo "invalid argument '$word'"; return 1; }
    if changes_django_setup "$word"; then
      echo "\`$name\` does not accept the argument '$word': $PD_MANAGE_FORBIDDEN_OPTIONS (or a prefix of one) are never passed"
      return 1
    fi
    for pattern in "${entry[@]:1}"; do
      if [[ $word =~ ^($pattern)$ ]]; then ok=1; break; fi
    done
    ((ok)) || { echo "\`$name\` does not accept the argument '$word' (allowed: ${entry[*]:1})"; return 1; }
  done
}

allowed_names() {
  local line names=()
  for line in "${MANAGE_COMMANDS[@]}"; do names+=("${line%% *}"); done
  if ((${#names[@]})); then echo "${names[*]}"; else echo none; fi
}

# The one-off container both use: the web service's image at VERSION, no
# dependencies started, no TTY, removed afterwards; output unbuffered so it streams.
manage_run() { # version compose-run-args...
  local version=$1
  shift
  compose_at "$version" run --rm --no-deps -T -e PYTHONUNBUFFERED=1 "$@"
}

# `manage ENV [--expect=HASH] [--by=WHO] NAME ARGS...`: the request's own options come
# first; every word from NAME on belongs to the management command.
cmd_manage_main() { # words after ENV
  local expect='' by='' version rc=0 why
  while (($#)) && [[ $1 == --* ]]; do
    [[ $1 =~ $PD_ARG_RE ]] || die "$PD_EXIT_USAGE" "invalid argument '$1'"
    case $1 in
      --expect=*) expect=${1#*=} ;;
      --by=*) by=${1#*=} ;;
      *) die "$PD_EXIT_USAGE" "unknown option '$1' (usage: manage ENV [--expect=HASH] NAME ARGS...)" ;;
    esac
    shift
  done
  (($#)) || die "$PD_EXIT_USAGE" "usage: manage ENV [--expect=HASH] NAME ARGS... (allowed: $(allowed_names))"
  check_expected "$expect"
  why=$(manage_allowed "$@") || die "$PD_EXIT_USAGE" "refused: $why"
  version=$(current_version)
  [[ -n $version ]] || die 1 "nothing is deployed in $ENV_NAME yet: deploy first"
  # A deploy changes the image and the database under the command: never both at once.
  take_lock || die "$PD_EXIT_BUSY" "busy: ${LOCK_HOLDER#* }; try again when it is done"
  BY=${by:-unknown} name_lock_holder "manage-$$" "manage $1"
  echo "pushdeploy: manage.py $* in a one-off container of $version ($ENV_NAME)" >&2
  manage_run "$version" "$WEB_SERVICE" "${MANAGE_CMD[@]}" "$@" </dev/null || rc=$?
  : >"$STATE_DIR/lock.info"
  exit "$rc"
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
