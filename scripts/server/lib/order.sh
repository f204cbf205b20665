# shellcheck shell=bash disable=SC2034,SC2153 # variables shared across the files bin/deploy sources
# pushdeploy server side: refusing to go backwards by accident.

sorts_before() { # a b: sort -V order (1.9.0 < 1.10.0)
  [[ $1 != "$2" && $(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n 1) == "$1" ]]
}

# Semantic version order: a pre-release (1.4.0-rc.1) comes before its release.
version_lt() { # a b
  local a=$1 b=$2
  if [[ ${a%%-*} != "${b%%-*}" ]]; then
    sorts_before "${a%%-*}" "${b%%-*}"
    return
  fi
  [[ $a == *-* ]] || return 1
  [[ $b == *-* ]] || return 0
  sorts_before "${a#*-}" "${b#*-}"
}

# Production compares versions, staging the build order (commit time) the
# client sends. Rollbacks and --force pass.
check_order() { # version order
  local version=$1 order=$2 current last
  [[ $KIND == deploy && $OPT_FORCE -eq 0 ]] || return 0
  case $ORDERING in
    semver)
      current=$(current_version)
      # A version the pull agent pinned has no place in the order: anything may follow it.
      if [[ -n $current && $current != none ]] && ! is_pinned_version "$current" && version_lt "$version" "$current"; then
        die "$PD_EXIT_OLDER" "$version is older than the deployed $current: use \`inv deploy.rollback --env $ENV_NAME --to $version\`, or --force"
      fi
      ;;
    build)
      last=$(cat "$STATE_DIR/order" 2>/dev/null || true)
      if [[ -n $order && -n $last ]] && ((order < last)); then
        die "$PD_EXIT_OLDER" "build $version (order $order) is older than the deployed build (order $last): use \`inv deploy.rollback\`, or --force"
      fi
      ;;
  esac
}
