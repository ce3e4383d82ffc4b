//! The physical floor for request-path benchmarks: the least an HTTP/1.1
//! keep-alive responder can do on this machine's loopback. One thread, one
//! epoll loop (tokio's current-thread runtime), no parsing: every request
//! head (counted by its blank line, so pipelined heads are answered too) gets
//! the same fixed response, written with one `write` per read. What a real
//! server adds over this is the cost of being a server; what the floor
//! itself costs is the kernel's loopback round trip and the event loop.
//!
//! usage: arlen-floor <port> <body text>

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The end of a request head.
const BLANK_LINE: &[u8] = b"\r\n\r\n";

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).expect("usage: arlen-floor <port> <body>");
    let body = args.next().unwrap_or_default().replace("\\n", "\n");
    let response: &'static [u8] = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build().expect("tokio runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            tokio::spawn(answer(stream, response));
        }
    });
}

/// Answers every complete head read from `stream` until it closes. A head
/// split across reads is found by keeping the last three bytes of each read.
async fn answer(mut stream: tokio::net::TcpStream, response: &'static [u8]) {
    let mut buffer = vec![0u8; 16 * 1024];
    let mut out = Vec::with_capacity(response.len() * 4);
    let mut carried = 0;
    loop {
        let read = match stream.read(&mut buffer[carried..]).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        let filled = carried + read;
        let heads = buffer[..filled].windows(BLANK_LINE.len()).filter(|window| *window == BLANK_LINE).count();
        // Keep what could be the start of a blank line split by the read
        // (nothing when the read ended with one: it was counted).
        carried = if buffer[..filled].ends_with(BLANK_LINE) { 0 } else { filled.min(BLANK_LINE.len() - 1) };
        buffer.copy_within(filled - carried..filled, 0);
        if heads == 0 {
            continue;
        }
        out.clear();
        for _ in 0..heads {
            out.extend_from_slice(response);
        }
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}
