#!/usr/bin/env python3
"""The gossip protocol at scale, by simulation: runs `gossip-sim` (the real
protocol core of every node, on a virtual clock, in one process) for each
cluster size, sealed and unsealed, with 0 %, 1 % and 10 % loss; prints a
table, writes the JSON lines and an SVG chart of how each figure grows with N.

usage: bench/gossip-sim.py [--sizes 100,250,500,1000,2000] [--steady-seconds 10]
                           [--jobs N] [--out bench/results/gossip-sim] [--quick]
                           [--configs sealed@0,sealed@0.01,sealed@0.1,unsealed@0]

Rows accumulate in the JSON lines file: a configuration measured again
replaces its row, rows of other sizes stay (rows of other protocol settings
are dropped). Each configuration is one `gossip-sim` process; `--jobs` of them run at once
(default: one per core). Figures are in virtual time, except CPU (wall time
of protocol work), which is an upper bound when jobs share the machine.
"""
import argparse, concurrent.futures, json, os, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "gossip-sim")


def run(nodes, loss, sealed, steady):
    args = [BIN, "--sizes", str(nodes), "--loss", str(loss), "--steady-seconds", str(steady)]
    if not sealed:
        args.append("--unsealed")
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def chart(rows, path):
    """One panel per figure, x = nodes (log scale), one line per configuration."""
    figures = [("converge_s", "converge (s)"), ("settle_s", "joins all sent (s after converge)"),
               ("detect_s", "crash seen by all (s)"), ("split_s", "partition seen (s)"),
               ("heal_s", "partition healed (s)"), ("bytes_per_node_per_s", "bytes/node/s, steady"),
               ("cpu_us_per_node_per_period", "CPU µs/node/period"), ("false_down_pairs", "false downs")]
    configs = sorted({(r["sealed"], r["loss"]) for r in rows})
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    w, h, pad = 300, 200, 40
    cols = 4
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{cols * w + 20}" height="{2 * h + 80}" font-family="sans-serif" font-size="11">']
    import math
    sizes = sorted({r["nodes"] for r in rows})
    lx = lambda n: (math.log(n) - math.log(sizes[0])) / max(1e-9, math.log(sizes[-1]) - math.log(sizes[0]))
    for k, (key, title) in enumerate(figures):
        ox, oy = 10 + (k % cols) * w, 10 + (k // cols) * h
        values = [r[key] for r in rows if r.get(key) is not None]
        top = max(values) if values else 1
        top = top if top > 0 else 1
        svg.append(f'<text x="{ox + pad}" y="{oy + 12}" font-weight="bold">{title}</text>')
        svg.append(f'<line x1="{ox + pad}" y1="{oy + h - pad}" x2="{ox + w - 10}" y2="{oy + h - pad}" stroke="#999"/>')
        svg.append(f'<line x1="{ox + pad}" y1="{oy + 20}" x2="{ox + pad}" y2="{oy + h - pad}" stroke="#999"/>')
        svg.append(f'<text x="{ox + 2}" y="{oy + 26}">{top:g}</text><text x="{ox + 2}" y="{oy + h - pad}">0</text>')
        for n in sizes:
            x = ox + pad + lx(n) * (w - pad - 20)
            svg.append(f'<text x="{x - 10:.0f}" y="{oy + h - pad + 14}">{n}</text>')
        for c, (sealed, loss) in enumerate(configs):
            pts = [(r["nodes"], r[key]) for r in rows if (r["sealed"], r["loss"]) == (sealed, loss) and r.get(key) is not None]
            pts.sort()
            coords = [(ox + pad + lx(n) * (w - pad - 20), oy + h - pad - (v / top) * (h - pad - 30)) for n, v in pts]
            if coords:
                d = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
                svg.append(f'<polyline fill="none" stroke="{colours[c % len(colours)]}" stroke-width="1.5" points="{d}"/>')
    for c, (sealed, loss) in enumerate(configs):
        y = 2 * h + 30 + (c // 3) * 16
        x = 20 + (c % 3) * 200
        svg.append(f'<rect x="{x}" y="{y - 9}" width="12" height="3" fill="{colours[c % len(colours)]}"/>')
        svg.append(f'<text x="{x + 16}" y="{y - 4}">{"sealed" if sealed else "unsealed"}, {loss * 100:g}% loss</text>')
    svg.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(svg) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,250,500,1000,2000")
    ap.add_argument("--steady-seconds", type=int, default=10)
    ap.add_argument("--out", default=None, help="default bench/results/gossip-sim (a temporary file with --quick)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--quick", action="store_true", help="sealed without loss only")
    ap.add_argument("--configs", default="sealed@0,sealed@0.01,sealed@0.1,unsealed@0",
                    help="which configurations, as sealed@LOSS or unsealed@LOSS")
    args = ap.parse_args()
    if args.out is None:
        import tempfile
        args.out = os.path.join(tempfile.mkdtemp(), "gossip-sim") if args.quick else os.path.join(ROOT, "bench", "results", "gossip-sim")
    subprocess.run(["cargo", "build", "--release", "--locked", "-q", "-p", "arlen-bench", "--bin", "gossip-sim"], cwd=ROOT, check=True)
    configs = [(True, 0.0)] if args.quick else [
        (kind == "sealed", float(loss)) for kind, loss in (c.split("@") for c in args.configs.split(","))]
    sizes = [int(n) for n in args.sizes.split(",")]
    # Largest first, so the longest runs do not start last.
    jobs = sorted(((n, loss, sealed) for n in sizes for sealed, loss in configs), key=lambda j: -j[0])
    rows = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(run, n, loss, sealed, args.steady_seconds) for n, loss, sealed in jobs]
        for future in concurrent.futures.as_completed(futures):
            for row in future.result():
                print(json.dumps(row), flush=True)
                rows.append(row)
    # Results accumulate: a configuration measured again replaces its row, the
    # others (say, 2,000 nodes, measured on their own) stay.
    key = lambda r: (r["nodes"], r["sealed"], r["loss"], r.get("interval_ms"), r.get("probe_timeout_ms"), r.get("suspicion_ms"))
    previous = []
    if os.path.exists(args.out + ".jsonl"):
        with open(args.out + ".jsonl") as f:
            previous = [json.loads(line) for line in f if line.strip()]
    fresh = {key(r) for r in rows}
    current = (rows[0]["interval_ms"], rows[0]["probe_timeout_ms"], rows[0]["suspicion_ms"]) if rows else None
    rows += [r for r in previous if key(r) not in fresh and key(r)[3:] == current]
    rows.sort(key=lambda r: (r["nodes"], not r["sealed"], r["loss"]))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    chart(rows, args.out + ".svg")
    print(f"\n{'nodes':>6} {'sealed':>6} {'loss':>5} {'converge':>9} {'settle':>7} {'detect':>7} {'split':>6} {'heal':>6} {'B/node/s':>9} {'cpu µs':>7} {'suspect':>8} {'false↓':>7}")
    for r in rows:
        f = lambda v: "-" if v is None else f"{v:g}"
        print(f"{r['nodes']:>6} {str(r['sealed']):>6} {r['loss']:>5} {f(r['converge_s']):>9} {f(r.get('settle_s')):>7} {f(r['detect_s']):>7} {f(r['split_s']):>6} {f(r['heal_s']):>6} {r['bytes_per_node_per_s']:>9g} {r['cpu_us_per_node_per_period']:>7g} {r['suspect_pair_samples']:>8} {r['false_down_pairs']:>7}")
    print(f"\nwrote {args.out}.jsonl and {args.out}.svg")


if __name__ == "__main__":
    main()
