#!/usr/bin/env bash
# Instructions per `GET /` request with the cluster headers on and off,
# counted by callgrind (instruction counts do not depend on machine load, so
# this figure is repeatable where wrk's is noisy). Each mode runs the server
# twice, with N1 and N2 keep-alive requests; (Ir(N2) - Ir(N1)) / (N2 - N1) is
# the per-request cost with start-up and shutdown cancelled out.
#
# usage: bench/header-instructions.sh [N1] [N2]
set -euo pipefail
cd "$(dirname "$0")/.."
n1=${1:-500}
n2=${2:-2500}
command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind; }
cargo build --release --locked -q -p arlen
bin=$PWD/target/release/arlen
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# instructions <emit_headers> <requests>
instructions() {
  local port out pid
  port=$(free_port); out="$work/cg.$1.$2"
  env ARLEN_ENV=production ARLEN_LOG_LEVEL=warn ARLEN_CLUSTER_ENABLED=1 ARLEN_CLUSTER_NAME=bench \
      ARLEN_CLUSTER_NODE_ID=node-a ARLEN_CLUSTER_EXPECTED_NODES=3 ARLEN_CLUSTER_EMIT_HEADERS="$1" \
      valgrind --tool=callgrind --callgrind-out-file="$out" -q "$bin" serve --port "$port" --app-root /nonexistent &
  pid=$!
  python3 - "$port" "$2" "$1" <<'PY'
import http.client, sys, time
port, count, emit = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
deadline = time.time() + 120
while True:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30); conn.request("GET", "/livez"); conn.getresponse().read(); break
    except OSError:
        if time.time() > deadline: raise
        time.sleep(0.1)
for _ in range(count):
    conn.request("GET", "/"); response = conn.getresponse(); response.read()
    assert (response.getheader("X-Arlen-Cluster-Status") is not None) == emit
PY
  kill -TERM "$pid"; wait "$pid"
  awk '/^summary:/ {print $2}' "$out"
}

declare -A per_request
for emit in 1 0; do
  a=$(instructions "$emit" "$n1"); b=$(instructions "$emit" "$n2")
  per_request[$emit]=$(( (b - a) / (n2 - n1) ))
done
on=${per_request[1]}; off=${per_request[0]}
echo "instructions per GET /: headers on $on, off $off"
python3 -c "print(f'header layer cost: {100 * ($on - $off) / $off:.2f}% of instructions per request (target < 3%)')"
