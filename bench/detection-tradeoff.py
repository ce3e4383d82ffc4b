#!/usr/bin/env python3
"""Detection against false alarms and bandwidth, by simulation: for a grid
of gossip round (`cluster.gossip.intervalMs`) and suspicion window
(`cluster.gossip.suspicionTimeoutMs`) values, on 3 nodes (the real protocol
core, `gossip-sim`), the median and worst time until no survivor counts a
killed node (over `--trials` seeds), and, over `--steady-seconds` of uniform
loss on every link (1 % and 10 %), false "down" verdicts and bytes per node
per second. Prints a Markdown table. Everything is virtual time; a run of
the whole grid takes seconds.

usage: bench/detection-tradeoff.py [--trials 20] [--steady-seconds 30]
"""
import argparse, json, os, statistics, subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "gossip-sim")


def sim(interval, suspicion, loss, seed, steady):
    probe = min(40, int(interval * 0.4))
    out = subprocess.run([BIN, "--sizes", "3", "--loss", str(loss), "--seed", str(seed), "--steady-seconds", str(steady),
                          "--interval-ms", str(interval), "--probe-timeout-ms", str(probe), "--suspicion-ms", str(suspicion)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--steady-seconds", type=int, default=30)
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--locked", "-q", "-p", "arlen-bench", "--bin", "gossip-sim"], cwd=ROOT, check=True)
    print("| round | suspicion | detect median | detect worst | false downs, 1 % loss | false downs, 10 % loss | bytes/node/s (0 / 10 % loss) |")
    print("|---|---|---|---|---|---|---|")
    for interval in (50, 100, 200):
        for suspicion in (100, 150, 200, 400):
            detect = [sim(interval, suspicion, 0, seed, 1)["detect_s"] for seed in range(1, args.trials + 1)]
            detect = [d for d in detect if d is not None]
            lossy = {loss: sim(interval, suspicion, loss, 1, args.steady_seconds) for loss in (0, 0.01, 0.1)}
            print(f"| {interval} ms | {suspicion} ms | {statistics.median(detect) * 1000:.0f} ms | {max(detect) * 1000:.0f} ms "
                  f"| {lossy[0.01]['false_down_pairs']} | {lossy[0.1]['false_down_pairs']} "
                  f"| {lossy[0]['bytes_per_node_per_s']:.0f} / {lossy[0.1]['bytes_per_node_per_s']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
