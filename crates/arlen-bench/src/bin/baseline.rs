//! The baseline for request-path benchmarks: plain axum on the same tokio
//! runtime settings as `arlen serve`, answering `GET /` with the same body
//! and `GET /static/<i>` with the contents of the i-th file given (so it can
//! match the size of each of Arlen's endpoints).
//!
//! usage: arlen-baseline <port> <body text> [file...]

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::Router;

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).expect("usage: arlen-baseline <port> <body> [file...]");
    let body: &'static str = Box::leak(args.next().unwrap_or_default().replace("\\n", "\n").into_boxed_str());
    let files: Vec<&'static str> =
        args.map(|path| &*Box::leak(std::fs::read_to_string(path).expect("file").into_boxed_str())).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(async move {
        let mut app = Router::new().route("/", get(move || async move { body }));
        for (index, content) in files.into_iter().enumerate() {
            let kind =
                if content.starts_with('{') { "application/json; charset=utf-8" } else { "text/plain; charset=utf-8" };
            app = app.route(&format!("/static/{index}"), get(move || async move { ([(CONTENT_TYPE, kind)], content) }));
        }
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        axum::serve(listener, app).await.expect("serve");
    });
}
