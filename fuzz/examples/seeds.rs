//! Writes the seed corpus of every target to `fuzz/seeds/<target>/`
//! (`cargo run --manifest-path fuzz/Cargo.toml --example seeds`; `scripts/fuzz` does it).

use std::path::Path;

fn write(dir: &Path, target: &str, seeds: &[Vec<u8>]) {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir).expect("seed directory");
    for (i, seed) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), seed).expect("seed file");
    }
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&[0xff][..])
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let plist =
        b"{\n  port = 8080;\n  cluster = { enabled = YES; name = alpha; expectedNodes = 3; };\n  // a comment\n}\n";
    let toml = b"port = 8080\n[cluster]\nenabled = true\nname = \"alpha\"\nexpectedNodes = 3\n[cluster.gossip]\nseeds = [\"127.0.0.1:7946\"]\n";
    let json = br#"{"port": 8080, "cluster": {"enabled": true, "quorumPolicy": "majority", "membership": {"source": "gossip"}}}"#;
    write(
        &dir,
        "config_files",
        &[
            [&[0u8][..], plist].concat(),
            [&[1u8][..], toml].concat(),
            [&[2u8][..], json].concat(),
            [&[6u8][..], toml].concat(),
        ],
    );
    let keys = arlen_config::KEYS;
    let index = |key: &str| u8::try_from(keys.iter().position(|k| k.key == key).expect("a key")).expect("few keys");
    write(
        &dir,
        "config_env",
        &[
            join(&[
                &[[index("port")].as_slice(), b"8080"].concat(),
                &[[index("cluster.enabled")].as_slice(), b"YES"].concat(),
            ]),
            join(&[&[[index("cluster.quorumPolicy")].as_slice(), b"at_least:2"].concat()]),
            join(&[
                &[[index("cluster.gossip.keys")].as_slice(), b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="].concat()
            ]),
        ],
    );
    write(
        &dir,
        "probe_query",
        &[
            join(&[&[0], b"?verbose&exclude=cluster_quorum"]),
            join(&[&[0], b"?format=json", b"application/json"]),
            join(&[&[3], b"?wait_for_nodes=%3E%3D2&timeout=1s"]),
            join(&[&[3], b"?wait_for_status=nominal&timeout=250ms"]),
            join(&[&[5], b"cluster_quorum?verbose"]),
        ],
    );
    write(
        &dir,
        "http_head",
        &[
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            b"GET /readyz?format=json HTTP/1.1\r\nHost: x\r\nTraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n".to_vec(),
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /clusterz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ],
    );
    write(
        &dir,
        "etcd_record",
        &[join(&[
            b"node-a",
            br#"{"node_id":"node-a","generation":1,"http_url":"http://127.0.0.1:8080","started_utc":"2026-12-01T10:00:00.000Z","state":"alive"}"#,
            &[5],
        ])],
    );
    let datagrams = arlen_membership::fuzzing::seed_datagrams();
    write(&dir, "gossip_datagram", &datagrams.iter().map(|d| [&[2u8][..], d].concat()).collect::<Vec<_>>());
    let ready = br#"{"ok":true,"signal":"ready","status":"ready","timestamp_utc":"2026-02-23T10:00:00.000Z","uptime_seconds":12,"ready":true,"checks":{"request_dispatch":{"ok":true,"mode":"in_process"},"metrics_registry":{"ok":true,"source":"prometheus_client","enabled":true},"active_requests":{"ok":true,"value":1.0},"startup":{"ok":true,"started":true,"required_for_readyz":false},"cluster_quorum":{"ok":true,"required_for_readyz":true,"status":"nominal","observed_nodes":2,"expected_nodes":2,"met":true,"met_now":true,"policy":"all","required_nodes":2,"failure_tolerance":0,"since_utc":"2026-02-23T10:00:00.000Z"},"draining":{"ok":true,"draining":false}}}"#;
    let clusterz = br#"{"ok":true,"cluster":{"enabled":true,"name":"alpha","node_id":"node-a","expected_nodes":2,"observed_nodes":2,"worker_pid":1,"mode":"multi_node","quorum":{"status":"nominal","met":true,"observed_nodes":2,"expected_nodes":2,"policy":"all","required_nodes":2,"failure_tolerance":0},"generation":3,"lifecycle":{"started":true,"draining":false,"draining_since_utc":null},"members":[{"node_id":"node-a","generation":1,"http_url":"http://127.0.0.1:8080","gossip_address":"127.0.0.1:7946","state":"alive","self":true,"last_heard_ms":0},{"node_id":"node-b","generation":2,"http_url":"http://127.0.0.1:8081","gossip_address":"127.0.0.1:7947","state":"dead","self":false,"last_heard_ms":1500}]},"contracts":{"session":{"enabled":false,"mode":"cookie_signed","shared_secret_required":false,"shared_secret_configured":false},"realtime":{"mode":"node_local_pubsub","cluster_broadcast":"external_broker_required"}},"coordination":{"membership_source":"gossip","state":"nominal","capability_matrix":{"cross_node_request_routing":"external_load_balancer_required","cross_node_realtime_fanout":"external_broker_required","cross_node_jobs_deduplication":"external_queue_required","cross_node_cache_coherence":"external_cache_required"},"source_health":{"ok":true,"detail":"ok","last_membership_change_utc":null},"duplicate_node_ids":[]}}"#;
    write(&dir, "triage_documents", &[join(&[ready, clusterz]), join(&[ready, clusterz, ready, clusterz])]);
    println!("seeds written to {}", dir.display());
}
