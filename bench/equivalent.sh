#!/usr/bin/env bash
# Arlen against the equivalent stack (crates/arlen-bench/src/bin/equivalent_stack.rs:
# axum + tower-http request ids + OpenTelemetry trace context + metrics /
# metrics-exporter-prometheus + JSON probes + static cluster headers), same
# box, same run, alternating rounds (A/B, then B/A). Both servers are
# single-threaded on core 0 (TOKIO_WORKER_THREADS=1), wrk on core 1 with 32
# connections. Per endpoint: the median throughput ratio, p50 and p99 latency
# ratios (Arlen / equivalent), and server CPU per request (utime+stime from
# /proc over the requests wrk counted), with the spread of the ratio.
# Bounded: ROUNDS x 2 servers x 5 endpoints x DURATION seconds of load.
#
# usage: bench/equivalent.sh [ROUNDS] [DURATION_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-10}
duration=${2:-3}
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
cargo build --release --locked -q -p arlen -p arlen-bench
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
. bench/common.sh

ar=$(free_port); eq=$(free_port)
env ARLEN_ENV=production ARLEN_LOG_LEVEL=warn ARLEN_CLUSTER_ENABLED=1 ARLEN_CLUSTER_NAME=bench \
    ARLEN_CLUSTER_NODE_ID=node-a ARLEN_CLUSTER_EXPECTED_NODES=1 TOKIO_WORKER_THREADS=1 \
    taskset -c 0 target/release/arlen serve --port "$ar" --app-root /nonexistent & pids+=($!); ar_pid=$!
TOKIO_WORKER_THREADS=1 taskset -c 0 target/release/equivalent-stack "$eq" & pids+=($!); eq_pid=$!
wait_port "$ar" /readyz; wait_port "$eq" /readyz

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# run <port> <pid> <path> -> "req/s p50_ms p99_ms cpu_us_per_request"
run() {
  local before after out
  before=$(cpu_ticks "$2")
  out=$(taskset -c 1 wrk -t1 -c32 -d"${duration}s" --latency "http://127.0.0.1:$1$3")
  after=$(cpu_ticks "$2")
  echo "$out" | awk -v ticks=$((after - before)) -v hz="$(getconf CLK_TCK)" '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /Requests\/sec/ {rps=$2} $1=="50%" {p50=ms($2)} $1=="99%" {p99=ms($2)} / requests in / {n=$1}
    END {print rps, p50, p99, (n > 0 ? ticks / hz * 1e6 / n : 0)}'
}
for path in "/" "/readyz" "/readyz?format=json" "/clusterz" "/metrics"; do
  : > "$work/rows"
  for r in $(seq "$rounds"); do
    if [ $((r % 2)) = 1 ]; then a=$(run "$ar" "$ar_pid" "$path"); e=$(run "$eq" "$eq_pid" "$path"); else e=$(run "$eq" "$eq_pid" "$path"); a=$(run "$ar" "$ar_pid" "$path"); fi
    echo "$a $e" >> "$work/rows"
  done
  python3 - "$path" "$work/rows" <<'PY'
import statistics, sys
path, rows = sys.argv[1], [list(map(float, l.split())) for l in open(sys.argv[2])]
ratios = sorted(r[0] / r[4] for r in rows)
q = lambda xs, f: xs[min(len(xs) - 1, int(f * len(xs)))]
med = lambda i: statistics.median(r[i] for r in rows)
ratio = lambda i: statistics.median(r[i] / r[i + 4] for r in rows if r[i + 4] > 0)
print(f"GET {path}: throughput Arlen/equivalent {statistics.median(ratios):.2f} (quartiles {q(ratios, .25):.2f}-{q(ratios, .75):.2f}); "
      f"Arlen {med(0):.0f} req/s, p50 {med(1):.2f} ms, p99 {med(2):.2f} ms, CPU {med(3):.1f} us/req; "
      f"equivalent {med(4):.0f} req/s, p50 {med(5):.2f} ms, p99 {med(6):.2f} ms, CPU {med(7):.1f} us/req; "
      f"p50 ratio {ratio(1):.2f}, p99 ratio {ratio(2):.2f}")
PY
done
