//! The event stream's own rules, in process on a paused clock: a comment
//! and a `snapshot` first, a keep-alive comment after each quiet
//! `EVENT_KEEP_ALIVE`, at most `MAX_SUBSCRIBERS` at once (then 429
//! `subscriber_limit`), and streams that end when the listener closes.

use arlen_http::endpoints::{EVENT_KEEP_ALIVE, MAX_SUBSCRIBERS};
use arlen_http::Runtime;
use axum::body::Body;
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

fn runtime() -> Runtime {
    let config =
        arlen_config::Config::from_map(std::path::Path::new("/nonexistent"), &[("ARLEN_CLUSTER_ENABLED", "1")])
            .unwrap();
    let runtime = Runtime::new(&config);
    runtime.start();
    runtime
}

async fn subscribe(runtime: &Runtime) -> http::Response<Body> {
    let request = http::Request::get("/clusterz/events").body(Body::empty()).unwrap();
    runtime.wrap(axum::Router::new()).oneshot(request).await.unwrap()
}

async fn next_text(body: &mut Body) -> Option<String> {
    let frame = body.frame().await?.ok()?;
    Some(String::from_utf8_lossy(frame.data_ref()?).into_owned())
}

#[tokio::test(start_paused = true)]
async fn a_stream_opens_with_the_snapshot_keeps_alive_and_ends_on_close() {
    let runtime = runtime();
    let mut body = subscribe(&runtime).await.into_body();
    assert!(next_text(&mut body).await.unwrap().starts_with(": arlen membership events\n"));
    let snapshot = next_text(&mut body).await.unwrap();
    assert!(snapshot.starts_with("event: snapshot\nid: "), "{snapshot}");
    let started = tokio::time::Instant::now();
    assert_eq!(next_text(&mut body).await.unwrap(), ": keep-alive\n\n");
    assert_eq!(started.elapsed(), EVENT_KEEP_ALIVE);
    runtime.set_closing();
    assert!(next_text(&mut body).await.is_none(), "the stream ends when the listener closes");
}

#[tokio::test(start_paused = true)]
async fn subscribers_are_bounded() {
    let runtime = runtime();
    let mut held = Vec::new();
    for _ in 0..MAX_SUBSCRIBERS {
        let response = subscribe(&runtime).await;
        assert_eq!(response.status(), 200);
        held.push(response);
    }
    let refused = subscribe(&runtime).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["x-arlen-backpressure-reason"], "subscriber_limit");
    held.pop();
    assert_eq!(subscribe(&runtime).await.status(), 200, "a closed stream frees its place");
}
