#!/usr/bin/env python3
"""Performance benchmarks of the request path and of cluster signals, with
real processes on loopback (release builds). Every compared figure is measured
in the same run as its baseline, alternating A/B/B/A, and reported as the
median of per-round ratios with min-max. Every load is bounded in time.

  request-path  arlen serve vs the plain-axum baseline (arlen-baseline), wrk:
                GET / (headers on), /readyz text and JSON, /clusterz, /metrics
                (JSON endpoints against a static body of the same size)
  scale         gossip clusters of N = 3 to 200 nodes: convergence,
                kill -9 detection, per-node CPU (and all nodes' share of
                the machine: where it nears 100 %, the box distorts the
                figures), RSS, gossip bytes/s
  under-load    detection of a crash as seen by a node whose two cores are
                saturated by wrk, against the idle figure in the same run

usage: bench/perf.py [request-path|scale|under-load ...] [--rounds 5] [--seconds 3]
                     [--sizes 3,10,25,50,100,150,200] [--trials 5]
"""
import argparse, os, re, signal, socket, statistics, subprocess, sys, tempfile, time, urllib.request

from membership import Cluster

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARLEN = os.path.join(ROOT, "target", "release", "arlen")
BASELINE = os.path.join(ROOT, "target", "release", "arlen-baseline")


def free_port():
    while True:
        s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port)); u.close(); return port
        except OSError:
            u.close()


def get(port, path, timeout=1.0, headers=None):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return None, b""


def wait_port(port, limit=20):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if get(port, "/")[0] is not None:
            return
        time.sleep(0.02)
    raise SystemExit(f"nothing answers on {port}")


