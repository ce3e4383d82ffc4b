#!/usr/bin/env bash
# The physical floor and everything above it, in one run: a small `GET /`
# answered by
#   floor     the minimal responder (crates/arlen-bench/src/bin/floor.rs: one
#             thread, no parsing, a fixed response per request head)
#   nginx     nginx answering itself (`return 200`)
#   axum      plain axum (arlen-baseline)
#   arlen     Arlen's own `GET /` (`arlen serve`, the default settings)
#   sidecar   `arlen serve --upstream` in front of arlen-baseline
#   nginx-proxy  nginx in front of the same arlen-baseline
#   hyper-proxy  stock hyper on both sides and nothing else, in front of the
#             same arlen-baseline (crates/arlen-bench/src/bin/hyper_proxy.rs:
#             the floor of the sidecar's own stack)
# Every server single-threaded on core 0 (the upstream too), wrk on core 1,
# same connections; rounds alternate the order. Prints per server the median
# req/s, p50 and p99, and the throughput as a share of the floor's. With
# CONNECTIONS=1 the floor's p50 is the loopback round trip of one request.
# INSTRUCTIONS=1 also counts, under callgrind, the instructions per request
# of the floor and of the three proxies (for the runtime's own `GET /`, see
# bench/header-instructions.sh).
#
# usage: bench/floor.sh [ROUNDS] [DURATION_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-4}
duration=${2:-3}
. bench/common.sh
need_commands wrk nginx valgrind
cargo build --release --locked -q -p arlen -p arlen-bench
connections=${CONNECTIONS:-32}
work=$(mktemp -d)
pids=()
trap 'for ((i=${#pids[@]}-1; i>=0; i--)); do kill "${pids[$i]}" 2>/dev/null || true; done; rm -rf "$work"' EXIT

arlen_env=(ARLEN_ENV=production ARLEN_LOG_LEVEL=warn ARLEN_CLUSTER_ENABLED=1 ARLEN_CLUSTER_NAME=bench
  ARLEN_CLUSTER_NODE_ID=node-a ARLEN_CLUSTER_EXPECTED_NODES=1 TOKIO_WORKER_THREADS=1)

up=$(free_port)
TOKIO_WORKER_THREADS=1 taskset -c 0 target/release/arlen-baseline "$up" "hello\n" & pids+=($!)
wait_port "$up" /

declare -A port
port[floor]=$(free_port); port[nginx]=$(free_port); port[axum]=$(free_port)
port[arlen]=$(free_port); port[sidecar]=$(free_port); port[nginx-proxy]=$(free_port); port[hyper-proxy]=$(free_port)
taskset -c 0 target/release/arlen-floor "${port[floor]}" "hello\n" & pids+=($!)
nginx_conf "$work/static.conf" "${port[nginx]}" "$up" 'default_type text/plain; return 200 "hello\n";'
taskset -c 0 nginx -c "$work/static.conf" -p "$work" & pids+=($!)
TOKIO_WORKER_THREADS=1 taskset -c 0 target/release/arlen-baseline "${port[axum]}" "hello\n" & pids+=($!)
env "${arlen_env[@]}" taskset -c 0 target/release/arlen serve --port "${port[arlen]}" --app-root /nonexistent & pids+=($!)
env "${arlen_env[@]}" taskset -c 0 target/release/arlen serve --port "${port[sidecar]}" --app-root /nonexistent \
  --upstream "http://127.0.0.1:$up" & pids+=($!)
nginx_conf "$work/proxy.conf" "${port[nginx-proxy]}" "$up" "$NGINX_PROXY"
taskset -c 0 nginx -c "$work/proxy.conf" -p "$work" & pids+=($!)
TOKIO_WORKER_THREADS=1 taskset -c 0 target/release/arlen-hyper-proxy "${port[hyper-proxy]}" "127.0.0.1:$up" & pids+=($!)
for name in floor nginx axum arlen nginx-proxy hyper-proxy; do wait_port "${port[$name]}" /; done
wait_port "${port[sidecar]}" /readyz

