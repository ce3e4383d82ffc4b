#!/usr/bin/env python3
"""Probes under abuse, at default limits, on a real `arlen serve` (release
build, loopback): the scenario of the hardening issue.

  500 `/clusterz?wait_for_nodes=>=99&timeout=60s` long-polls, plus 300
  connections that send half a request head and stop, plus 3,000 idle
  sockets; meanwhile 10 rounds of `/livez` and `/readyz` on the service port
  (and on the admin listener). Prints status counts, probe latency, how the
  abusers were answered, how many of their sockets are still open after the
  head timeout, and the node's RSS. Every loop is bounded in count and time.

usage: bench/abuse.py [--polls 500] [--slow 300] [--idle 3000]
"""
import argparse, os, resource, socket, statistics, subprocess, sys, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "arlen")


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    return port


def get(port, path, timeout=2.0):
    started = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            r.read(); return r.status, time.monotonic() - started
    except urllib.error.HTTPError as e:
        return e.code, time.monotonic() - started
    except OSError:
        return None, time.monotonic() - started


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_sockets(port, count, payload):
    out = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
        if payload:
            s.sendall(payload)
        s.setblocking(False)
        out.append(s)
    return out


def still_open(socks):
    n = 0
    for s in socks:
        try:
            data = s.recv(4096)
            if data:
                n += 1  # answered but not closed yet
        except BlockingIOError:
            n += 1
        except OSError:
            pass
    return n


def answered(socks):
    counts = {}
    for s in socks:
        try:
            data = s.recv(64)
            key = data[:12].decode(errors="replace") if data else "closed"
        except BlockingIOError:
            key = "waiting"
        except OSError:
            key = "reset"
        counts[key] = counts.get(key, 0) + 1
    return counts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--polls", type=int, default=500)
    ap.add_argument("--slow", type=int, default=300)
    ap.add_argument("--idle", type=int, default=3000)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    port, admin = free_port(), free_port()
    env = dict(os.environ, ARLEN_PORT=str(port), ARLEN_ADMIN_LISTEN=f"127.0.0.1:{admin}", ARLEN_LOG_LEVEL="warn")
    node = subprocess.Popen([BIN, "serve", "--app-root", "/nonexistent"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while get(port, "/livez")[0] != 200:
            if time.monotonic() > deadline:
                sys.exit("node did not start")
            time.sleep(0.05)
        rss_before = rss_kb(node.pid)
        started = time.monotonic()
        polls = open_sockets(port, args.polls, b"GET /clusterz?wait_for_nodes=%3E%3D99&timeout=60s HTTP/1.1\r\nHost: x\r\n\r\n")
        slow = open_sockets(port, args.slow, b"GET / HTTP/1.1\r\nHost: x\r\n")
        idle = open_sockets(port, args.idle, b"")
        opened = time.monotonic() - started
        results = {"service": [], "admin": []}
        for _ in range(10):
            for path in ("/livez", "/readyz"):
                results["service"].append((path,) + get(port, path))
                results["admin"].append((path,) + get(admin, path))
        rss_during = rss_kb(node.pid)
        print(f"abusers: {args.polls} long-polls, {args.slow} slow heads, {args.idle} idle sockets, opened in {opened:.2f} s")
        for where, rows in results.items():
            statuses = {}
            for path, status, _ in rows:
                statuses[f"{path} {status}"] = statuses.get(f"{path} {status}", 0) + 1
            lat = sorted(t for _, _, t in rows)
            print(f"  probes on the {where} port: {dict(sorted(statuses.items()))}; latency median {statistics.median(lat)*1000:.1f} ms, max {lat[-1]*1000:.1f} ms")
        print(f"  long-polls answered at once: {answered(polls)}")
        time.sleep(6)  # the head timeout (5 s) and the over-limit deadline (2 s) are what is measured here
        print(f"  after 6 s: slow heads still open {still_open(slow)} of {args.slow}; idle sockets still open {still_open(idle)} of {args.idle}")
        print(f"  node RSS: {rss_before/1024:.1f} MB before, {rss_during/1024:.1f} MB during, {rss_kb(node.pid)/1024:.1f} MB after")
        for s in polls + slow + idle:
            s.close()
    finally:
        node.terminate()
        node.wait(timeout=20)


if __name__ == "__main__":
    main()
