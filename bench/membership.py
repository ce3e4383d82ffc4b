#!/usr/bin/env python3
"""Membership timing and cost of the gossip source, with real `arlen serve`
processes on loopback (release build). Prints figures; writes nothing.

  detect   kill -9 one node of N, time until every survivor's /readyz is 503
  leave    SIGTERM one node, time until every peer reports it gone
  rejoin   restart the killed node, time until every node is nominal
  idle     N nodes left alone for a while: quorum status transitions (want 0)
  busy     the same while every core runs a busy loop
  cost     per node: CPU %, RSS, gossip bytes/s sent and received, at idle
  etcd-outage  (etcd) stop etcd: time to partitioned; start it: time to nominal

usage: bench/membership.py [--trials 20] [--nodes 3] [--idle-seconds 600]
                           [--busy-seconds 120] [--only detect,leave,...]
                           [--source gossip|etcd]
Every loop is bounded in count and time; traffic stays on 127.0.0.1.
"""
import argparse, base64, json, os, signal, socket, statistics, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "arlen")


def free_ports(count):
    ports, socks = [], []
    while len(ports) < count:
        s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", p))
        except OSError:
            s.close(); continue
        socks += [s, u]; ports.append(p)
    for s in socks:
        s.close()
    return ports


def get(port, path, timeout=0.5):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return None, b""


class Etcd:
    """A single-member etcd on free loopback ports (Debian's etcd-server)."""

    def __init__(self, directory):
        self.client, self.peer = free_ports(2)
        self.url = f"http://127.0.0.1:{self.client}"
        self.dir = directory
        self.proc = None
        self.start()

    def start(self):
        peer = f"http://127.0.0.1:{self.peer}"
        log = open(os.path.join(self.dir, "etcd.log"), "ab")
        self.proc = subprocess.Popen(["etcd", "--name", "bench", "--data-dir", os.path.join(self.dir, "etcd.data"),
                                      "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                                      "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                                      "--initial-cluster", f"bench={peer}"], stdout=subprocess.DEVNULL, stderr=log)
        start = time.monotonic()
        while b'"health":"true"' not in get(self.client, "/health")[1]:
            if time.monotonic() - start > 30:
                raise SystemExit("etcd did not become healthy")
            time.sleep(0.05)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def cpu_ticks(pid):
    """utime + stime of a process, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024


class Cluster:
    """N `arlen serve` processes on free loopback ports, started at once.
    `seeds`: how many of the first nodes every node is seeded with (default all)."""

    def __init__(self, size, name, extra=None, source="gossip", seeds=None):
        self.ports = free_ports(size)
        self.name = name
        self.seed_count = seeds or size
        # Production nodes need gossip keys: sealed unless `extra` says otherwise.
        self.extra = dict(sealing_env("on"), **(extra or {}))
        self.procs = [None] * size
        self.logs = tempfile.mkdtemp(prefix="arlen-bench-")
        self.etcd = None
        if source == "etcd":
            self.etcd = Etcd(self.logs)
            self.extra.update(ARLEN_CLUSTER_MEMBERSHIP_SOURCE="etcd", ARLEN_CLUSTER_ETCD_ENDPOINTS=self.etcd.url)
        for i in range(size):
            self.start(i)

    def start(self, i):
        seeds = ",".join(f"127.0.0.1:{p}" for p in self.ports[:self.seed_count])
        env = dict(os.environ, ARLEN_ENV="production", ARLEN_LOG_LEVEL="warn", ARLEN_CLUSTER_ENABLED="1",
                   ARLEN_CLUSTER_NAME=self.name, ARLEN_CLUSTER_NODE_ID=f"node-{i + 1}",
                   ARLEN_CLUSTER_EXPECTED_NODES=str(len(self.ports)), ARLEN_CLUSTER_MEMBERSHIP_SOURCE="gossip",
                   ARLEN_CLUSTER_GOSSIP_SEEDS=seeds, ARLEN_READINESS_REQUIRES_CLUSTER_QUORUM="1",
                   ARLEN_SHUTDOWN_DRAIN_DELAY_SECONDS="0")
        env.update(self.extra)
        log = open(os.path.join(self.logs, f"node-{i + 1}.log"), "ab")
        self.procs[i] = subprocess.Popen([BIN, "serve", "--port", str(self.ports[i]), "--app-root", "/nonexistent"],
                                         env=env, stdout=subprocess.DEVNULL, stderr=log)

    def observed(self, i):
        status, body = get(self.ports[i], "/clusterz")
        if status != 200:
            return None
        return json.loads(body)["cluster"]["observed_nodes"]

    def status(self, i):
        status, body = get(self.ports[i], "/clusterz", timeout=2)
        return json.loads(body)["cluster"]["quorum"]["status"] if status == 200 else None

    def wait(self, what, predicate, limit=30.0, step=0.005):
        start = time.monotonic()
        while time.monotonic() - start < limit:
            if predicate():
                return time.monotonic() - start
            time.sleep(step)
        raise SystemExit(f"timed out after {limit}s waiting for {what}")

    def all_nominal(self, nodes=None):
        nodes = range(len(self.ports)) if nodes is None else nodes
        return all(self.observed(i) == len(self.ports) for i in nodes)

    def metric(self, i, series):
        status, body = get(self.ports[i], "/metrics")
        for line in body.decode().splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
        return None

    def idle_cost(self, window):
        """Per node over `window` seconds: (CPU %, RSS MB, gossip bytes/s sent, received).
        Rates divide by the time that really passed between the two readings
        of each figure (reading 100 nodes' metrics takes a while on a busy box)."""
        hz = os.sysconf("SC_CLK_TCK")
        nodes = range(len(self.procs))

        def ticks():
            return time.monotonic(), [cpu_ticks(p.pid) for p in self.procs]

        def metrics():
            return [(time.monotonic(), self.metric(i, "arlen_gossip_sent_bytes_total"),
                     self.metric(i, "arlen_gossip_received_bytes_total")) for i in nodes]

        (c0, t0), m0 = ticks(), metrics()
        time.sleep(window)  # the measurement window, not synchronisation
        (c1, t1), m1 = ticks(), metrics()
        rss = [rss_mb(p.pid) for p in self.procs]
        cpu = [100 * (b - a) / hz / (c1 - c0) for a, b in zip(t0, t1)]
        sent = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(m0, m1)]
        received = [(b[2] - a[2]) / (b[0] - a[0]) for a, b in zip(m0, m1)]
        return cpu, rss, sent, received

    def stop(self):
        for p in self.procs:
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            if p:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
        if self.etcd:
            self.etcd.stop()


