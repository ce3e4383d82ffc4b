//! Stop permits on real clusters: 100 concurrent askers x 20 rounds against
//! three and five nodes on a real etcd (any node grants, in a transaction)
//! and on gossip (one node grants; the others name it) must never hand out
//! permits that together break quorum. Permits expire, are spent when their
//! node comes back, and the CLI speaks the same endpoint. Every random
//! choice comes from the printed seed (`ARLEN_TEST_SEED` replays it).

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use arlen_testkit::{free_port, poll_until_explained, ArlenProcess, EtcdCluster};
use rand::{RngExt as _, SeedableRng as _};
use support::binary;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn seed() -> u64 {
    let seed = std::env::var("ARLEN_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("seed {seed} (ARLEN_TEST_SEED={seed} replays it)");
    seed
}

fn base_vars<'a>(cluster: &'a str, node_id: &'a str, expected: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("ARLEN_CLUSTER_ENABLED", "1"),
        ("ARLEN_CLUSTER_NAME", cluster),
        ("ARLEN_CLUSTER_NODE_ID", node_id),
        ("ARLEN_CLUSTER_EXPECTED_NODES", expected),
        ("ARLEN_CLUSTER_QUORUM_POLICY", "majority"),
        ("ARLEN_OPS_TOKEN", TOKEN),
        ("ARLEN_SHUTDOWN_DRAIN_DELAY_SECONDS", "0"),
    ]
}

fn etcd_node(etcd: &EtcdCluster, cluster: &str, index: usize, size: usize) -> ArlenProcess {
    let (node_id, expected, endpoints) = (format!("{cluster}-{}", index + 1), size.to_string(), etcd.endpoints());
    let mut vars = base_vars(cluster, &node_id, &expected);
    vars.extend([("ARLEN_CLUSTER_MEMBERSHIP_SOURCE", "etcd"), ("ARLEN_CLUSTER_ETCD_ENDPOINTS", endpoints.as_str())]);
    let mut node = ArlenProcess::serve(binary(), Path::new("/nonexistent"), &vars);
    node.wait_live();
    node
}

fn gossip_node(cluster: &str, index: usize, ports: &[u16]) -> ArlenProcess {
    let extra = [
        ("ARLEN_CLUSTER_QUORUM_POLICY", "majority"),
        ("ARLEN_OPS_TOKEN", TOKEN),
        ("ARLEN_SHUTDOWN_DRAIN_DELAY_SECONDS", "0"),
    ];
    support::gossip_node(cluster, index, ports, &extra)
}

fn wait_nominal(nodes: &[ArlenProcess]) {
    for node in nodes {
        poll_until_explained(
            "nominal",
            Duration::from_secs(20),
            || (node.get("/readyz").header("X-Arlen-Cluster-Status") == Some("nominal")).then_some(()),
            || node.describe(),
        );
    }
}

fn url(node: &ArlenProcess) -> String {
    format!("http://{}", node.address())
}

/// One ask, following a 421 to the node it names once: (status, body).
async fn ask(client: &reqwest::Client, base: &str, node: &str, holder: &str) -> (u16, serde_json::Value) {
    let mut base = base.to_owned();
    for _ in 0..2 {
        let response = client
            .post(format!("{base}/_arlen/stop-permits"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"node": node, "holder": holder, "ttl_seconds": 600}))
            .send()
            .await
            .expect("the node answers");
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if status == 421 {
            base = body["url"].as_str().expect("a 421 names the granting node's URL").trim_end_matches('/').to_owned();
            continue;
        }
        return (status, body);
    }
    panic!("sent on twice");
}

