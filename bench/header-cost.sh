#!/usr/bin/env bash
# Throughput of `GET /` with the X-Arlen-Cluster-* headers on, against the
# same server with them off (cluster.emitHeaders=0), measured in one run.
# Both servers run side by side on loopback; wrk runs alternate A/B/B/A so
# drift on a shared machine hits both sides alike. Bounded: ROUNDS x 2 x
# DURATION seconds of load.
#
# usage: bench/header-cost.sh [ROUNDS] [DURATION_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-6}
duration=${2:-5}
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
cargo build --release --locked -q -p arlen
bin=target/release/arlen

. bench/common.sh
common=(ARLEN_ENV=production ARLEN_LOG_LEVEL=warn ARLEN_CLUSTER_ENABLED=1 ARLEN_CLUSTER_NAME=bench
        ARLEN_CLUSTER_NODE_ID=node-a ARLEN_CLUSTER_EXPECTED_NODES=3 ARLEN_CLUSTER_OBSERVED_NODES=3)
port_on=$(free_port); port_off=$(free_port)
env "${common[@]}" ARLEN_CLUSTER_EMIT_HEADERS=1 taskset -c 0 "$bin" serve --port "$port_on" --app-root /nonexistent & pid_on=$!
env "${common[@]}" ARLEN_CLUSTER_EMIT_HEADERS=0 taskset -c 0 "$bin" serve --port "$port_off" --app-root /nonexistent & pid_off=$!
trap 'kill $pid_on $pid_off 2>/dev/null || true' EXIT
for port in "$port_on" "$port_off"; do
  for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/livez" >/dev/null 2>&1 && break; sleep 0.05; done
done
curl -fsS -D - -o /dev/null "http://127.0.0.1:$port_on/" | grep -q '^X-Arlen-Cluster-Status:' || { echo "headers missing on A"; exit 1; }
! curl -fsS -D - -o /dev/null "http://127.0.0.1:$port_off/" | grep -q '^X-Arlen-Cluster' || { echo "headers present on B"; exit 1; }

# The servers share core 0; wrk gets core 1, so the client's own cost does not
# compete with the server being measured. Each run prints "req/s cpu-us/req":
# throughput, and the server's CPU time (utime+stime) per request served.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() {
  local port=$1 pid=$2 before after out
  before=$(cpu_ticks "$pid")
  out=$(taskset -c 1 wrk -t1 -c32 -d"${duration}s" "http://127.0.0.1:$port/")
  after=$(cpu_ticks "$pid")
  awk -v ticks=$((after - before)) -v hz="$(getconf CLK_TCK)" '
    /requests in/ {n=$1} /Requests\/sec/ {rps=$2}
    END {printf "%s %.3f\n", rps, ticks / hz * 1e6 / n}' <<<"$out"
}
wrk -t1 -c32 -d2s "http://127.0.0.1:$port_on/" >/dev/null; wrk -t1 -c32 -d2s "http://127.0.0.1:$port_off/" >/dev/null
on=(); off=(); on_cpu=(); off_cpu=()
for r in $(seq "$rounds"); do
  if (( r % 2 )); then a=$(run "$port_on" "$pid_on"); b=$(run "$port_off" "$pid_off")
  else b=$(run "$port_off" "$pid_off"); a=$(run "$port_on" "$pid_on"); fi
  on+=("${a% *}"); on_cpu+=("${a#* }"); off+=("${b% *}"); off_cpu+=("${b#* }")
  printf 'round %2d: headers on %9s req/s %6s us/req | off %9s req/s %6s us/req\n' "$r" "${a% *}" "${a#* }" "${b% *}" "${b#* }"
done
python3 - "${on[*]}" "${off[*]}" "${on_cpu[*]}" "${off_cpu[*]}" <<'PY'
import statistics, sys
on, off, on_cpu, off_cpu = ([float(x) for x in arg.split()] for arg in sys.argv[1:5])
ratios = [a / b for a, b in zip(on, off)]
cpu_ratios = [a / b for a, b in zip(on_cpu, off_cpu)]
print(f"median req/s: on {statistics.median(on):.0f}, off {statistics.median(off):.0f}")
print(f"throughput on/off: median {statistics.median(ratios):.4f} (min {min(ratios):.4f}, max {max(ratios):.4f})")
print(f"server CPU per request: on {statistics.median(on_cpu):.2f} us, off {statistics.median(off_cpu):.2f} us, "
      f"ratio median {statistics.median(cpu_ratios):.4f} (min {min(cpu_ratios):.4f}, max {max(cpu_ratios):.4f})")
print(f"header layer cost: {100 * (1 - statistics.median(ratios)):.2f}% of throughput, "
      f"{100 * (statistics.median(cpu_ratios) - 1):.2f}% of CPU per request (target < 3%)")
PY
