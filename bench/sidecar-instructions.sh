#!/usr/bin/env bash
# Instructions per proxied `GET /` in the sidecar (`arlen serve --upstream`),
# counted by callgrind (repeatable whatever the machine is doing): the
# sidecar runs under callgrind with one tokio worker, the upstream (the
# plain-axum `arlen-baseline`) runs natively. Each count runs twice, with N1
# and N2 keep-alive requests; (Ir(N2) - Ir(N1)) / (N2 - N1) is the
# per-request cost with start-up and shutdown cancelled out. REPEATS runs,
# the median reported. ARLEN=path compares another build (e.g. the commit
# before a change, built with `cargo build --release` in a worktree).
#
# usage: bench/sidecar-instructions.sh [N1] [N2] [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/.."
n1=${1:-500}
n2=${2:-2500}
repeats=${3:-3}
command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind; }
cargo build --release --locked -q -p arlen -p arlen-bench
arlen=${ARLEN:-$PWD/target/release/arlen}
baseline=$PWD/target/release/arlen-baseline
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
. bench/common.sh

up=$(free_port)
TOKIO_WORKER_THREADS=1 "$baseline" "$up" "hello\n" & pids+=($!)
wait_port "$up" /

# instructions <requests>
instructions() {
  local port out pid
  port=$(free_port); out="$work/cg.$1.$RANDOM"
  env ARLEN_ENV=production ARLEN_LOG_LEVEL=warn ARLEN_CLUSTER_ENABLED=1 ARLEN_CLUSTER_NAME=bench \
      ARLEN_CLUSTER_NODE_ID=node-a ARLEN_CLUSTER_EXPECTED_NODES=1 TOKIO_WORKER_THREADS=1 \
      valgrind --tool=callgrind --callgrind-out-file="$out" -q "$arlen" serve --port "$port" --app-root /nonexistent \
      --upstream "http://127.0.0.1:$up" 2>/dev/null &
  pid=$!
  python3 bench/keepalive.py "$port" "$1"
  kill -TERM "$pid"; wait "$pid" || true
  awk '/^summary:/ {print $2}' "$out"
}

per=()
for r in $(seq "$repeats"); do
  a=$(instructions "$n1"); b=$(instructions "$n2")
  per+=($(( (b - a) / (n2 - n1) )))
  echo "repeat $r: $(( (b - a) / (n2 - n1) )) instructions per proxied GET /"
done
python3 -c 'import statistics, sys; print(f"median: {statistics.median(int(x) for x in sys.argv[1:]):.0f} instructions per proxied GET / ({sys.argv[1:]})")' "${per[@]}"