async fn release_all(client: &reqwest::Client, base: &str) {
    let mut base = base.to_owned();
    let listed = loop {
        let response =
            client.get(format!("{base}/_arlen/stop-permits")).bearer_auth(TOKEN).send().await.expect("answers");
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap();
        if status == 421 {
            base = body["url"].as_str().unwrap().trim_end_matches('/').to_owned();
            continue;
        }
        assert_eq!(status, 200, "{body}");
        break body;
    };
    for permit in listed["permits"].as_array().unwrap() {
        let node = permit["node"].as_str().unwrap();
        let response = client
            .delete(format!("{base}/_arlen/stop-permits/{node}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("answers");
        assert_eq!(response.status().as_u16(), 200);
    }
}

/// 100 concurrent askers x 20 rounds, each asking a node chosen from the
/// seed to stop a node chosen from the seed; the grants of a round are
/// checked together, then released. Returns (grants, refusals, the p50 and
/// p99 of an ask's latency under that load).
fn race(nodes: &[ArlenProcess], tolerance: usize, seed: u64) -> (usize, usize, Duration, Duration) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let urls: Vec<String> = nodes.iter().map(url).collect();
    let names: Vec<String> = (1..=nodes.len()).map(|i| format!("n{}-{i}", nodes.len())).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut grants, mut refusals, mut breaking) = (0, 0, 0);
    let mut latencies = Vec::new();
    runtime.block_on(async {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
        for round in 0..20 {
            let asks: Vec<(String, String, String)> = (0..100)
                .map(|asker| {
                    let via = urls[rng.random_range(0..urls.len())].clone();
                    let node = names[rng.random_range(0..names.len())].clone();
                    (via, node, format!("asker-{round}-{asker}"))
                })
                .collect();
            let answers = futures_util::future::join_all(asks.iter().map(|(via, node, holder)| {
                let client = client.clone();
                async move {
                    let started = Instant::now();
                    let answer = ask(&client, via, node, holder).await;
                    (node.clone(), answer, started.elapsed())
                }
            }))
            .await;
            let mut granted = Vec::new();
            for (node, (status, body), took) in answers {
                latencies.push(took);
                match status {
                    200 => granted.push(node),
                    409 => refusals += 1,
                    other => panic!("round {round}: an ask answered {other}: {body}"),
                }
            }
            grants += granted.len();
            // All the round's grants together: more distinct nodes than the
            // cluster can lose would break quorum (so would any pair of them).
            let distinct: BTreeSet<&String> = granted.iter().collect();
            if distinct.len() > tolerance {
                breaking += 1;
            }
            assert!(distinct.len() <= tolerance, "round {round}: permits for {distinct:?} together break quorum");
            release_all(&client, &urls[0]).await;
        }
    });
    assert_eq!(breaking, 0);
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    (grants, refusals, at(0.5), at(0.99))
}

/// The race on clusters of three and five nodes started by `start(cluster,
/// index, size)`, its figures printed under `store`.
fn race_on_3_and_5(store: &str, start: impl Fn(&str, usize, usize) -> ArlenProcess) {
    let seed = seed();
    for size in [3usize, 5] {
        let cluster = format!("n{size}");
        let nodes: Vec<ArlenProcess> = (0..size).map(|i| start(&cluster, i, size)).collect();
        wait_nominal(&nodes);
        let started = Instant::now();
        let (grants, refusals, p50, p99) = race(&nodes, size - (size / 2 + 1), seed);
        eprintln!(
            "{store}, {size} nodes: 2,000 asks (100 at once) in {:?}: {grants} granted, {refusals} refused, \
             0 sets of grants breaking quorum; an ask's latency p50 {p50:?}, p99 {p99:?}",
            started.elapsed()
        );
        assert!(grants >= 20, "every round grants something: {grants}");
    }
}

#[test]
fn concurrent_askers_never_break_quorum_on_etcd() {
    let etcd = EtcdCluster::start(1);
    race_on_3_and_5("etcd", |cluster, i, size| etcd_node(&etcd, cluster, i, size));
}

#[test]
fn concurrent_askers_never_break_quorum_on_gossip_through_the_granting_node() {
    // Ports of their own for each cluster: 0..3 for three nodes, 3..8 for five.
    let ports: Vec<u16> = (0..8).map(|_| free_port()).collect();
    race_on_3_and_5("gossip", |cluster, i, size| {
        let own = if size == 3 { &ports[..3] } else { &ports[3..] };
        gossip_node(cluster, i, own)
    });
}

