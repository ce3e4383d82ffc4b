#!/usr/bin/env python3
"""Runs every drill scenario several times (release build) and prints, per
figure, the median and the worst over the runs next to the budget.

usage: bench/drills.py [--runs 5] [--hold-ms 2000] [--scenarios crash,partition,...]
"""
import argparse, json, os, statistics, subprocess, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "arlen")
ALL = [("crash", "gossip"), ("churn", "gossip"), ("partition", "gossip"), ("split", "gossip"), ("one-way", "gossip"),
       ("flaky-link", "gossip"), ("crash", "etcd"), ("churn", "etcd"), ("etcd-outage", "etcd")]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--hold-ms", type=int, default=2000)
    parser.add_argument("--scenarios", default=",".join(f"{s}@{src}" for s, src in ALL))
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "--locked", "-q", "-p", "arlen"], cwd=ROOT, check=True)
    for item in args.scenarios.split(","):
        scenario, _, source = item.partition("@")
        source = source or "gossip"
        figures, budgets, failures = {}, {}, 0
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as directory:
                result = subprocess.run([BIN, "drill", "run", scenario, "--source", source, "--hold-ms", str(args.hold_ms),
                                         "--report", directory], capture_output=True, text=True)
                if result.returncode != 0:
                    failures += 1
                with open(os.path.join(directory, "report.json")) as f:
                    report = json.load(f)
            for fig in report["figures"]:
                value = fig["value"] if fig["value"] is not None else float("inf")
                figures.setdefault(fig["name"], []).append(value)
                budgets[fig["name"]] = fig["budget"]
        print(f"{scenario} ({source}), {args.runs} runs, {failures} over budget:", flush=True)
        for name, values in figures.items():
            budget = budgets[name]
            print(f"  {name:<28} median {statistics.median(values):>7.0f}  worst {max(values):>7.0f}"
                  f"  budget {'-' if budget is None else format(budget, '.0f')}", flush=True)


if __name__ == "__main__":
    main()
