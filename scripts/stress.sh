#!/usr/bin/env bash
# Runs the whole test suite beside two CPU hogs, RUNS times in a row (default
# 3), and stops at the first failing run: a test that passes on an idle
# machine and fails on a busy one is a defect. The hogs are shell busy loops
# bounded by `timeout` (HOG_SECONDS, default 1800), and are killed when the
# script ends, whatever ends it. Needs what the suite needs (redis-server,
# graphviz; see .ci/run).
#
#   scripts/stress.sh            # 3 runs of go test -race -count=1 ./...
#   RUNS=1 scripts/stress.sh ./service ./process
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
pkgs=("$@")
[ ${#pkgs[@]} -gt 0 ] || pkgs=(./...)
hogs=()
stop_hogs() {
  for p in "${hogs[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${hogs[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap stop_hogs EXIT
for _ in 1 2; do
  timeout "${HOG_SECONDS:-1800}" sh -c 'while :; do :; done' &
  hogs+=($!)
done
echo "cores: $(nproc); two CPU hogs running (pids ${hogs[*]})"
for i in $(seq "$runs"); do
  start=$(date +%s)
  if ! go test -race -count=1 "${pkgs[@]}"; then
    echo "stress: run $i of $runs FAILED after $(($(date +%s) - start))s"
    exit 1
  fi
  echo "stress: run $i of $runs passed in $(($(date +%s) - start))s (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
done
echo "stress: $runs runs in a row passed beside two CPU hogs"
