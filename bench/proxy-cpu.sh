#!/usr/bin/env bash
# Where a proxied request's time goes on the proxies' core: the sidecar,
# nginx and stock hyper (arlen-hyper-proxy), each in front of the same
# upstream (arlen-baseline), all single-threaded on core 0, wrk on core 1
# (32 connections). Per request, from /proc before and after each wrk run:
# the proxy's and the upstream's user and system CPU time (clock ticks, so
# take the figures of a few seconds' load) and their context switches,
# voluntary (the process waited) and involuntary (it was preempted).
#
# usage: bench/proxy-cpu.sh [ROUNDS] [DURATION_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
duration=${2:-4}
. bench/common.sh
need_commands wrk nginx
cargo build --release --locked -q -p arlen -p arlen-bench
work=$(mktemp -d)
pids=()
trap 'for ((i=${#pids[@]}-1; i>=0; i--)); do kill "${pids[$i]}" 2>/dev/null || true; done; rm -rf "$work"' EXIT

up=$(free_port); ng=$(free_port); ar=$(free_port); hp=$(free_port)
TOKIO_WORKER_THREADS=1 taskset -c 0 target/release/arlen-baseline "$up" "hello\n" & upstream=$!; pids+=($upstream)
wait_port "$up" /
nginx_conf "$work/nginx.conf" "$ng" "$up" "$NGINX_PROXY"
taskset -c 0 nginx -c "$work/nginx.conf" -p "$work" & pids+=($!)
env ARLEN_ENV=production ARLEN_LOG_LEVEL=warn ARLEN_CLUSTER_ENABLED=1 ARLEN_CLUSTER_NAME=bench \
    ARLEN_CLUSTER_NODE_ID=node-a ARLEN_CLUSTER_EXPECTED_NODES=1 TOKIO_WORKER_THREADS=1 \
    taskset -c 0 target/release/arlen serve --port "$ar" --app-root /nonexistent --upstream "http://127.0.0.1:$up" \
    2>/dev/null & sidecar=$!; pids+=($sidecar)
TOKIO_WORKER_THREADS=1 taskset -c 0 target/release/arlen-hyper-proxy "$hp" "127.0.0.1:$up" & hyper=$!; pids+=($hyper)
wait_port "$ng" /; wait_port "$ar" /readyz; wait_port "$hp" /
nginx_worker=$(pgrep -P "$(cat "$work/nginx.conf.pid")" | head -1)

# counters <pid>: user and system ticks, voluntary and involuntary switches (all threads)
counters() {
  local v=0 n=0 d
  for d in /proc/"$1"/task/*; do
    v=$((v + $(awk '/^voluntary_ctxt_switches/ {print $2}' "$d/status")))
    n=$((n + $(awk '/^nonvoluntary_ctxt_switches/ {print $2}' "$d/status")))
  done
  echo "$(awk '{print $14, $15}' "/proc/$1/stat") $v $n"
}
measure() { # <name> <port> <pid>
  local before upstream_before after upstream_after requests
  before=$(counters "$3"); upstream_before=$(counters "$upstream")
  requests=$(taskset -c 1 wrk -t1 -c32 -d"${duration}s" "http://127.0.0.1:$2/" | awk '/requests in/ {print $1}')
  after=$(counters "$3"); upstream_after=$(counters "$upstream")
  python3 - "$1" "$requests" "$duration" "$(getconf CLK_TCK)" "$before" "$after" "$upstream_before" "$upstream_after" <<'PY'
import sys
name, requests, duration, hz = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
b, a, ub, ua = ([int(x) for x in s.split()] for s in sys.argv[5:9])
per = lambda i, x, y: (y[i] - x[i]) / requests
us = lambda i, x, y: per(i, x, y) / hz * 1e6
print(f"{name:<12} {requests / duration:>8.0f} req/s | proxy user {us(0, b, a):5.1f} us, sys {us(1, b, a):5.1f} us, "
      f"switches {per(2, b, a):.2f} waited + {per(3, b, a):.2f} preempted | upstream user {us(0, ub, ua):5.1f} us, "
      f"sys {us(1, ub, ua):5.1f} us, switches {per(2, ub, ua):.2f} + {per(3, ub, ua):.2f}")
PY
}
for r in $(seq "$rounds"); do
  measure sidecar "$ar" "$sidecar"; measure nginx "$ng" "$nginx_worker"; measure hyper-proxy "$hp" "$hyper"
done
