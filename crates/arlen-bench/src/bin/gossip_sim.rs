//! `gossip-sim`: the gossip protocol core of N nodes in one process, on a
//! virtual clock (`arlen_membership::simulation`). For each size, sealing
//! and loss rate it measures, and prints one JSON line:
//!
//! - `converge_s`: cold start (every node starts within one period and
//!   announces to three seeds) until every node counts every other;
//! - `settle_s`: from convergence until no node has membership updates left
//!   to gossip (the cold start's joins all sent `max_transmissions` times;
//!   null when the largest backlog has not shrunk for 10 s, as under loss,
//!   where suspicions and refutations never stop, or after 60 s);
//! - steady state over `--steady-seconds`, from then: `bytes_per_node_per_s` sent,
//!   `cpu_us_per_node_per_period` (wall time of protocol work), and false
//!   suspicions: `suspect_pair_samples` (observer→member pairs seen suspect,
//!   summed over samples every 100 ms) and `false_down_pairs` (pairs ever
//!   declared down) while every node is up;
//! - `recovered_s` (with stalls): after the steady state, until every node
//!   counts every other again (null when that took over 30 s);
//! - `detect_s`: kill one node; until no survivor counts it;
//! - `heal_s`: cut the survivors in two halves until each half counts only
//!   itself (`split_s`), then heal; until every survivor counts every other.
//!
//! usage: gossip-sim [--sizes 100,250,500,1000] [--loss 0,0.01,0.1]
//!                   [--unsealed] [--steady-seconds 10] [--max-members N] [--seed S]
//!                   [--interval-ms 100] [--probe-timeout-ms 40] [--suspicion-ms 200]
//!                   [--stall-share 0.05 --stall-ms 2000 --stall-every-ms 10000]
//! Figures are in virtual seconds except the CPU one. Every run is bounded
//! by virtual-time limits.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use arlen_membership::simulation::{SimConfig, Simulation};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn list<T: std::str::FromStr>(name: &str, default: &str) -> Vec<T> {
    arg(name).unwrap_or_else(|| default.to_owned()).split(',').filter_map(|v| v.trim().parse().ok()).collect()
}

/// With `--trace`: the nodes that do not count every other, and whom they miss.
fn lagging(sim: &Simulation, when: &str) {
    use arlen_membership::Rejection;
    let up: Vec<usize> = (0..sim.len()).filter(|i| sim.is_up(*i)).collect();
    let behind: Vec<usize> = up.iter().copied().filter(|i| sim.live_members(*i) + 1 != up.len()).collect();
    eprintln!("{when}: {} of {} nodes do not count every other", behind.len(), up.len());
    for observer in behind.iter().take(5) {
        let missing: Vec<usize> =
            up.iter().copied().filter(|m| m != observer && !sim.sees_live(*observer, *m)).collect();
        eprintln!(
            "  node {observer} counts {} of {}, held back {} newcomers; misses {:?} (their rejoins {:?})",
            sim.live_members(*observer) + 1,
            up.len(),
            sim.rejected(*observer, Rejection::HeldBack),
            &missing[..missing.len().min(8)],
            missing.iter().take(8).map(|m| sim.rejoins(*m)).collect::<Vec<_>>()
        );
    }
}

fn seconds(d: Option<Duration>) -> serde_json::Value {
    d.map_or(serde_json::Value::Null, |d| serde_json::json!((d.as_secs_f64() * 1000.0).round() / 1000.0))
}

fn main() {
    let sizes: Vec<usize> = list("--sizes", "100,250,500,1000");
    let losses: Vec<f64> = list("--loss", "0");
    let sealed = !std::env::args().any(|a| a == "--unsealed");
    let steady = Duration::from_secs(arg("--steady-seconds").and_then(|v| v.parse().ok()).unwrap_or(10));
    let seed: u64 = arg("--seed").and_then(|v| v.parse().ok()).unwrap_or(1);
    let max_members: Option<usize> = arg("--max-members").and_then(|v| v.parse().ok());
    for &nodes in &sizes {
        for &loss in &losses {
            let mut config = SimConfig::defaults(nodes);
            config.sealed = sealed;
            config.loss = loss;
            config.seed = seed;
            config.max_members = max_members.unwrap_or_else(|| config.max_members.max(nodes + 8));
            let millis = |name: &str, default: Duration| {
                arg(name).and_then(|v| v.parse().ok()).map_or(default, Duration::from_millis)
            };
            config.interval = millis("--interval-ms", config.interval);
            config.probe_timeout = millis("--probe-timeout-ms", config.probe_timeout);
            config.suspicion_timeout = millis("--suspicion-ms", config.suspicion_timeout);
            let line = run(config, steady);
            println!("{line}");
        }
    }
}

