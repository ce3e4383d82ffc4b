//! `GET /clusterz/events` on a real 3-node gossip cluster: a `snapshot`
//! event first, then one event per membership, quorum and readiness
//! transition (the snapshot generation as the id), and a reconnect with
//! `Last-Event-ID` replays what was missed.

use arlen_wire::events::Event;
use arlen_wire::states::{MemberState, QuorumStatus};
use std::time::Duration;

use arlen_testkit::{free_port, poll_until_explained, ArlenProcess};

mod support;
use support::binary;

/// One parsed server-sent event.
#[derive(Debug, Clone)]
struct Sse {
    kind: String,
    id: Option<u64>,
    data: Event,
}

/// Reads events from `response` until `done` holds for the list, or the deadline.
async fn read_events(
    response: &mut reqwest::Response,
    buffer: &mut String,
    limit: Duration,
    done: impl Fn(&[Sse]) -> bool,
) -> Vec<Sse> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut events = Vec::new();
    while !done(&events) {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("events so far: {events:#?}"))
            .unwrap()
            .expect("the stream stays open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut kind, mut id, mut data) = (None, None, None);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    kind = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("id: ") {
                    id = v.parse().ok();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v).ok();
                }
            }
            if let (Some(kind), Some(data)) = (kind, data) {
                events.push(Sse { kind, id, data });
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_events_stream_and_resume_with_last_event_id() {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let seeds = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
    let nodes: Vec<ArlenProcess> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let id = format!("ev-{}", i + 1);
            let vars = [
                ("ARLEN_CLUSTER_ENABLED", "1"),
                ("ARLEN_CLUSTER_NAME", "ev"),
                ("ARLEN_CLUSTER_NODE_ID", id.as_str()),
                ("ARLEN_CLUSTER_EXPECTED_NODES", "3"),
                ("ARLEN_CLUSTER_MEMBERSHIP_SOURCE", "gossip"),
                ("ARLEN_CLUSTER_GOSSIP_SEEDS", seeds.as_str()),
                ("ARLEN_READINESS_REQUIRES_CLUSTER_QUORUM", "1"),
            ];
            let args = ["serve", "--port", &port.to_string(), "--app-root", "/nonexistent"];
            let mut node = ArlenProcess::spawn(binary(), &args, &vars, *port);
            node.wait_live();
            node
        })
        .collect();
    poll_until_explained(
        "convergence",
        Duration::from_secs(15),
        || nodes.iter().all(|n| n.cluster_document().is_some_and(|doc| doc.cluster.observed_nodes == 3)).then_some(()),
        || nodes.iter().map(ArlenProcess::describe).collect(),
    );
    let url = format!("http://127.0.0.1:{}/clusterz/events", ports[0]);
    let client = reqwest::Client::new();
    let mut response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream; charset=utf-8");
    assert!(response.headers().contains_key("x-arlen-cluster-status"), "the cluster headers too");
    let mut buffer = String::new();
    let first = read_events(&mut response, &mut buffer, Duration::from_secs(5), |e| !e.is_empty()).await;
    assert_eq!(first[0].kind, "snapshot", "{first:#?}");
    assert_eq!(first[0].data.status, QuorumStatus::Nominal);
    let members = first[0].data.members.as_ref().expect("a snapshot lists the members");
    assert_eq!(members.get("ev-3"), Some(&MemberState::Alive), "{:?}", first[0].data);
    let baseline = first[0].id.expect("the snapshot event has an id");

    nodes[2].signal("KILL");
    let events = read_events(&mut response, &mut buffer, Duration::from_secs(10), |e| {
        e.iter().any(|e| e.kind == "quorum" && e.data.to.as_deref() == Some("degraded"))
            && e.iter().any(|e| e.kind == "readiness" && e.data.to.as_deref() == Some("not_ready"))
    })
    .await;
    let gone = events
        .iter()
        .find(|e| e.kind == "membership" && e.data.node_id.as_deref() == Some("ev-3"))
        .expect("ev-3's transition");
    assert_eq!(gone.data.from.as_deref(), Some("alive"), "{events:#?}");
    assert!(events.iter().all(|e| e.data.generation > baseline), "{events:#?}");
    let ids: Vec<u64> = events.iter().filter_map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    drop(response);

    // A reconnect that names the snapshot's id gets what happened since, from the history.
    let mut resumed = client.get(&url).header("Last-Event-ID", baseline.to_string()).send().await.unwrap();
    let mut buffer = String::new();
    let replayed = read_events(&mut resumed, &mut buffer, Duration::from_secs(5), |e| {
        e.iter().any(|e| e.kind == "quorum" && e.data.to.as_deref() == Some("degraded"))
    })
    .await;
    assert!(replayed.iter().all(|e| e.kind != "snapshot" && e.kind != "resync"), "{replayed:#?}");
    assert!(
        replayed.iter().any(|e| e.kind == "membership" && e.data.node_id.as_deref() == Some("ev-3")),
        "{replayed:#?}"
    );

    let bad = client.get(&url).header("Last-Event-ID", "yesterday").send().await.unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("Last-Event-ID"));
}
