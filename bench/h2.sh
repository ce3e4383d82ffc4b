#!/usr/bin/env bash
# HTTP/2 measured (issue 25): h2load (Debian's nghttp2-client) over h2c
# (prior knowledge) against
#   - Arlen's own endpoints vs the equivalent axum stack
#     (crates/arlen-bench/src/bin/equivalent_stack.rs, served by axum::serve,
#     which speaks h2c too), on GET / and GET /readyz;
#   - the sidecar vs nginx with `listen … http2` towards clients, both in
#     front of the same HTTP/1.1 upstream (the plain-axum arlen-baseline).
# Same box, same run, alternating rounds (A/B, then B/A). Servers and proxies
# single-threaded on core 0 (TOKIO_WORKER_THREADS=1, nginx worker_processes
# 1), h2load on core 1 with 8 connections, each with 1 stream at a time and
# then 32 concurrent streams. Per comparison: the median throughput ratio and
# the median p50 and p99 latency ratios (A / B) from h2load's per-request log.
# Bounded: ROUNDS x 4 servers x 3 workloads x 2 stream counts x DURATION s.
#
# usage: bench/h2.sh [ROUNDS] [DURATION_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-6}
duration=${2:-3}
. bench/common.sh
need_commands h2load:nghttp2-client nginx
cargo build --release --locked -q -p arlen -p arlen-bench
work=$(mktemp -d)
pids=()
trap 'for ((i=${#pids[@]}-1; i>=0; i--)); do kill "${pids[$i]}" 2>/dev/null || true; done; rm -rf "$work"' EXIT

arlen_env=(ARLEN_ENV=production ARLEN_LOG_LEVEL=warn ARLEN_CLUSTER_ENABLED=1 ARLEN_CLUSTER_NAME=bench
  ARLEN_CLUSTER_NODE_ID=node-a ARLEN_CLUSTER_EXPECTED_NODES=1 TOKIO_WORKER_THREADS=1)
up=$(free_port); ar=$(free_port); eq=$(free_port); sc=$(free_port); ng=$(free_port)
TOKIO_WORKER_THREADS=1 taskset -c 0 target/release/arlen-baseline "$up" "hello\n" & pids+=($!)
env "${arlen_env[@]}" taskset -c 0 target/release/arlen serve --port "$ar" --app-root /nonexistent & pids+=($!)
TOKIO_WORKER_THREADS=1 taskset -c 0 target/release/equivalent-stack "$eq" & pids+=($!)
env "${arlen_env[@]}" taskset -c 0 target/release/arlen serve --port "$sc" --app-root /nonexistent \
  --upstream "http://127.0.0.1:$up" & pids+=($!)
# 1.22 closes an HTTP/2 connection after 1,000 requests by default; h2load
# does not reconnect.
nginx_conf "$work/nginx.conf" "$ng" "$up" "$NGINX_PROXY" 1 \
  "http2_max_concurrent_streams 128; keepalive_requests 100000000;" http2
taskset -c 0 nginx -c "$work/nginx.conf" -p "$work" & pids+=($!)
wait_port "$up" /; wait_port "$ar" /readyz; wait_port "$eq" /readyz; wait_port "$sc" /readyz
for _ in $(seq 100); do h2load -n 1 -c 1 "http://127.0.0.1:$ng/" 2>/dev/null | grep -q "1 succeeded" && break; sleep 0.05; done

# run <port> <path> <streams> -> "req/s p50_ms p99_ms failed"
run() {
  local log="$work/h2.log"
  rm -f "$log"
  out=$(taskset -c 1 h2load -t1 -c8 -m"$3" -D"$duration" --log-file="$log" "http://127.0.0.1:$1$2")
  rps=$(echo "$out" | awk '/^finished in/ {print $4}')
  failed=$(echo "$out" | awk '/^requests:/ {print $9 + $11 + $13}')
  python3 - "$log" "$rps" "$failed" <<'PY'
import sys
durations = sorted(int(line.split()[2]) for line in open(sys.argv[1]) if line.strip())
q = lambda f: durations[min(len(durations) - 1, int(f * len(durations)))] / 1000
print(sys.argv[2], q(0.50), q(0.99), sys.argv[3])
PY
}

compare() { # compare <label> <portA> <nameA> <portB> <nameB> <path> <streams>
  : > "$work/rows"
  for r in $(seq "$rounds"); do
    if [ $((r % 2)) = 1 ]; then a=$(run "$2" "$6" "$7"); b=$(run "$4" "$6" "$7"); else b=$(run "$4" "$6" "$7"); a=$(run "$2" "$6" "$7"); fi
    echo "$a $b" >> "$work/rows"
  done
  python3 - "$1" "$3" "$5" "$6" "$7" "$work/rows" <<'PY'
import statistics, sys
label, a, b, path, streams, rows = sys.argv[1:6] + [[list(map(float, l.split())) for l in open(sys.argv[6])]]
med = lambda i: statistics.median(r[i] for r in rows)
ratio = lambda i: statistics.median(r[i] / r[i + 4] for r in rows if r[i + 4] > 0)
ratios = sorted(r[0] / r[4] for r in rows)
print(f"{label} GET {path}, 8 connections x {streams} stream(s): {a} {med(0):.0f} req/s (p50 {med(1):.2f} ms, p99 {med(2):.2f} ms, "
      f"{sum(r[3] for r in rows):.0f} failed) vs {b} {med(4):.0f} req/s (p50 {med(5):.2f} ms, p99 {med(6):.2f} ms, "
      f"{sum(r[7] for r in rows):.0f} failed); throughput ratio {statistics.median(ratios):.2f} "
      f"({ratios[0]:.2f}-{ratios[-1]:.2f}), p50 ratio {ratio(1):.2f}, p99 ratio {ratio(2):.2f}")
PY
}

for streams in 1 32; do
  compare "h2c runtime" "$ar" Arlen "$eq" equivalent / "$streams"
  compare "h2c runtime" "$ar" Arlen "$eq" equivalent /readyz "$streams"
  compare "h2c proxy" "$sc" "Arlen sidecar" "$ng" nginx / "$streams"
done
