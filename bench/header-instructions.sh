#!/usr/bin/env bash
# Instructions per `GET /` request, counted by callgrind (instruction counts do
# not depend on machine load, so this figure is repeatable where wrk's is
# noisy), for four servers:
#   on     Arlen, cluster headers on, HTTP/1.1 title case on (the default)
#   lower  Arlen, cluster headers on, title case off (http.titleCaseHeaders=NO)
#   off    Arlen, cluster headers off (identity and trace headers still on), title case on
#   bare   Arlen, cluster headers off, title case off
#   axum   the plain-axum baseline (crates/arlen-bench/src/bin/baseline.rs)
# and, for the library's costs (issue 23; MODES="on info access checks otel"):
#   info   as `on`, at logLevel info (the default level: every request's span is live)
#   access as `info`, with observability.accessLog on (stderr to /dev/null)
#   checks as `on`, with a configured readiness check (exec:true, every 200 ms)
#   otel   as `info`, exporting every request's span over OTLP/HTTP to a sink
# Each server runs twice, with N1 and N2 keep-alive requests; (Ir(N2) -
# Ir(N1)) / (N2 - N1) is the per-request cost with start-up and shutdown
# cancelled out. One tokio worker (TOKIO_WORKER_THREADS=1; with two, an idle
# worker's spinning moves the count by up to ±1 000 instructions). Each mode
# is measured REPEATS times, interleaved; the median is reported.
#
# usage: bench/header-instructions.sh [N1] [N2] [REPEATS]   (MODES="lower bare" for a subset, no summary)
set -euo pipefail
cd "$(dirname "$0")/.."
n1=${1:-500}
n2=${2:-2500}
repeats=${3:-3}
command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind; }
cargo build --release --locked -q -p arlen -p arlen-bench
arlen=$PWD/target/release/arlen
baseline=$PWD/target/release/arlen-baseline
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

. bench/common.sh

# instructions <mode> <requests>
instructions() {
  local port out pid emit=1 title=1 level=warn extra=()
  port=$(free_port); out="$work/cg.$1.$2"
  case "$1" in
    lower) title=0 ;; off) emit=0 ;; bare) emit=0; title=0 ;;
    info) level=info ;;
    access) level=info; extra=(ARLEN_ACCESS_LOG=1) ;;
    checks) extra=(ARLEN_CHECKS_READINESS=db=exec:true ARLEN_CHECKS_INTERVAL_MS=200) ;;
    otel) level=info; extra=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$sink_port" OTEL_BSP_SCHEDULE_DELAY=200) ;;
  esac
  if [ "$1" = axum ]; then
    TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$out" -q "$baseline" "$port" "arlen node node-a (cluster bench)\n" &
  else
    env "${extra[@]}" ARLEN_ENV=production ARLEN_LOG_LEVEL="$level" ARLEN_CLUSTER_ENABLED=1 ARLEN_CLUSTER_NAME=bench \
        ARLEN_CLUSTER_NODE_ID=node-a ARLEN_CLUSTER_EXPECTED_NODES=3 ARLEN_CLUSTER_EMIT_HEADERS="$emit" \
        ARLEN_HTTP_TITLE_CASE_HEADERS="$title" \
        TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$out" -q "$arlen" serve --port "$port" --app-root /nonexistent 2>/dev/null &
  fi
  pid=$!
  python3 - "$port" "$2" "$1" <<'PY'
import http.client, sys, time
port, count, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
probe = "/" if mode == "axum" else "/livez"
deadline = time.time() + 120
while True:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30); conn.request("GET", probe); conn.getresponse().read(); break
    except OSError:
        if time.time() > deadline: raise
        time.sleep(0.1)
for _ in range(count):
    conn.request("GET", "/"); response = conn.getresponse(); response.read()
    assert (response.getheader("X-Arlen-Cluster-Status") is not None) == (mode not in ("off", "bare", "axum"))
PY
  kill -TERM "$pid"; wait "$pid" || true
  awk '/^summary:/ {print $2}' "$out"
}

# An OTLP/HTTP sink for the otel mode: answers every export 200, counts spans' bytes.
sink_port=$(free_port)
python3 - "$sink_port" <<'PY' &
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args): pass
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200); self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0"); self.end_headers()
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
PY
sink=$!
trap 'kill "$sink" 2>/dev/null; rm -rf "$work"' EXIT

declare -A per
for r in $(seq "$repeats"); do
  line="repeat $r:"
  for mode in ${MODES:-on lower off bare axum}; do
    a=$(instructions "$mode" "$n1"); b=$(instructions "$mode" "$n2")
    per[$mode]="${per[$mode]:-} $(( (b - a) / (n2 - n1) ))"
    line="$line $mode $(( (b - a) / (n2 - n1) ))"
  done
  echo "$line"
done
[ -n "${MODES:-}" ] && exit 0
python3 - "${per[on]}" "${per[lower]}" "${per[off]}" "${per[bare]}" "${per[axum]}" <<'PY'
import statistics, sys
on, lower, off, bare, axum = (statistics.median(int(x) for x in arg.split()) for arg in sys.argv[1:6])
print(f"instructions per GET / (median of each): headers+title {on:.0f}, headers+lower {lower:.0f}, "
      f"no cluster headers+title {off:.0f}, no cluster headers+lower {bare:.0f}, plain axum {axum:.0f}")
print(f"cluster headers as HeaderMap entries (lower case): +{100 * (lower - bare) / bare:.2f}%; "
      f"with title case: +{100 * (on - off) / off:.2f}%; title case itself (headers on): +{100 * (on - lower) / lower:.2f}%; "
      f"Arlen (default) vs plain axum: {on / axum:.2f}x")
PY
