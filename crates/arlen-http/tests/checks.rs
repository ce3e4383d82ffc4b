//! The application's own checks through the HTTP layer, on a real loopback
//! socket: `/readyz` and `/livez` text, `verbose`, `exclude=`, the per-check
//! paths and JSON; `/clusterz`; `/metrics`; the hysteresis windows; a hung
//! check never holds a probe.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arlen_config::Config;
use arlen_http::checks::Check;
use arlen_http::{Runtime, ServerSettings};
use arlen_testkit::{get_async, RawResponse};
use axum::routing::get;
use axum::Router;

struct Node {
    address: std::net::SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Node {
    async fn get(&self, target: &str) -> RawResponse {
        get_async(self.address, target, &[]).await.unwrap()
    }

    /// Polls `target` until its status is `status` (the check runs on its
    /// own task): how long it took.
    async fn wait_status(&self, target: &str, status: u16, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let response = self.get(target).await;
            if response.status == status {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "{target} still {} after {limit:?}: {}",
                response.status,
                response.text()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn start(vars: &[(&str, &str)], checks: Vec<Check>) -> Node {
    let config = Config::from_map(Path::new("/nonexistent"), vars).unwrap();
    let runtime = Runtime::new(&config);
    for check in checks {
        runtime.add_check(check);
    }
    let listener = arlen_http::bind_address("127.0.0.1:0".parse().unwrap(), 128, false).unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stop_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(arlen_http::serve(
        listener,
        runtime.wrap(Router::new().route("/", get(|| async { "hello\n" }))),
        runtime.clone(),
        ServerSettings::from_config(&config),
        async {
            let _ = stop_rx.await;
        },
    ));
    runtime.publisher().set_membership(arlen_membership::static_view(&config, std::time::SystemTime::now()));
    runtime.publisher().mark_started();
    Node { address, _stop: stop }
}

fn switch(healthy: &Arc<AtomicBool>, name: &str) -> Check {
    let healthy = healthy.clone();
    Check::readiness(name, move || {
        let healthy = healthy.load(Ordering::SeqCst);
        async move {
            if healthy {
                Ok("SELECT 1 answered")
            } else {
                Err("connection refused")
            }
        }
    })
    .unwrap()
    .interval(Duration::from_millis(20))
}

#[tokio::test]
async fn a_readiness_check_takes_the_node_out_and_shows_everywhere() {
    let database = Arc::new(AtomicBool::new(true));
    let node = start(&[("ARLEN_CLUSTER_ENABLED", "1")], vec![switch(&database, "database")]).await;
    node.wait_status("/readyz", 200, Duration::from_secs(5)).await;
    assert_eq!(node.get("/readyz/database").await.text(), "ok\n");
    let verbose = node.get("/readyz?verbose").await.text();
    assert!(verbose.contains("[+]database ok\n"), "{verbose}");

    database.store(false, Ordering::SeqCst);
    let took = node.wait_status("/readyz", 503, Duration::from_secs(5)).await;
    println!("/readyz 503 {took:?} after the database check started failing");
    assert_eq!(node.get("/livez").await.status, 200, "a readiness check never touches liveness");
    let verbose = node.get("/readyz?verbose").await.text();
    assert!(verbose.contains("[-]database failed: connection refused\n"), "{verbose}");
    let single = node.get("/readyz/database").await;
    assert_eq!((single.status, single.text().as_str()), (503, "[-]database failed: connection refused\n"));
    assert_eq!(node.get("/readyz?exclude=database").await.status, 200);
    let json = node.get("/readyz?format=json").await.json();
    assert_eq!(json["checks"]["database"]["ok"], false);
    assert_eq!(json["checks"]["database"]["kind"], "readiness");
    assert_eq!(json["checks"]["database"]["detail"], "connection refused");
    let document: arlen_wire::documents::ProbeDocument = node.get("/readyz?format=json").await.document();
    assert!(!document.checks.application["database"].ok);
    let clusterz: arlen_wire::documents::ClusterDocument = node.get("/clusterz").await.document();
    assert!(!clusterz.checks["database"].ok && clusterz.checks["database"].checked);
    let metrics = node.get("/metrics").await.text();
    assert!(metrics.contains("arlen_check_up{check=\"database\",kind=\"readiness\"} 0\n"), "{metrics}");

    database.store(true, Ordering::SeqCst);
    node.wait_status("/readyz", 200, Duration::from_secs(5)).await;
    let metrics = node.get("/metrics").await.text();
    assert!(metrics.contains("arlen_check_up{check=\"database\",kind=\"readiness\"} 1\n"), "{metrics}");
}

#[tokio::test]
async fn a_failure_shorter_than_the_loss_grace_does_not_flap_readiness() {
    let database = Arc::new(AtomicBool::new(true));
    let vars = [("ARLEN_CLUSTER_QUORUM_LOSS_GRACE_MS", "600"), ("ARLEN_CLUSTER_QUORUM_RECOVERY_STABLE_MS", "300")];
    let node = start(&vars, vec![switch(&database, "database")]).await;
    node.wait_status("/readyz", 200, Duration::from_secs(5)).await;
    database.store(false, Ordering::SeqCst);
    // Failing, but within the grace: still ready, with the transition pending.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let json = node.get("/readyz?format=json").await.json();
    assert_eq!(json["checks"]["database"]["ok"], true, "{json}");
    assert_eq!(json["checks"]["database"]["last_ok"], false, "{json}");
    assert_eq!(json["checks"]["database"]["pending"]["met"], false, "{json}");
    let took = node.wait_status("/readyz", 503, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(300), "left rotation {took:?} after failing, grace 600 ms");
    database.store(true, Ordering::SeqCst);
    let back = node.wait_status("/readyz", 200, Duration::from_secs(5)).await;
    assert!(back >= Duration::from_millis(250), "back {back:?} after recovering, stable window 300 ms");
}

#[tokio::test]
async fn a_hung_check_fails_by_its_timeout_and_never_holds_a_probe() {
    let hung = Check::readiness("hung", std::future::pending::<Result<String, String>>)
        .unwrap()
        .interval(Duration::from_millis(50))
        .timeout(Duration::from_millis(100));
    let node = start(&[], vec![hung]).await;
    // Not ready until it has passed once, and it never does.
    let started = Instant::now();
    let response = node.get("/readyz?verbose").await;
    assert!(started.elapsed() < Duration::from_millis(100), "a probe waited for the check");
    assert_eq!(response.status, 503);
    let json = loop {
        let json = node.get("/readyz?format=json").await.json();
        if json["checks"]["hung"]["checked"] == true {
            break json;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(json["checks"]["hung"]["detail"], "no answer within 100 ms", "{json}");
}

#[tokio::test]
async fn a_liveness_check_gates_livez_only() {
    let wedged = Arc::new(AtomicBool::new(false));
    let flag = wedged.clone();
    let worker = Check::liveness("worker", move || {
        let wedged = flag.load(Ordering::SeqCst);
        async move {
            if wedged {
                Err("no progress for 30 s")
            } else {
                Ok("progressing")
            }
        }
    })
    .unwrap()
    .interval(Duration::from_millis(20));
    let node = start(&[], vec![worker]).await;
    assert_eq!(node.get("/livez").await.text(), "live\n");
    wedged.store(true, Ordering::SeqCst);
    node.wait_status("/livez", 503, Duration::from_secs(5)).await;
    assert_eq!(node.get("/livez").await.text(), "not_live\n");
    assert_eq!(node.get("/livez/worker").await.text(), "[-]worker failed: no progress for 30 s\n");
    assert_eq!(node.get("/healthz").await.status, 503);
    assert_eq!(node.get("/readyz").await.status, 200, "liveness checks are not readiness checks");
    assert_eq!(node.get("/livez?exclude=worker").await.status, 200);
    let json = node.get("/livez?format=json").await.json();
    assert_eq!(json["checks"]["worker"]["kind"], "liveness");
    assert!(json["checks"].get("database").is_none());
}