fn cli(args: &[&str], token: Option<&str>) -> (i32, String) {
    let mut command = std::process::Command::new(binary());
    command.args(["stop-permit"]).args(args).env_remove("ARLEN_OPS_TOKEN");
    if let Some(token) = token {
        command.env("ARLEN_OPS_TOKEN", token);
    }
    let output = command.output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

fn listed(node: &ArlenProcess) -> Vec<String> {
    let (code, text) = cli(&["list", "--url", &url(node), "--json"], Some(TOKEN));
    assert_eq!(code, 0, "{text}");
    let json_line = text.lines().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("{text}"));
    let document: serde_json::Value = serde_json::from_str(json_line).unwrap();
    document["permits"].as_array().unwrap().iter().map(|p| p["node"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn the_cli_acquires_releases_and_permits_expire_and_are_spent_when_the_node_is_back() {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes: Vec<ArlenProcess> = (0..3).map(|i| gossip_node("cli", i, &ports)).collect();
    wait_nominal(&nodes);
    let (code, text) = cli(&["list", "--url", &url(&nodes[2])], None);
    assert_eq!(code, 2, "no token: {text}");
    assert!(text.contains("ARLEN_OPS_TOKEN"), "{text}");
    let (code, text) = cli(&["list", "--url", &url(&nodes[2])], Some("wrong-token-wrong-token-wrong-tok"));
    assert_ne!(code, 0, "a wrong token is not let in: {text}");

    // Asked of node-3, granted by node-1 (the lowest-named member alive).
    let (code, text) = cli(&["acquire", "cli-3", "--url", &url(&nodes[2]), "--holder", "deploy-1"], Some(TOKEN));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("asking cli-1") && text.contains("granted: cli-3 may be stopped by deploy-1"), "{text}");
    let (code, text) = cli(&["acquire", "cli-2", "--url", &url(&nodes[0]), "--holder", "deploy-2"], Some(TOKEN));
    assert_eq!(code, 1, "a second node down would break the majority: {text}");
    assert!(text.contains("refused: stopping cli-2 would leave 1 of the 2"), "{text}");
    let (code, text) = cli(&["acquire", "cli-3", "--url", &url(&nodes[0]), "--holder", "deploy-2"], Some(TOKEN));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("deploy-1 holds the permit to stop cli-3"), "{text}");
    let (code, text) = cli(&["acquire", "cli-9", "--url", &url(&nodes[0])], Some(TOKEN));
    assert_eq!(code, 2, "an unknown node: {text}");
    let (code, text) = cli(&["release", "cli-3", "--url", &url(&nodes[0])], Some(TOKEN));
    assert_eq!(code, 0, "{text}");
    assert!(listed(&nodes[0]).is_empty());

    // A permit expires on its own.
    let (code, text) =
        cli(&["acquire", "cli-2", "--url", &url(&nodes[0]), "--ttl-seconds", "1", "--holder", "short"], Some(TOKEN));
    assert_eq!(code, 0, "{text}");
    assert_eq!(listed(&nodes[0]), vec!["cli-2".to_owned()]);
    poll_until_explained(
        "the permit expired",
        Duration::from_secs(5),
        || listed(&nodes[0]).is_empty().then_some(()),
        || format!("{:?}", listed(&nodes[0])),
    );

    // A permit is spent when its node is back under a new generation.
    let (code, text) = cli(&["acquire", "cli-3", "--url", &url(&nodes[0]), "--holder", "restart"], Some(TOKEN));
    assert_eq!(code, 0, "{text}");
    let mut old = nodes.pop().unwrap();
    old.signal("TERM");
    assert_eq!(old.wait_exit(Duration::from_secs(20)).code(), Some(0), "{}", old.stderr());
    assert_eq!(listed(&nodes[0]), vec!["cli-3".to_owned()], "still in force while the node is away");
    nodes.push(gossip_node("cli", 2, &ports));
    poll_until_explained(
        "the permit spent once cli-3 is back",
        Duration::from_secs(15),
        || listed(&nodes[0]).is_empty().then_some(()),
        || format!("{:?}\n{}", listed(&nodes[0]), nodes[0].describe()),
    );
}
