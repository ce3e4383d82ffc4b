#!/usr/bin/env python3
"""A CPU-throttled container, with real `arlen serve` processes on loopback
(release build, sealed gossip, production mode): N nodes; every 2 s one node
(seeded choice) is SIGSTOPped for a random 50-250 ms and resumed. Prints:

  - status transitions on the nodes that were not paused at the time
    (arlen_cluster_status_transitions_total of every node, read before and
    after; a pause of node X counts against the others only) — want 0;
  - members the paused nodes declared down (arlen_gossip_downs_total) and
    suspicions raised / refuted by everyone;
  - then a 5 s stop of one node: time until every other node stops counting
    it (the crash bound still holds).

usage: bench/pauses.py [--nodes 5] [--minutes 10] [--seed 1] [--binary PATH]
Every loop is bounded in count and time; traffic stays on 127.0.0.1.
"""
import argparse, os, random, signal, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import membership  # noqa: E402  (the bench's own helpers: a cluster of real processes)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--binary", default=membership.BIN)
    args = parser.parse_args()
    membership.BIN = args.binary
    rng = random.Random(args.seed)
    cluster = membership.Cluster(args.nodes, "pauses")
    try:
        cluster.wait("convergence", cluster.all_nominal, limit=60)

        def counters(series):
            # 0 where the binary has no such counter (an older build): printed as such.
            return [cluster.metric(i, series) or 0.0 for i in range(args.nodes)]

        transitions0 = counters("arlen_cluster_status_transitions_total")
        downs0 = counters("arlen_gossip_downs_total")
        suspicions0 = counters("arlen_gossip_suspicions_total")
        refutations0 = counters("arlen_gossip_refutations_total")
        paused_count = [0] * args.nodes
        deadline = time.monotonic() + args.minutes * 60
        rounds = 0
        extra_transitions = [0.0] * args.nodes
        while time.monotonic() < deadline and rounds < 100_000:
            rounds += 1
            victim = rng.randrange(args.nodes)
            pause = rng.uniform(0.05, 0.25)
            before = counters("arlen_cluster_status_transitions_total")
            proc = cluster.procs[victim]
            proc.send_signal(signal.SIGSTOP)
            time.sleep(pause)  # the fault's duration, not synchronisation
            proc.send_signal(signal.SIGCONT)
            paused_count[victim] += 1
            time.sleep(2.0 - pause)  # the schedule's period
            after = counters("arlen_cluster_status_transitions_total")
            # The paused node's own transitions are its business (it may leave
            # rotation while it cannot vouch); the others' are false alarms.
            extra_transitions[victim] += after[victim] - before[victim]
        transitions = [a - b for a, b in zip(counters("arlen_cluster_status_transitions_total"), transitions0)]
        others = [t - e for t, e in zip(transitions, extra_transitions)]
        downs = [a - b for a, b in zip(counters("arlen_gossip_downs_total"), downs0)]
        suspicions = sum(counters("arlen_gossip_suspicions_total")) - sum(suspicions0)
        refutations = sum(counters("arlen_gossip_refutations_total")) - sum(refutations0)
        print(f"pauses: {rounds} pauses of 50-250 ms over {args.minutes} min on {args.nodes} nodes (seed {args.seed})")
        print(f"  status transitions on nodes not paused at the time: {int(sum(others))} (per node {[int(x) for x in others]})")
        print(f"  status transitions of the paused nodes themselves: {int(sum(extra_transitions))}")
        print(f"  members declared down, by each node: {[int(d) for d in downs]}")
        print(f"  suspicions raised {int(suspicions)}, refuted in time {int(refutations)}")

        # A 5 s stop is still a failure, detected within the crash bound.
        victim = rng.randrange(args.nodes)
        proc = cluster.procs[victim]
        start = time.monotonic()
        proc.send_signal(signal.SIGSTOP)
        others_ids = [i for i in range(args.nodes) if i != victim]
        took = cluster.wait("the stopped node counted out",
                            lambda: all(cluster.observed(i) == args.nodes - 1 for i in others_ids), limit=5.0)
        time.sleep(max(0.0, 5.0 - (time.monotonic() - start)))  # the stop lasts 5 s
        proc.send_signal(signal.SIGCONT)
        print(f"  a 5 s stop of node-{victim + 1}: counted out by every other node after {took * 1000:.0f} ms")
        cluster.wait("back after the stop", cluster.all_nominal, limit=30)
        print(f"  back to nominal {(time.monotonic() - start) * 1000:.0f} ms after the stop began (5 s stop)")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
