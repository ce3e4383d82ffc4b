#!/usr/bin/env bash
# One command for every benchmark: builds in release mode, runs the request
# path against the plain-axum baseline and against the equivalent stack, the sidecar against nginx and
# stock hyper above the physical floor, cluster
# scale (3-200 real nodes, and 100-1000 simulated), signals under load, probes
# under abuse, the membership timings (gossip and etcd), the drills, and the
# criterion micro-benchmarks, then appends a dated results section to
# BENCHMARKS.md. Loopback only; every load is bounded in time.
#
# usage: bench/run.sh [--quick]   (--quick: fewer rounds, sizes and trials; a smoke run)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/provision --tests
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
cargo build --release --locked -q -p arlen -p arlen-bench
if [ "${1:-}" = "--quick" ]; then
  perf=(--rounds 1 --seconds 1 --sizes 3,10 --trials 1); membership=(--trials 3); drills=(--runs 1)
  criterion=(--warm-up-time 1 --measurement-time 1); idle=(--idle-seconds 10 --busy-seconds 10)
  sidecar=(2 1); sim=(--sizes 50,100 --steady-seconds 2 --quick); equivalent=(2 1)
else
  perf=(); membership=(); drills=(); criterion=(); idle=(); sidecar=(); sim=(--sizes 100,250,500,1000); equivalent=()
fi
out=$(mktemp)
# A benchmark that fails is recorded as failed in the section; the others still run.
step() { "$@" || echo "FAILED (exit $?): $*"; }
{
  echo
  echo "## Results of $(date -u +%Y-%m-%d) (bench/run.sh ${1:-})"
  echo
  echo "Commit $(git rev-parse --short HEAD). Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB;"
  echo "$(rustc --version); $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2); $(etcd --version | head -1)."
  echo
  echo '```'
  step python3 bench/perf.py "${perf[@]}"
  step ./bench/equivalent.sh "${equivalent[@]}"
  step ./bench/header-instructions.sh
  step python3 bench/request_instructions.py
  step python3 bench/membership.py "${membership[@]}" "${idle[@]}" --only detect,leave,cost,idle,busy
  step python3 bench/membership.py "${membership[@]}" --source etcd --only detect,leave,etcd-outage
  step python3 bench/drills.py "${drills[@]}"
  step ./bench/sidecar.sh "${sidecar[@]}"
  step ./bench/floor.sh "${sidecar[@]}"
  step ./bench/proxy-cpu.sh
  step python3 bench/abuse.py
  step python3 bench/gossip-sim.py "${sim[@]}"
  cargo bench -q -p arlen-bench --bench request_path -- "${criterion[@]}" 2>/dev/null | grep -E 'time:|^[a-z]' || true
  echo '```'
} | tee "$out"
cat "$out" >> BENCHMARKS.md
echo "appended to BENCHMARKS.md"
