//! The floor of the sidecar's own stack: a reverse proxy with nothing but
//! stock hyper on both sides (the server's HTTP/1.1 connection, the client's
//! HTTP/1 connection API, idle upstream connections on a stack, bodies
//! streamed), on the same tokio runtime settings as `arlen serve`. No
//! cluster, identity, trace or forwarding headers, no limits, no drain,
//! lower-case header names: what the sidecar costs above this is what its
//! features cost; what this costs above nginx is hyper's.
//!
//! usage: arlen-hyper-proxy <port> <upstream host:port>

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

type Idle = Arc<Mutex<Vec<SendRequest<Incoming>>>>;

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).expect("usage: arlen-hyper-proxy <port> <host:port>");
    let upstream: &'static str = Box::leak(args.next().expect("the upstream's host:port").into_boxed_str());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        let idle: Idle = Arc::default();
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let idle = idle.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| forward(request, upstream, idle.clone()));
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
}

async fn forward(request: Request<Incoming>, upstream: &str, idle: Idle) -> Result<Response<Returning>, Infallible> {
    let pooled = idle.lock().expect("pool").pop();
    let mut sender = match pooled {
        Some(sender) => sender,
        None => match connect(upstream).await {
            Some(sender) => sender,
            None => return Ok(bad_gateway()),
        },
    };
    if sender.ready().await.is_err() {
        return Ok(bad_gateway());
    }
    match sender.send_request(request).await {
        Ok(response) => Ok(response.map(|body| Returning { body: Some(body), sender: Some(sender), idle })),
        Err(_) => Ok(bad_gateway()),
    }
}

async fn connect(upstream: &str) -> Option<SendRequest<Incoming>> {
    let stream = tokio::net::TcpStream::connect(upstream).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(connection);
    Some(sender)
}

fn bad_gateway() -> Response<Returning> {
    let mut response = Response::new(Returning { body: None, sender: None, idle: Arc::default() });
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

/// The upstream's body (none for the proxy's own answers); its connection
/// goes back to the idle stack when the body is done with (dropped).
struct Returning {
    body: Option<Incoming>,
    sender: Option<SendRequest<Incoming>>,
    idle: Idle,
}

impl Drop for Returning {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take().filter(|sender| !sender.is_closed()) {
            self.idle.lock().expect("pool").push(sender);
        }
    }
}

impl Body for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.body {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.as_ref().map_or_else(|| http_body::SizeHint::with_exact(0), Body::size_hint)
    }
}
