# shellcheck shell=bash disable=SC2034,SC2153 # variables shared across the files bin/deploy sources
# pushdeploy server side: the deploy yields the CPU to the site it deploys.
#
# On a small server a deploy's own work (compose, Docker, Django starting in the
# one-off container that migrates and in the new web containers) competes for
# the CPU with the requests being served, and they wait. With PRIORITY=low (the
# default, `deploy_priority` in invoke.yaml):
#   - the detached deploy runs under `nice -n 10` (docker and compose inherit it);
#   - the containers it creates have a low CPU weight (cpu-shares) until they
#     serve: the one-off that migrates, the new web containers until admitted.
# When the CPU is idle this changes nothing; when it is not, serving comes first.

LOW_CPU_SHARES=64
declare -A CPU_SHARES_BEFORE=()

# Containers created but not serving yet get a low CPU weight; their own is kept.
yield_cpu() { # ids...
  [[ $PRIORITY == low && $# -gt 0 ]] || return 0
  local id shares
  while read -r id shares; do
    CPU_SHARES_BEFORE[$id]=$shares
  done < <(docker inspect -f '{{.Id}} {{.HostConfig.CpuShares}}' "$@" 2>/dev/null)
  docker update --cpu-shares "$LOW_CPU_SHARES" "$@" >/dev/null 2>&1 ||
    echo "note: could not lower the new containers' CPU weight (docker update --cpu-shares): they start at full weight"
}

# Containers about to serve get their own CPU weight back (0 is Docker's default, 1024).
restore_cpu() { # ids...
  [[ $PRIORITY == low && $# -gt 0 ]] || return 0
  local id shares
  for id; do
    shares=${CPU_SHARES_BEFORE[$id]-0}
    docker update --cpu-shares "$((shares > 0 ? shares : 1024))" "$id" >/dev/null ||
      { echo "could not give ${id:0:12} its CPU weight back (docker update --cpu-shares)"; return 1; }
  done
}

# The `docker run` option that gives a one-off container of the deploy its CPU
# weight (swarm's one-offs; 0 is Docker's default).
oneoff_cpu_option() {
  if [[ $PRIORITY == low ]]; then echo "--cpu-shares=$LOW_CPU_SHARES"; else echo "--cpu-shares=0"; fi
}

# `compose run` cannot give its one-off container a CPU weight: lowered as soon
# as the container exists (looked for every 0.1 s, for 10 s at most). Run in the
# background beside `compose run`.
yield_cpu_of_oneoff() { # service
  [[ $PRIORITY == low ]] || return 0
  local id tries
  for ((tries = 0; tries < 100; tries++)); do
    id=$(docker ps -q --filter "label=com.docker.compose.project=$PROJECT" --filter "label=com.docker.compose.service=$1" \
      --filter "label=com.docker.compose.oneoff=True" 2>/dev/null | head -n 1)
    if [[ -n $id ]]; then
      docker update --cpu-shares "$LOW_CPU_SHARES" "$id" >/dev/null 2>&1 || true
      return 0
    fi
    sleep 0.1
  done
}
