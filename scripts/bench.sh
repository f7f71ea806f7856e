#!/usr/bin/env bash
# Runs every benchmark beside its baseline, in one run, and prints benchstat
# summaries. BENCHMARKS.md records its output. Needs redis-server and
# redis-benchmark (apt-get install -y redis-server) and benchstat
# (go install golang.org/x/perf/cmd/benchstat@latest).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-$(mktemp -d)}
count=${COUNT:-6}
mkdir -p "$out"
echo "results in $out"
go version
echo "cores: $(nproc)"

# The machine, against a raw looplab/fsm Event on the same toggle (no-op tracer), and
# against that Event plus one SDK span with the transition span's attributes
# (recording tracer). TRANSITION_ROUNDS runs of one binary, each running the four
# benchmarks in turn, so every machine figure has its floor from a second before:
# on a shared machine that pairs them better than -count, which runs each benchmark
# all its times in a row.
go test -c -o "$out/lifecycle.test" .
for _ in $(seq "${TRANSITION_ROUNDS:-10}"); do
  "$out/lifecycle.test" -test.run '^$' -test.bench 'BenchmarkTransition' -test.benchmem
done | tee "$out/transition.txt"
# A boot to running against a real redis-server, beside a go-redis PING round trip.
go test -run '^$' -bench 'BenchmarkBootToRunning|BenchmarkRedisPing' -benchmem -count "$count" ./service | tee "$out/boot.txt"
# A registry status update, beside a PING round trip to the same server.
go test -run '^$' -bench 'BenchmarkMemberUpdate|BenchmarkRedisPingRoundTrip' -benchmem -count "$count" ./registry | tee "$out/registry.txt"
# A /readyz probe, beside a bare net/http handler writing a similar body.
go test -run '^$' -bench 'BenchmarkReadyz|BenchmarkBareHandler' -benchmem -count "$count" ./health | tee "$out/health.txt"
# XADD of a control op to its result: 1, 100 and 1,000 daemons on one redis-server,
# beside a PING and a pipelined write of 1,000 results.
go test -run '^$' -bench 'BenchmarkOpToResult' -benchtime 200x -count 1 -timeout 30m ./controlops | tee "$out/controlops.txt"
# Bounded reads: one XREAD through the guard beside an unguarded copy; 100 readers blocked
# against 100 polling (IDLE_WINDOW, 10s by default).
go test -run '^$' -bench 'BenchmarkRead' -benchmem -count "$count" ./internal/blockread | tee "$out/blockread.txt"
go test -run '^$' -bench 'BenchmarkIdle|BenchmarkFanOut' -benchtime 1x -timeout 10m ./internal/blockread | tee "$out/idle.txt"
# The dashboard's page of a service of 1,000 instances, beside sgctl ps --json's registry read and encoding.
go test -run '^$' -bench 'ServicePage1000|BaselineServiceJSON1000' -benchmem -count "$count" ./cmd/sgctl/internal/dashboard | tee "$out/dashboard.txt"
# The balancer's pick, and a GET through it beside the same GET on a bare net/http client.
go test -run '^$' -bench 'BenchmarkPick|BenchmarkGet' -benchmem -count "$count" ./balancer | tee "$out/balancer.txt"

# The fleet on one redis-server: 1,000 and 10,000 registry members (registration with the
# scripts sent as text against by SHA1, the idle cost, memory, Instances, sgctl ps --json;
# FLEET_WINDOW sets the idle window, 30s by default), and one entry write by SHA1 against by text.
go test -run '^$' -bench 'Fleet' -benchtime 1x -timeout 30m ./registry | tee "$out/fleet.txt"
go test -run '^$' -bench 'EntryWrite' -benchmem -count "$count" ./registry | tee "$out/entrywrite.txt"
# Idle lifecycle instances (0, 1 and 1,000; IDLE_WINDOW, 30s by default), a restart storm of
# 1,000 boots with jitter 0 and 2s, and kill -9 of the master behind a Sentinel and on a cluster.
go test -run '^$' -bench 'IdleInstance|RestartStorm' -benchtime 1x -timeout 30m ./internal/fleettest | tee "$out/fleettest.txt"
go test -run '^$' -bench 'Failover' -benchtime 5x -timeout 30m ./internal/fleettest | tee "$out/failover.txt"

# The same round trip from outside Go: redis-benchmark PING, one client, no pipelining.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >/dev/null &
rs=$!
trap 'kill $rs 2>/dev/null; wait $rs 2>/dev/null || true' EXIT
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-benchmark -h 127.0.0.1 -p "$port" -t ping_inline,ping_mbulk -n 50000 -c 1 --csv | tee "$out/redis-benchmark.txt"

for f in transition boot registry health blockread dashboard balancer entrywrite; do
  echo "== $f"; benchstat "$out/$f.txt"
done

# ratio NAME MACHINE FLOOR BUDGET: the machine's time over its floor's in each round
# of transition.txt; fails when the median round is over BUDGET.
ratio() {
  awk -v m="^$2-" -v f="^$3-" '$1 ~ f {floor = $3} $1 ~ m && floor {print $3 / floor; floor = 0}' "$out/transition.txt" |
    sort -n | awk -v name="$1" -v budget="$4" '{r[NR] = $1}
      END {
        if (NR == 0) { print name ": no rounds"; exit 1 }
        med = NR % 2 ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
        printf "%s: %.2fx (median of %d rounds, %.2fx to %.2fx), budget %.1fx\n", name, med, NR, r[1], r[NR], budget
        exit (med > budget)
      }'
}
echo "== transition budgets"
status=0
ratio "no-op tracer over raw looplab" BenchmarkTransitionMachineNoopTracer BenchmarkTransitionRawLooplab 1.2 || status=1
ratio "recording tracer over raw looplab with a span" BenchmarkTransitionMachineRecordingTracer BenchmarkTransitionRawLooplabWithSpan 1.2 || status=1
exit $status
