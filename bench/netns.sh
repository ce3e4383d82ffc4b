#!/usr/bin/env bash
# Real network faults between real `arlen serve` processes, each in a network
# namespace of its own, cut with nftables (needs root, ip, nft, etcd): the
# seeded schedule of crates/arlen/tests/netns.rs, longer than the suite's.
# Prints every phase and, per kind of fault, the distributions of the time
# until the nodes that had to leave rotation did, and of the time from the
# heal until every node was nominal again.
#
# usage: bench/netns.sh [phases=80] [seed]
set -euo pipefail
cd "$(dirname "$0")/.."
phases="${1:-80}"
if [ -n "${2:-}" ]; then export ARLEN_TEST_SEED="$2"; fi
log="$(mktemp)"
status=0
ARLEN_NETNS_PHASES="$phases" cargo test --release -p arlen --test netns -- real_partitions --nocapture >"$log" 2>&1 || status=$?
grep -E '^(ARLEN_TEST_SEED|seed|fault|[A-Z][a-z]+ +[0-9])' "$log" || true
# A failure: what the nodes said and their logs' ends.
if [ "$status" -ne 0 ]; then sed -n '/panicked/,/^failures:/p' "$log"; fi
rm -f "$log"
exit "$status"
