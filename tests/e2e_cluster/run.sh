#!/usr/bin/env bash
# `make e2e-cluster`: the cluster e2e (tests/e2e_cluster) on the local cluster of `make cluster`.
#
# Brings the cluster up (`make cluster`: built from Go modules the first time, ~10 min cold, then cached; bring-up
# 50-70 s), runs the suite, and takes the cluster down again (`make cluster-down`), also when a test fails or the
# run is interrupted. SHARDSCORE_E2E_KEEP_CLUSTER=1 leaves it up (to look at it, or to run single tests again:
# .venv/bin/python -m pytest -m cluster tests/e2e_cluster -k ...). Extra arguments go to pytest.
#
# The suite runs in two passes: the tests that share the cluster, SHARDSCORE_E2E_WORKERS (default 2) at a time
# (pytest-xdist, --dist loadfile: a file is one unit of work; conftest.py says which files share a worker), then the
# `whole_cluster` tests, which fill the CPU node, one at a time. Much of a test is waiting (pods starting and
# stopping, slow models, deadlines, grace periods), so two at a time keep the 2-core machine busier
# (docs/local-cluster.md has the figures).
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
# suite MARKERS PYTEST-ARGS...: one pass, its output also kept in a file. Exit status 5 (nothing selected: `-k` in
# E2E_ARGS may leave a pass empty) fails only if the other pass selected nothing either.
failed=0 empty=0 passes=0 failed_logs=()
pass_logs="$(mktemp -d)"
suite() {
  local markers="$1" out rc; shift
  passes=$((passes + 1))
  out="$pass_logs/pass-$passes.log"
  { rc=0
    PATH="$PWD/.tools/bin:$PWD/.venv/bin:$PATH" .venv/bin/python -m pytest -m "$markers" tests/e2e_cluster \
      -p no:cacheprovider -v -s --durations=25 "$@" 2>&1 || rc=$?
    echo "$rc" >"$out.rc"; } | tee "$out"
  rc="$(cat "$out.rc")"
  if ((rc == 5)); then empty=$((empty + 1)); elif ((rc != 0)); then failed=1; failed_logs+=("$out"); fi
}
workers="${SHARDSCORE_E2E_WORKERS:-2}"
log "the tests that share the cluster, $workers at a time"
suite "cluster and not whole_cluster" -n "$workers" --dist loadfile --no-loadscope-reorder "$@"
log "the tests that need the cluster to themselves, one at a time"
suite "cluster and whole_cluster" "$@"
suite_s=$((SECONDS - t))
if ((empty == 2)); then log "no test selected"; failed=1; fi
# A failed test's report (its diagnostics: pods, events, the operator's log) again at the end of the output, where
# a CI log is read first, whichever pass it was in.
for out in "${failed_logs[@]}"; do
  log "the failures of $(basename "$out" .log) again:"
  sed -n '/^=* \(FAILURES\|ERRORS\) =*$/,$p' "$out"
done
rm -rf "$pass_logs"
exit "$failed"