def summary(name, values, target=None):
    values = sorted(values)
    line = (f"{name}: n={len(values)} median {statistics.median(values) * 1000:.0f} ms, "
            f"p90 {values[int(0.9 * (len(values) - 1))] * 1000:.0f} ms, worst {values[-1] * 1000:.0f} ms, "
            f"best {values[0] * 1000:.0f} ms")
    print(line + (f"   (target {target})" if target else ""), flush=True)


def sealing_env(mode):
    """Variables for gossip with keys (`on`) or explicitly unauthenticated (`off`)."""
    if mode == "on":
        return {"ARLEN_CLUSTER_GOSSIP_KEYS": base64.b64encode(os.urandom(32)).decode()}
    return {"ARLEN_CLUSTER_GOSSIP_KEYS": "", "ARLEN_CLUSTER_GOSSIP_ALLOW_UNAUTHENTICATED": "1"}


def detect_and_rejoin(args):
    c = Cluster(args.nodes, "bench-detect", source=args.source, extra=sealing_env(args.sealing))
    detect, rejoin = [], []
    try:
        c.wait("convergence", c.all_nominal)
        for trial in range(args.trials):
            victim = trial % args.nodes
            survivors = [i for i in range(args.nodes) if i != victim]
            c.procs[victim].send_signal(signal.SIGKILL)
            killed = time.monotonic()
            pending = set(survivors)
            while pending:
                pending = {i for i in pending if get(c.ports[i], "/readyz")[0] != 503}
                if time.monotonic() - killed > 30:
                    raise SystemExit("detection did not happen within 30 s")
                time.sleep(0.002)
            detect.append(time.monotonic() - killed)
            c.procs[victim].wait()
            c.start(victim)
            started = time.monotonic()
            c.wait("rejoin", c.all_nominal)
            rejoin.append(time.monotonic() - started)
            # Let the failure detector's window settle before the next trial.
            time.sleep(1.0)
    finally:
        c.stop()
    target = "median <= 1500 ms, worst <= 3000 ms" if args.source == "gossip" else "<= lease TTL (3 s) + 1 s"
    summary(f"[{args.source}, keys {args.sealing}] detection, kill -9 -> every survivor /readyz 503 ({args.nodes} nodes)", detect, target)
    summary(f"[{args.source}] rejoin, restart -> nominal everywhere (includes process start)", rejoin, "<= 1000 ms")


