//! Raw request bytes through hyper's HTTP/1.1 server and the runtime layer in
//! front of an application: request limits (414, 431, 413), reserved
//! endpoints, ids and trace headers, the application. Whatever arrives, the
//! connection answers with an HTTP/1.1 status line or closes; nothing panics.
#![no_main]

use std::time::Duration;

use axum::body::Body;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tower::ServiceExt as _;

fuzz_target!(|data: &[u8]| {
    arlen_fuzz::with_node(|tokio, runtime| {
        let app = axum::Router::new()
            .route("/", axum::routing::get(|| async { "hello\n" }))
            .route("/echo", axum::routing::post(|body: axum::body::Bytes| async move { body }));
        let service =
            runtime.wrap(app).map_request(|request: http::Request<hyper::body::Incoming>| request.map(Body::new));
        let output = tokio.block_on(async {
            let (mut client, server) = tokio::io::duplex(1 << 16);
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(1))
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(server), TowerToHyperService::new(service));
            let served = tokio::spawn(connection);
            let _ = client.write_all(data).await;
            let _ = client.shutdown().await;
            let mut output = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut output)).await;
            served.abort();
            output
        });
        assert!(
            output.is_empty() || output.starts_with(b"HTTP/1.1 ") || output.starts_with(b"HTTP/1.0 "),
            "not an HTTP answer: {:?}",
            String::from_utf8_lossy(&output[..output.len().min(64)])
        );
    });
});