/// Runs until no node has updates left to gossip; `None` if the largest
/// backlog has not shrunk for 10 s (or 60 s pass). A draining backlog keeps
/// its count for a while (foca sends every entry round-robin, so entries run
/// out of transmissions together); under loss it never drains at all.
fn settle(sim: &mut Simulation) -> Option<Duration> {
    const CHECK: Duration = Duration::from_millis(100);
    const PLATEAU: Duration = Duration::from_secs(10);
    let start = sim.now();
    let (mut lowest, mut lowest_at) = (usize::MAX, start);
    while sim.now() - start < Duration::from_secs(60) {
        let backlog = sim.max_backlog();
        if backlog == 0 {
            return Some(sim.now() - start);
        }
        if backlog < lowest {
            (lowest, lowest_at) = (backlog, sim.now());
        } else if sim.now() - lowest_at >= PLATEAU {
            return None;
        }
        sim.run_for(CHECK);
    }
    None
}

fn run(config: SimConfig, steady: Duration) -> serde_json::Value {
    let wall = Instant::now();
    let nodes = config.nodes;
    let interval = config.interval;
    let every = if nodes >= 1000 { Duration::from_millis(50) } else { Duration::from_millis(20) };
    let mut sim = Simulation::new(config.clone());
    let trace = std::env::args().any(|a| a == "--trace");
    let converge = sim.run_until(Duration::from_secs(60), every, |s| {
        if trace && s.now().as_millis() % 500 < every.as_millis() {
            let counts: Vec<usize> = (0..s.len()).map(|i| s.live_members(i)).collect();
            let min = counts.iter().min().copied().unwrap_or(0);
            let mean = counts.iter().sum::<usize>() as f64 / counts.len().max(1) as f64;
            eprintln!("t={:.1}s live members: min {min}, mean {mean:.1} of {}", s.now().as_secs_f64(), s.len() - 1);
            let lacking: Vec<(usize, Vec<usize>)> = (0..s.len())
                .filter(|i| counts[*i] + 1 < s.len())
                .take(5)
                .map(|i| (i, (0..s.len()).filter(|m| *m != i && !s.sees_live(i, *m)).take(5).collect()))
                .collect();
            if !lacking.is_empty() && min + 10 >= s.len() {
                eprintln!("  lacking (observer, members): {lacking:?}");
            }
        }
        Simulation::converged(s)
    });

    // Steady state, once the joins' backlog has gone out: bandwidth, CPU, false suspicions.
    let settle = settle(&mut sim);
    let (bytes0, busy0, datagrams0, suspicions0) = (sim.bytes_sent, sim.busy, sim.datagrams_sent, sim.suspicions());
    let kinds0 = sim.sent_by_kind();
    let up = sim.up_addresses();
    let mut suspect_samples = 0usize;
    let mut down_pairs: HashSet<(usize, usize)> = HashSet::new();
    let samples = (steady.as_millis() / 100).max(1);
    // Stalls (`--stall-share`): every `--stall-every-ms`, that share of the
    // nodes stops for `--stall-ms` (a GC pause, CFS throttling); false downs
    // are counted among the others only.
    let stall_share: f64 = arg("--stall-share").and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let stall_for = Duration::from_millis(arg("--stall-ms").and_then(|v| v.parse().ok()).unwrap_or(2000));
    let stall_every = arg("--stall-every-ms").and_then(|v| v.parse::<u128>().ok()).unwrap_or(10_000).max(100);
    let mut stalled: HashSet<usize> = HashSet::new();
    let mut lcg = config.seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    for sample in 0..samples {
        if stall_share > 0.0 && (u128::from(sample as u64) * 100) % stall_every == 0 {
            let count = ((nodes as f64) * stall_share).round() as usize;
            for _ in 0..count {
                lcg = lcg.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                let index = (lcg >> 33) as usize % nodes;
                sim.stall(index, stall_for);
                stalled.insert(index);
            }
        }
        sim.run_for(Duration::from_millis(100));
        for observer in (0..nodes).filter(|o| !stalled.contains(o)) {
            let (suspect, down) = sim.doubts(observer, &up);
            suspect_samples += suspect;
            if down > 0 {
                for member in (0..nodes).filter(|m| !stalled.contains(m)) {
                    if member != observer && !sim.sees_live(observer, member) {
                        down_pairs.insert((observer, member));
                    }
                }
            }
        }
    }
    // Let the stalled nodes come back before the crash is measured.
    let recovered = if stalled.is_empty() {
        Some(Duration::ZERO)
    } else {
        sim.run_until(Duration::from_secs(30), every, Simulation::converged)
    };
    if trace {
        lagging(&sim, "after the stalls");
    }
    let bytes = sim.bytes_sent - bytes0;
    // What the steady state's datagrams carried, per node and second.
    let per_node_second = |count: u64| (count as f64 / nodes as f64 / steady.as_secs_f64() * 10.0).round() / 10.0;
    let kinds: serde_json::Map<String, serde_json::Value> = sim
        .sent_by_kind()
        .into_iter()
        .map(|(kind, (datagrams, bytes))| {
            let (d0, b0) = kinds0.get(kind).copied().unwrap_or_default();
            let figures = serde_json::json!({
                "datagrams": per_node_second(datagrams - d0),
                "bytes": per_node_second(bytes - b0),
            });
            (kind.to_owned(), figures)
        })
        .collect();
    let datagrams = sim.datagrams_sent - datagrams0;
    let suspicions = sim.suspicions() - suspicions0;
    let busy = sim.busy - busy0;
    let periods = steady.as_secs_f64() / interval.as_secs_f64();

    // A crash: one node that is not a seed.
    let victim = nodes - 1;
    sim.crash(victim);
    let detect = sim.run_until(Duration::from_secs(30), every.min(Duration::from_millis(10)), |s| {
        (0..s.len()).filter(|i| s.is_up(*i)).all(|i| !s.sees_live(i, victim))
    });

    // A partition of the survivors into two halves, then the heal.
    let survivors: Vec<usize> = (0..nodes).filter(|i| sim.is_up(*i)).collect();
    let half: HashSet<usize> = survivors.iter().copied().take(survivors.len() / 2).collect();
    let (a, b) = (half.len(), survivors.len() - half.len());
    sim.partition(Some(half.clone()));
    let side = |i: &usize| if half.contains(i) { a } else { b };
    let split =
        sim.run_until(Duration::from_secs(30), every, |s| survivors.iter().all(|i| s.live_members(*i) + 1 == side(i)));
    if trace {
        let short: Vec<(usize, usize, usize)> = survivors
            .iter()
            .map(|i| (*i, sim.live_members(*i) + 1, side(i)))
            .filter(|(_, counted, side)| counted != side)
            .take(10)
            .collect();
        eprintln!("split: (node, counts, its side) of those not matching: {short:?}");
    }
    sim.partition(None);
    let heal = sim.run_until(Duration::from_secs(60), every, Simulation::converged);

    serde_json::json!({
        "nodes": nodes,
        "sealed": config.sealed,
        "loss": config.loss,
        "max_members": config.max_members,
        "interval_ms": config.interval.as_millis() as u64,
        "probe_timeout_ms": config.probe_timeout.as_millis() as u64,
        "suspicion_ms": config.suspicion_timeout.as_millis() as u64,
        "converge_s": seconds(converge),
        "settle_s": seconds(settle),
        "bytes_per_node_per_s": (bytes as f64 / nodes as f64 / steady.as_secs_f64()).round(),
        "datagrams_per_node_per_s": (datagrams as f64 / nodes as f64 / steady.as_secs_f64()).round(),
        "sent_per_node_per_s": kinds,
        "cpu_us_per_node_per_period": ((busy.as_secs_f64() * 1e6 / nodes as f64 / periods) * 10.0).round() / 10.0,
        "suspect_pair_samples": suspect_samples,
        "suspicions_raised": suspicions,
        "false_down_pairs": down_pairs.len(),
        "stalled_nodes": stalled.len(),
        "recovered_s": seconds(recovered),
        "detect_s": seconds(detect),
        "split_s": seconds(split),
        "heal_s": seconds(heal),
        "virtual_s": (sim.now().as_secs_f64() * 10.0).round() / 10.0,
        "wall_s": (wall.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    })
}
