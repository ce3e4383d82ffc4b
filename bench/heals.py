#!/usr/bin/env python3
"""What a heal costs, and how fast a mute node is counted out, with real
`arlen serve` processes on loopback (release build, sealed gossip), cutting
through each node's fault endpoint (`cluster.faultInjection.enabled`):

  heal  isolate one node (its gossip cut both ways) until every other node
        has counted it out, heal it, wait until every node is nominal; count
        the rejoins under renewed identities of the isolated node and of the
        healthy nodes (arlen_gossip_rejoins_total when the binary has it,
        otherwise the 'rejoined as a renewed identity' log lines, one per
        rejoin in older builds)
  mute  drop one node's outbound gossip only (it hears, it cannot speak):
        time until every other node has counted it out; and a clean cut
        (both ways) for comparison

usage: bench/heals.py [--nodes 5] [--trials 20] [--binary PATH]
Every loop is bounded in count and time; traffic stays on 127.0.0.1.
"""
import argparse, json, os, statistics, sys, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import membership  # noqa: E402

TOKEN = "b" * 40


def faults(port, rules):
    method, body = ("DELETE", None) if rules is None else ("PUT", json.dumps({"rules": rules}).encode())
    request = urllib.request.Request(f"http://127.0.0.1:{port}/_arlen/faults", data=body, method=method,
                                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=2) as response:
        assert response.status < 300, response.status


def rejoins(cluster, i):
    value = cluster.metric(i, "arlen_gossip_rejoins_total")
    if value is not None:
        return value
    with open(os.path.join(cluster.logs, f"node-{i + 1}.log"), "rb") as log:
        return float(log.read().count(b"rejoined as a renewed identity"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--binary", default=membership.BIN)
    args = parser.parse_args()
    membership.BIN = args.binary
    extra = {"ARLEN_CLUSTER_FAULT_INJECTION_ENABLED": "1", "ARLEN_OPS_TOKEN": TOKEN,
             "ARLEN_LOG_LEVEL": "warn"}
    cluster = membership.Cluster(args.nodes, "heals", extra=extra)
    n = args.nodes
    try:
        cluster.wait("convergence", cluster.all_nominal, limit=60)
        victim_rejoins, healthy_rejoins, heal_times = [], [], []
        for trial in range(args.trials):
            victim = trial % n
            others = [i for i in range(n) if i != victim]
            before = [rejoins(cluster, i) for i in range(n)]
            faults(cluster.ports[victim], [{"direction": "both"}])
            cluster.wait("isolated node counted out", lambda: all(cluster.observed(i) == n - 1 for i in others), 10)
            faults(cluster.ports[victim], None)
            heal_times.append(cluster.wait("healed", cluster.all_nominal, 20))
            time.sleep(1.0)  # let late rejoins happen before counting them: a measurement window
            after = [rejoins(cluster, i) for i in range(n)]
            victim_rejoins.append(after[victim] - before[victim])
            healthy_rejoins.append(sum(after[i] - before[i] for i in others))
        print(f"heal: {args.trials} single-node isolations on {n} nodes ({args.binary})")
        print(f"  rejoins of the isolated node per heal: mean {statistics.mean(victim_rejoins):.2f}, max {max(victim_rejoins):.0f}")
        print(f"  rejoins of healthy nodes per heal: mean {statistics.mean(healthy_rejoins):.2f}, max {max(healthy_rejoins):.0f}, "
              f"heals with any: {sum(1 for r in healthy_rejoins if r > 0)} of {len(healthy_rejoins)}")
        membership.summary("  heal to nominal", heal_times)

        for kind, rules in (("mute (outbound dropped)", [{"direction": "outbound"}]),
                            ("cut (both ways)", [{"direction": "both"}])):
            times = []
            for trial in range(args.trials):
                victim = (trial * 2 + 1) % n
                others = [i for i in range(n) if i != victim]

                faults(cluster.ports[victim], rules)
                times.append(cluster.wait(kind, lambda: all(cluster.observed(i) == n - 1 for i in others), 10))
                faults(cluster.ports[victim], None)
                cluster.wait("healed", cluster.all_nominal, 20)
            membership.summary(f"  {kind}: counted out by every other node", times)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