def leave(args):
    c = Cluster(args.nodes, "bench-leave", source=args.source)
    times = []
    try:
        c.wait("convergence", c.all_nominal)
        for trial in range(args.trials):
            victim = trial % args.nodes
            peers = [i for i in range(args.nodes) if i != victim]
            c.procs[victim].send_signal(signal.SIGTERM)
            sent = time.monotonic()
            c.wait("leave seen", lambda: all(c.observed(i) == args.nodes - 1 for i in peers), limit=10)
            times.append(time.monotonic() - sent)
            c.procs[victim].wait(timeout=15)
            c.start(victim)
            c.wait("rejoin", c.all_nominal)
            time.sleep(0.5)
    finally:
        c.stop()
    summary(f"[{args.source}] graceful leave, SIGTERM -> every peer counts it out", times, "<= 500 ms")


def etcd_outage(args):
    c = Cluster(args.nodes, "bench-outage", source="etcd")
    lost, healed = [], []
    try:
        c.wait("convergence", c.all_nominal)
        for _ in range(min(args.trials, 10)):
            c.etcd.stop()
            stopped = time.monotonic()
            c.wait("partitioned everywhere", lambda: all(c.observed(i) == 0 for i in range(args.nodes)), limit=30)
            lost.append(time.monotonic() - stopped)
            c.etcd.start()
            started = time.monotonic()
            c.wait("nominal again", c.all_nominal, limit=60)
            healed.append(time.monotonic() - started)
            time.sleep(1)
    finally:
        c.stop()
    summary("[etcd] etcd stopped -> every node partitioned", lost, "<= lease TTL (3 s) + 1 s")
    summary("[etcd] etcd healthy again -> every node nominal, no restart", healed, None)


def quiet(args, seconds, busy):
    nodes = max(args.nodes, 5)
    c = Cluster(nodes, "bench-busy" if busy else "bench-idle")
    burners = []
    try:
        c.wait("convergence", c.all_nominal)
        time.sleep(2)
        before = [c.metric(i, "arlen_cluster_status_transitions_total") for i in range(nodes)]
        if busy:
            burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
        end = time.monotonic() + seconds
        lowest = nodes
        while time.monotonic() < end:
            for i in range(nodes):
                o = c.observed(i)
                if o is not None:
                    lowest = min(lowest, o)
            time.sleep(0.25)
        for b in burners:
            b.kill()
        after = [c.metric(i, "arlen_cluster_status_transitions_total") for i in range(nodes)]
        transitions = sum(a - b for a, b in zip(after, before))
        kind = f"busy ({len(burners)} busy loops)" if busy else "idle"
        print(f"no false alarms, {nodes} nodes {kind} for {seconds} s: {transitions:.0f} status transitions, "
              f"lowest observed count seen {lowest}/{nodes}   (target 0 transitions)", flush=True)
    finally:
        for b in burners:
            b.kill()
        c.stop()


def cost(args):
    nodes = max(args.nodes, 3)
    c = Cluster(nodes, "bench-cost", extra=sealing_env(args.sealing))
    try:
        c.wait("convergence", c.all_nominal)
        time.sleep(3)
        window = 30
        cpu, rss, sent, recv = c.idle_cost(window)
        print(f"[keys {args.sealing}] idle cost per node ({nodes} nodes, {window} s): CPU {statistics.median(cpu):.2f}% (max {max(cpu):.2f}%), "
              f"RSS {statistics.median(rss):.1f} MB (max {max(rss):.1f} MB), gossip sent {statistics.median(sent):.0f} B/s, "
              f"received {statistics.median(recv):.0f} B/s   (targets: CPU < 1%, RSS < 20 MB)", flush=True)
    finally:
        c.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--idle-seconds", type=int, default=600)
    parser.add_argument("--busy-seconds", type=int, default=120)
    parser.add_argument("--only", default="detect,leave,cost,idle,busy")
    parser.add_argument("--source", choices=["gossip", "etcd"], default="gossip")
    parser.add_argument("--sealing", choices=["on", "off", "both"], default="both",
                        help="gossip keys on, off (allowUnauthenticated), or both in one run (detect and cost)")
    args = parser.parse_args()
    if not os.path.exists(BIN):
        subprocess.run(["cargo", "build", "--release", "--locked", "-q", "-p", "arlen"], cwd=ROOT, check=True)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {os.cpu_count()} cores, binary {BIN}", flush=True)
    only = args.only.split(",")
    modes = ["on", "off"] if args.sealing == "both" else [args.sealing]
    sealing = args.sealing
    if "detect" in only:
        for args.sealing in modes:
            detect_and_rejoin(args)
    if "cost" in only:
        for args.sealing in modes:
            cost(args)
    args.sealing = modes[0]
    if "leave" in only:
        leave(args)
    if "idle" in only:
        quiet(args, args.idle_seconds, busy=False)
    if "busy" in only:
        quiet(args, args.busy_seconds, busy=True)
    if "etcd-outage" in only:
        etcd_outage(args)


if __name__ == "__main__":
    main()
