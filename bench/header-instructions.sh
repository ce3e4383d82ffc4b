#!/usr/bin/env bash
# Instructions per `GET /` request with the cluster headers on and off,
# counted by callgrind (instruction counts do not depend on machine load, so
# this figure is repeatable where wrk's is noisy). Each mode runs the server
# twice, with N1 and N2 keep-alive requests; (Ir(N2) - Ir(N1)) / (N2 - N1) is
# the per-request cost with start-up and shutdown cancelled out.
#
# The server runs one tokio worker (TOKIO_WORKER_THREADS=1): with two, how
# much an idle worker spins searching for work depends on timing, which moves
# the count by up to ±1 000 instructions per request between runs. Each mode
# is measured REPEATS times, alternating; the median is reported.
#
# usage: bench/header-instructions.sh [N1] [N2] [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/.."
n1=${1:-500}
n2=${2:-2500}
repeats=${3:-3}
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
      TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$out" -q "$bin" serve --port "$port" --app-root /nonexistent &
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

on=(); off=()
for r in $(seq "$repeats"); do
  for emit in 1 0; do
    a=$(instructions "$emit" "$n1"); b=$(instructions "$emit" "$n2")
    per=$(( (b - a) / (n2 - n1) ))
    if [ "$emit" = 1 ]; then on+=("$per"); else off+=("$per"); fi
  done
  echo "repeat $r: instructions per GET /: headers on ${on[-1]}, off ${off[-1]}"
done
python3 - "${on[*]}" "${off[*]}" <<'PY'
import statistics, sys
on, off = ([int(x) for x in arg.split()] for arg in sys.argv[1:3])
m_on, m_off = statistics.median(on), statistics.median(off)
print(f"instructions per GET / (median of {len(on)}): headers on {m_on:.0f}, off {m_off:.0f}")
costs = [100 * (a - b) / b for a, b in zip(on, off)]
print(f"header layer cost: {100 * (m_on - m_off) / m_off:.2f}% of instructions per request "
      f"(per repeat: {', '.join(f'{c:.2f}%' for c in costs)}; target < 3%)")
PY
