#!/usr/bin/env bash
# `make e2e-cluster`: the cluster e2e (tests/e2e_cluster) on the local cluster of `make cluster`.
#
# Brings the cluster up (`make cluster`: built from Go modules the first time, ~10 min cold, then cached; bring-up
# 50-70 s), runs the suite, and takes the cluster down again (`make cluster-down`), also when a test fails or the
# run is interrupted. SHARDSCORE_E2E_KEEP_CLUSTER=1 leaves it up (to look at it, or to run single tests again:
# .venv/bin/python -m pytest -m cluster tests/e2e_cluster -k ...). Extra arguments go to pytest.
# The last lines give the time of each phase.
set -euo pipefail
cd "$(dirname "$0")/../.."

start=$SECONDS
up_s=0 suite_s=0
log() { echo "$(date +%H:%M:%S) e2e-cluster: $*" >&2; }

finish() {
  rc=$?
  suite_end=$SECONDS
  if [[ "${SHARDSCORE_E2E_KEEP_CLUSTER:-0}" == 1 ]]; then
    log "SHARDSCORE_E2E_KEEP_CLUSTER=1: the cluster stays up (make cluster-down removes it)"
  else
    log "taking the cluster down"
    if ! bash cluster/cluster.sh down; then
      log "cluster-down failed"
      [[ $rc -ne 0 ]] || rc=1
    fi
  fi
  log "times: cluster up ${up_s}s, suite ${suite_s}s, down $((SECONDS - suite_end))s, total $((SECONDS - start))s; exit $rc"
  exit "$rc"
}
trap finish EXIT

log "bringing the local cluster up (make cluster)"
bash cluster/cluster.sh up
up_s=$((SECONDS - start))
t=$SECONDS
PATH="$PWD/.tools/bin:$PWD/.venv/bin:$PATH" .venv/bin/python -m pytest -m cluster tests/e2e_cluster \
  -p no:cacheprovider -v -s --durations=25 "$@" || { suite_s=$((SECONDS - t)); exit 1; }
suite_s=$((SECONDS - t))