def wrk(port, path, seconds, cores="1", headers=()):
    args = ["taskset", "-c", cores, "wrk", "-t1", "-c32", f"-d{seconds}s", "--latency"]
    for h in headers:
        args += ["-H", h]
    out = subprocess.run(args + [f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return rps, float(p99.group(1)) * scale


def spread(values):
    return f"{statistics.median(values):.3f} ({min(values):.3f}–{max(values):.3f})"


def request_path(args):
    env = dict(os.environ, ARLEN_ENV="production", ARLEN_LOG_LEVEL="warn", ARLEN_CLUSTER_ENABLED="1",
               ARLEN_CLUSTER_NAME="bench", ARLEN_CLUSTER_NODE_ID="node-a", ARLEN_CLUSTER_EXPECTED_NODES="3")
    arlen_port, base_port = free_port(), free_port()
    arlen = subprocess.Popen(["taskset", "-c", "0", ARLEN, "serve", "--port", str(arlen_port), "--app-root", "/nonexistent"],
                             env=env, stderr=subprocess.DEVNULL)
    wait_port(arlen_port)
    body = get(arlen_port, "/")[1].decode()
    endpoints = [("/readyz", {}), ("/readyz?format=json", {}), ("/clusterz", {}), ("/metrics", {})]
    files, tmp = [], tempfile.mkdtemp()
    for i, (path, _) in enumerate(endpoints):
        content = get(arlen_port, path)[1]
        name = os.path.join(tmp, f"body{i}")
        with open(name, "wb") as f:
            f.write(content)
        files.append(name)
    baseline = subprocess.Popen(["taskset", "-c", "0", BASELINE, str(base_port), body] + files, stderr=subprocess.DEVNULL)
    wait_port(base_port)
    pairs = [("GET / (cluster headers on)", "/", "/", 0.97, 1.1)]
    for i, (path, _) in enumerate(endpoints):
        pairs.append((f"GET {path}", path, f"/static/{i}", 0.9, None))
    print(f"request path: arlen serve vs plain axum, both on core 0, wrk -t1 -c32 on core 1, "
          f"{args.rounds} rounds x {args.seconds} s alternating", flush=True)
    print("| request | arlen req/s | baseline req/s | throughput ratio, median (min–max) | target | p99 arlen | p99 baseline | p99 ratio |")
    print("|---|---|---|---|---|---|---|---|")
    try:
        for label, a_path, b_path, target, p99_target in pairs:
            wrk(arlen_port, a_path, 1); wrk(base_port, b_path, 1)
            ratios, p99_ratios, a_rps, b_rps, a_p99, b_p99 = [], [], [], [], [], []
            for r in range(args.rounds):
                if r % 2 == 0:
                    a = wrk(arlen_port, a_path, args.seconds); b = wrk(base_port, b_path, args.seconds)
                else:
                    b = wrk(base_port, b_path, args.seconds); a = wrk(arlen_port, a_path, args.seconds)
                a_rps.append(a[0]); b_rps.append(b[0]); a_p99.append(a[1]); b_p99.append(b[1])
                ratios.append(a[0] / b[0]); p99_ratios.append(a[1] / b[1])
            target_text = f"≥ {target}" + (f", p99 ≤ {p99_target}×" if p99_target else "")
            print(f"| {label} | {statistics.median(a_rps):.0f} | {statistics.median(b_rps):.0f} | {spread(ratios)} | {target_text} | "
                  f"{statistics.median(a_p99):.2f} ms | {statistics.median(b_p99):.2f} ms | {spread(p99_ratios)} |", flush=True)
    finally:
        arlen.terminate(); baseline.terminate(); arlen.wait(); baseline.wait()


def all_true(cluster, nodes, check):
    return all(check(i) for i in nodes)


class Events:
    """Every node's `GET /clusterz/events` stream, read by one thread per node
    (reconnecting while the node is down): when each node itself says its
    quorum status changed, to the millisecond (`at_utc`), however many nodes
    there are to watch."""

    def __init__(self, cluster):
        import threading
        self.cluster, self.lock, self.stop = cluster, threading.Lock(), False
        self.seen = [[] for _ in cluster.ports]  # (at, status) per node, in order
        for i in range(len(cluster.ports)):
            threading.Thread(target=self.follow, args=(i,), daemon=True).start()

    def follow(self, i):
        import calendar, http.client, json
        while not self.stop:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.cluster.ports[i], timeout=30)
                conn.request("GET", "/clusterz/events")
                response = conn.getresponse()
                if response.status != 200:
                    raise OSError(response.status)
                for line in response:
                    if self.stop:
                        return
                    if line.startswith(b"data: "):
                        event = json.loads(line[6:])
                        at = calendar.timegm(time.strptime(event["at_utc"][:19], "%Y-%m-%dT%H:%M:%S")) \
                            + int(event["at_utc"][20:23]) / 1000
                        with self.lock:
                            self.seen[i].append((at, event["status"]))
            except (OSError, http.client.HTTPException, ValueError):
                time.sleep(0.05)

    def first(self, i, status, after):
        """When node `i` first reported `status` at or after wall time `after`."""
        with self.lock:
            return next((at for at, s in self.seen[i] if at >= after and s == status), None)


def scale(args):
    print("cluster scale, gossip on loopback (seeds: the first 3 nodes), release build; detection as each "
          "survivor's own /clusterz/events reports it", flush=True)
    print("| nodes | convergence (last start → all nominal) | kill -9 detection, median (worst) over trials | CPU per node, idle | all nodes, share of the machine | RSS per node | gossip sent B/s per node | received B/s |")
    print("|---|---|---|---|---|---|---|---|")
    for size in [int(x) for x in args.sizes.split(",")]:
        c = Cluster(size, f"scale{size}", extra={"ARLEN_SHUTDOWN_DRAIN_DELAY_SECONDS": "0"}, seeds=3)
        events = None
        try:
            last_started = time.monotonic()
            try:
                c.wait("convergence", lambda: all_true(c, range(size), lambda i: c.observed(i) == size), limit=120)
            except SystemExit:
                # Where the box stops: say so, with what the nodes said, and go on.
                cpu, _, _, _ = c.idle_cost(5)
                rejoins = sum(open(os.path.join(c.logs, name), errors="replace").read().count("rejoined as a renewed identity")
                              for name in os.listdir(c.logs))
                seen = [c.observed(i) for i in range(size)]
                counted = sorted(n for n in seen if n is not None)
                print(f"| {size} | not converged in 120 s (nodes count {counted[0] if counted else '-'}–{counted[-1] if counted else '-'} of {size}; "
                      f"{rejoins} false-down rejoins) | — | {statistics.median(cpu):.2f}% | {sum(cpu) / (os.cpu_count() or 1):.0f}% of {os.cpu_count()} cores | — | — | — |", flush=True)
                continue
            convergence = time.monotonic() - last_started
            events = Events(c)
            time.sleep(2)
            cpu, rss, sent, received = c.idle_cost(10)
            detections = []
            for trial in range(args.trials):
                victim = size - 1 - (trial % max(1, size - 3))
                survivors = [i for i in range(size) if i != victim]
                killed = time.time()
                c.procs[victim].send_signal(signal.SIGKILL); c.procs[victim].wait()
                deadline = time.monotonic() + 60
                while True:
                    seen = [events.first(i, "degraded", killed) for i in survivors]
                    if all(at is not None for at in seen):
                        break
                    if time.monotonic() > deadline:
                        raise SystemExit(f"{seen.count(None)} of {len(survivors)} survivors did not report the crash within 60 s")
                    time.sleep(0.05)
                detections.append(max(seen) - killed)
                c.start(victim)
                c.wait("rejoin", lambda: all_true(c, range(size), lambda i: c.observed(i) == size), limit=120)
                time.sleep(1)
            print(f"| {size} | {convergence:.2f} s | {statistics.median(detections):.2f} s ({max(detections):.2f} s) | "
                  f"{statistics.median(cpu):.2f}% (max {max(cpu):.2f}%) | {sum(cpu) / (os.cpu_count() or 1):.0f}% of {os.cpu_count()} cores | "
                  f"{statistics.median(rss):.1f} MB (max {max(rss):.1f}) | "
                  f"{statistics.median(sent):.0f} | {statistics.median(received):.0f} |", flush=True)
        finally:
            if events:
                events.stop = True
            c.stop()


def under_load(args):
    c = Cluster(3, "loaded")
    idle, loaded = [], []
    try:
        c.wait("convergence", lambda: all_true(c, range(3), lambda i: c.observed(i) == 3))
        for trial in range(args.trials * 2):
            with_load = trial % 2 == 1
            load = None
            if with_load:
                load = subprocess.Popen(["wrk", "-t2", "-c64", "-d30s", f"http://127.0.0.1:{c.ports[0]}/"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1)
            c.procs[2].send_signal(signal.SIGKILL); c.procs[2].wait()
            killed = time.monotonic()
            while c.status(0) != "degraded":
                if time.monotonic() - killed > 30:
                    raise SystemExit("no detection within 30 s")
                time.sleep(0.01)
            took = time.monotonic() - killed
            (loaded if with_load else idle).append(took)
            if load:
                load.terminate(); load.wait()
            c.start(2)
            c.wait("rejoin", lambda: all_true(c, range(3), lambda i: c.observed(i) == 3))
            time.sleep(1)
    finally:
        c.stop()
    ratio = statistics.median(loaded) / statistics.median(idle)
    print(f"signals under load: kill -9 of node-3 seen by node-1, {args.trials} trials each, alternating idle/loaded "
          f"(wrk -t2 -c64 on node-1: both cores saturated)", flush=True)
    print(f"| | median | worst |\n|---|---|---|\n| idle | {statistics.median(idle) * 1000:.0f} ms | {max(idle) * 1000:.0f} ms |\n"
          f"| node-1 saturated | {statistics.median(loaded) * 1000:.0f} ms | {max(loaded) * 1000:.0f} ms |\n"
          f"\nloaded / idle = {ratio:.2f} (target ≤ 2)", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="*", default=["request-path", "scale", "under-load"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--sizes", default="3,10,25,50,100,150,200")
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    for what in args.what:
        {"request-path": request_path, "scale": scale, "under-load": under_load}[what](args)
        print(flush=True)


if __name__ == "__main__":
    main()
