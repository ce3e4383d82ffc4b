//! The probe and `/clusterz` query grammar through the runtime layer:
//! `?verbose`, `?exclude=`, `?format=`, `/readyz/<check>`, the `wait_for_*`
//! conditions and `timeout`, with any `Accept`. Every answer is one the
//! contract allows (never a 500), and a JSON answer is valid JSON.
#![no_main]

use axum::body::Body;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt as _;

const PATHS: [&str; 8] =
    ["/readyz", "/livez", "/healthz", "/clusterz", "/metrics", "/readyz/", "/livez/", "/clusterz.json"];

fuzz_target!(|data: &[u8]| {
    let fields = arlen_fuzz::fields(data);
    let [choice, rest, accept @ ..] = fields.as_slice() else { return };
    let path = PATHS[usize::from(choice.first().copied().unwrap_or(0)) % PATHS.len()];
    let Ok(rest) = std::str::from_utf8(rest) else { return };
    // The bytes after the path: a check name, a query, or both.
    let target = format!("{path}{rest}");
    let mut builder = http::Request::builder().uri(target.as_str());
    if choice.first().is_some_and(|c| c & 0x80 != 0) {
        builder = builder.method(http::Method::HEAD);
    }
    if let Some(accept) = accept.first() {
        if let Ok(value) = http::HeaderValue::from_bytes(accept) {
            builder = builder.header(http::header::ACCEPT, value);
        }
    }
    let Ok(request) = builder.body(Body::empty()) else { return };
    arlen_fuzz::with_node(|tokio, runtime| {
        let service = runtime.wrap(axum::Router::new());
        let response = tokio.block_on(service.oneshot(request)).expect("infallible");
        let status = response.status().as_u16();
        assert!(matches!(status, 200 | 400 | 404 | 408 | 412 | 414 | 429 | 431 | 503), "{target}: status {status}");
        let json = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        let body = tokio.block_on(axum::body::to_bytes(response.into_body(), usize::MAX)).expect("body");
        if json && !body.is_empty() {
            serde_json::from_slice::<serde_json::Value>(&body).expect("a JSON answer is JSON");
        }
    });
});
