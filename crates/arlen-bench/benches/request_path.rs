//! Micro-benchmarks of the request path, so a regression shows without a load
//! test: reading the snapshot, publishing one, and a whole request through the
//! runtime layer (headers on and off) with no network.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arlen_cluster::{snapshot_channel, Clock, MembershipView, NodeIdentity, RuntimeSettings, Timestamp};
use arlen_config::Config;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tower::{Service, ServiceExt as _};

#[derive(Debug)]
struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        Timestamp { monotonic: Duration::from_secs(1), wall: SystemTime::UNIX_EPOCH }
    }
}

fn view(observed: u32) -> MembershipView {
    MembershipView::counted("static_config", observed)
}

fn snapshot(c: &mut Criterion) {
    let identity =
        NodeIdentity { cluster_enabled: true, cluster_name: "bench".into(), node_id: "node-a".into(), worker_pid: 1 };
    let (publisher, reader) =
        snapshot_channel(identity, RuntimeSettings::contract_defaults(3), view(3), Arc::new(FixedClock));
    c.bench_function("snapshot/current", |b| b.iter(|| black_box(reader.current())));
    let mut observed = 0;
    c.bench_function("snapshot/publish_membership_change", |b| {
        b.iter(|| {
            observed = (observed + 1) % 4;
            publisher.set_membership(view(observed));
        })
    });
}

fn request(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for (name, emit) in [("request/root_headers_on", "1"), ("request/root_headers_off", "0")] {
        let config = Config::from_map(
            Path::new("/nonexistent"),
            &[
                ("ARLEN_CLUSTER_ENABLED", "1"),
                ("ARLEN_CLUSTER_EMIT_HEADERS", emit),
                ("ARLEN_CLUSTER_EXPECTED_NODES", "3"),
            ],
        )
        .unwrap();
        let mut service = runtime.block_on(async {
            let arlen = arlen_http::Runtime::new(&config);
            let app = tower::service_fn(|_request: http::Request<axum::body::Body>| async {
                Ok::<_, Infallible>(axum::response::Response::new(axum::body::Body::from("hello\n")))
            });
            arlen.wrap(app)
        });
        c.bench_function(name, |b| {
            b.iter(|| {
                let request = http::Request::get("/").body(axum::body::Body::empty()).unwrap();
                runtime.block_on(async { service.ready().await.unwrap().call(request).await.unwrap() })
            })
        });
    }
}

criterion_group!(benches, snapshot, request);
criterion_main!(benches);
