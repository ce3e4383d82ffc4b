#!/usr/bin/env bash
# The sidecar against nginx, both as a reverse proxy in front of the same
# upstream (the plain-axum `arlen-baseline`), same box, same run, alternating
# rounds (A/B, then B/A). Workloads: a small `GET /`, and a 1 MiB body
# streamed from the upstream. Both proxies are single-threaded on core 0
# (nginx `worker_processes 1`, Arlen `TOKIO_WORKER_THREADS=1`), the upstream
# too; wrk runs on core 1. Prints per workload the median throughput ratio
# and the median p50 and p99 latency ratios (Arlen / nginx).
# Bounded: ROUNDS x 2 proxies x 2 workloads x DURATION seconds of load.
# Knobs (environment): WORKERS (nginx worker_processes and Arlen's tokio
# worker threads, 1), PROXY_CORES (the proxies' and upstream's CPU list, 0),
# WRK_CORE (1), CONNECTIONS (wrk's keep-alive connections, 32), ARLEN (the
# arlen binary: another build to compare, e.g. one made in a worktree).
#
# usage: bench/sidecar.sh [ROUNDS] [DURATION_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-10}
duration=${2:-3}
. bench/common.sh
need_commands wrk nginx
cargo build --release --locked -q -p arlen -p arlen-bench
workers=${WORKERS:-1}
cores=${PROXY_CORES:-0}
wrk_core=${WRK_CORE:-1}
connections=${CONNECTIONS:-32}
arlen=${ARLEN:-target/release/arlen}
echo "workers $workers on cores $cores, wrk on core $wrk_core with $connections connections, arlen $arlen"
work=$(mktemp -d)
pids=()
# The proxies first, then the upstream (so nothing logs the upstream going away).
trap 'for ((i=${#pids[@]}-1; i>=0; i--)); do kill "${pids[$i]}" 2>/dev/null || true; done; rm -rf "$work"' EXIT

head -c 1048576 /dev/zero | tr '\0' 'x' > "$work/big.txt"
up=$(free_port); ng=$(free_port); ar=$(free_port)
TOKIO_WORKER_THREADS="$workers" taskset -c "$cores" target/release/arlen-baseline "$up" "hello\n" "$work/big.txt" & pids+=($!)
wait_port "$up" /
nginx_conf "$work/nginx.conf" "$ng" "$up" "$NGINX_PROXY" "$workers"
taskset -c "$cores" nginx -c "$work/nginx.conf" -p "$work" & pids+=($!)
env ARLEN_ENV=production ARLEN_LOG_LEVEL=warn ARLEN_CLUSTER_ENABLED=1 ARLEN_CLUSTER_NAME=bench \
    ARLEN_CLUSTER_NODE_ID=node-a ARLEN_CLUSTER_EXPECTED_NODES=1 TOKIO_WORKER_THREADS="$workers" \
    taskset -c "$cores" "$arlen" serve --port "$ar" --app-root /nonexistent --upstream "http://127.0.0.1:$up" & pids+=($!)
wait_port "$ng" /; wait_port "$ar" /readyz

# run <port> <path> -> "req/s p50_ms p99_ms"
run() {
  taskset -c "$wrk_core" wrk -t1 -c"$connections" -d"${duration}s" --latency "http://127.0.0.1:$1$2" | awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /Requests\/sec/ {rps=$2} $1=="50%" {p50=ms($2)} $1=="99%" {p99=ms($2)}
    END {print rps, p50, p99}'
}
for workload in "/" "/static/0"; do
  : > "$work/rows"
  for r in $(seq "$rounds"); do
    if [ $((r % 2)) = 1 ]; then a=$(run "$ar" "$workload"); n=$(run "$ng" "$workload"); else n=$(run "$ng" "$workload"); a=$(run "$ar" "$workload"); fi
    echo "$a $n" >> "$work/rows"
  done
  python3 - "$workload" "$work/rows" <<'PY'
import statistics, sys
workload, path = sys.argv[1], sys.argv[2]
rows = [list(map(float, line.split())) for line in open(path)]
ratio = lambda i: statistics.median(r[i] / r[i + 3] for r in rows)
med = lambda i: statistics.median(r[i] for r in rows)
name = "GET / (small)" if workload == "/" else "GET 1 MiB streamed"
print(f"{name}: Arlen {med(0):.0f} req/s (p50 {med(1):.2f} ms, p99 {med(2):.2f} ms) vs nginx {med(3):.0f} req/s "
      f"(p50 {med(4):.2f} ms, p99 {med(5):.2f} ms); medians of {len(rows)} rounds: throughput ratio {ratio(0):.2f}, "
      f"p50 ratio {ratio(1):.2f}, p99 ratio {ratio(2):.2f}")
PY
done