# run <port> -> "req/s p50_ms p99_ms"
run() {
  taskset -c 1 wrk -t1 -c"$connections" -d"${duration}s" --latency "http://127.0.0.1:$1/" | awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /Requests\/sec/ {rps=$2} $1=="50%" {p50=ms($2)} $1=="99%" {p99=ms($2)}
    END {print rps, p50, p99}'
}
names=(floor nginx axum arlen sidecar nginx-proxy hyper-proxy)
echo "wrk on core 1 with $connections connections, every server single-threaded on core 0, $rounds rounds of ${duration} s"
: > "$work/rows"
for r in $(seq "$rounds"); do
  order=("${names[@]}")
  if [ $((r % 2)) = 0 ]; then order=(hyper-proxy nginx-proxy sidecar arlen axum nginx floor); fi
  for name in "${order[@]}"; do echo "$r $name $(run "${port[$name]}")" >> "$work/rows"; done
done
python3 - "$work/rows" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
names = ["floor", "nginx", "axum", "arlen", "sidecar", "nginx-proxy", "hyper-proxy"]
# Each server against its own comparison, as medians of the per-round ratios.
against = {"nginx": "floor", "axum": "floor", "arlen": "axum", "sidecar": "nginx-proxy", "hyper-proxy": "nginx-proxy", "nginx-proxy": "floor"}
per = {n: [tuple(map(float, r[2:])) for r in rows if r[1] == n] for n in names}
by_round = {(r[0], r[1]): float(r[2]) for r in rows}
rounds = sorted({r[0] for r in rows})
ratio = lambda a, b: statistics.median(by_round[(r, a)] / by_round[(r, b)] for r in rounds)
print(f"{'server':<12} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'of floor':>9}  throughput against")
for n in names:
    med = [statistics.median(v[i] for v in per[n]) for i in range(3)]
    versus = f"{ratio(n, against[n]):.2f} x {against[n]}" if n in against else ""
    print(f"{n:<12} {med[0]:>9.0f} {med[1]:>8.3f} {med[2]:>8.3f} {ratio(n, 'floor'):>9.2f}  {versus}")
PY

[ "${INSTRUCTIONS:-0}" = 1 ] || exit 0
# instructions <name> <requests>: callgrind's total for a server under N keep-alive requests.
instructions() {
  local p out pid
  p=$(free_port); out="$work/cg.$1.$2"
  case "$1" in
    floor) valgrind --tool=callgrind --callgrind-out-file="$out" -q target/release/arlen-floor "$p" "hello\n" & pid=$! ;;
    hyper-proxy) TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$out" -q target/release/arlen-hyper-proxy "$p" "127.0.0.1:$up" & pid=$! ;;
    sidecar) env "${arlen_env[@]}" valgrind --tool=callgrind --callgrind-out-file="$out" -q target/release/arlen serve --port "$p" \
        --app-root /nonexistent --upstream "http://127.0.0.1:$up" 2>/dev/null & pid=$! ;;
    nginx-proxy)
      MASTER=off nginx_conf "$work/cg.conf" "$p" "$up" "$NGINX_PROXY"
      valgrind --tool=callgrind --callgrind-out-file="$out" -q nginx -c "$work/cg.conf" -p "$work" & pid=$! ;;
  esac
  python3 bench/keepalive.py "$p" "$2"
  kill -TERM "$pid"; wait "$pid" || true
  awk '/^summary:/ {print $2}' "$out"
}
for name in floor nginx-proxy hyper-proxy sidecar; do
  a=$(instructions "$name" 300); b=$(instructions "$name" 1300)
  echo "$name: $(( (b - a) / 1000 )) instructions per request (callgrind, (Ir(1300) - Ir(300)) / 1000)"
done
