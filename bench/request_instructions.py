#!/usr/bin/env python3
"""Instructions per `GET /` under callgrind (repeatable whatever the machine
is doing) for the plain-axum baseline and `arlen serve` with cluster headers
off and on, and where arlen's extra instructions go (per function, self cost).

Each server runs twice, with N1 and N2 keep-alive requests; (Ir(N2) - Ir(N1)) /
(N2 - N1) is the per-request cost with start-up and shutdown cancelled out.
Servers run one tokio worker (TOKIO_WORKER_THREADS=1) so counts repeat.

usage: bench/request_instructions.py [--n1 500] [--n2 2500] [--top 12]
"""
import argparse, http.client, os, re, signal, socket, subprocess, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARLEN = os.path.join(ROOT, "target", "release", "arlen")
BASELINE = os.path.join(ROOT, "target", "release", "arlen-baseline")
BODY = "arlen node node-a (cluster bench)\n"


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close(); return port


def run(kind, count, out):
    port = free_port()
    # One tokio worker: with two, an idle worker's spinning depends on timing
    # and moves the count by up to ±1 000 instructions per request.
    env = dict(os.environ, TOKIO_WORKER_THREADS="1", ARLEN_ENV="production", ARLEN_LOG_LEVEL="warn", ARLEN_CLUSTER_ENABLED="1",
               ARLEN_CLUSTER_NAME="bench", ARLEN_CLUSTER_NODE_ID="node-a", ARLEN_CLUSTER_EXPECTED_NODES="3",
               # The drain is not what is counted, and under valgrind a long one
               # can outlast the wait below (a killed callgrind writes no totals).
               ARLEN_SHUTDOWN_DRAIN_DELAY_SECONDS="0")
    if kind == "baseline":
        command = [BASELINE, str(port), BODY]
    else:
        env["ARLEN_CLUSTER_EMIT_HEADERS"] = "1" if kind == "headers-on" else "0"
        command = [ARLEN, "serve", "--port", str(port), "--app-root", "/nonexistent"]
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "-q"] + command,
                            env=env, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/"); conn.getresponse().read(); break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)
    for _ in range(count):
        conn.request("GET", "/"); conn.getresponse().read()
    proc.send_signal(signal.SIGTERM if kind != "baseline" else signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill(); proc.wait()
        raise SystemExit(f"{kind}: the server under callgrind did not stop within 60 s of the signal; killed, so no totals")
    with open(out) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise SystemExit(f"no totals in {out}")


def self_costs(path):
    text = subprocess.run(["callgrind_annotate", "--auto=no", path], capture_output=True, text=True).stdout
    costs = {}
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+) \([\s\d.]+%\)\s+(.*)", line)
        if m and "PROGRAM TOTALS" not in line and "=>" not in line:
            name = re.sub(r"/root/.cargo/registry/src/[^/]+/", "", m.group(2))
            name = re.sub(r"\[.*\]$", "", name).strip()
            costs[name] = costs.get(name, 0) + int(m.group(1).replace(",", ""))
    return costs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n1", type=int, default=500)
    parser.add_argument("--n2", type=int, default=2500)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    per_request, files = {}, {}
    for kind in ["baseline", "headers-off", "headers-on"]:
        a = run(kind, args.n1, os.path.join(tmp, f"{kind}.1"))
        files[kind] = os.path.join(tmp, f"{kind}.2")
        b = run(kind, args.n2, files[kind])
        per_request[kind] = (b - a) / (args.n2 - args.n1)
    base = per_request["baseline"]
    print("user-space instructions per GET / (callgrind):")
    for kind, value in per_request.items():
        print(f"  {kind:<12} {value:>8.0f}   {value / base:.2f}x baseline")
    on, baseline_costs = self_costs(files["headers-on"]), self_costs(files["baseline"])
    diffs = sorted(((on.get(k, 0) - baseline_costs.get(k, 0)) / args.n2, k) for k in set(on) | set(baseline_costs))
    print(f"largest extra self costs of arlen (headers on) over the baseline, per request (top {args.top}):")
    for extra, name in reversed(diffs[-args.top:]):
        print(f"  {extra:>7.0f}  {name[:150]}")


if __name__ == "__main__":
    main()
