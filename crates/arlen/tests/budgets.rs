//! Lifetimes and budgets under attack, against the real binary: HTTP/2
//! connections held to HTTP/1.1's deadlines, shares of waits and event
//! streams per connection, slow readers and idle tunnels cut in the sidecar,
//! and a 1,024-descriptor process that answers every probe while clients try
//! to take every descriptor. Attackers are written here with raw frames,
//! bounded in count and time.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arlen_testkit::{free_port, poll_until_explained, send_raw, ArlenProcess, PythonUpstream};

mod support;
use support::{binary, read_until_closed};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An HTTP/2 frame: length, type, flags, stream id, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// SETTINGS with INITIAL_WINDOW_SIZE = `window`: a client that grants no window with 0.
fn settings(window: u32) -> Vec<u8> {
    let mut payload = vec![0x00, 0x04];
    payload.extend_from_slice(&window.to_be_bytes());
    frame(0x4, 0, 0, &payload)
}

/// A GET as a HEADERS frame (END_STREAM | END_HEADERS), literal fields without Huffman.
fn get(stream: u32, path: &str) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in [(":method", "GET"), (":scheme", "http"), (":authority", "localhost"), (":path", path)] {
        block.push(0x00);
        block.push(u8::try_from(name.len()).unwrap());
        block.extend_from_slice(name.as_bytes());
        block.push(u8::try_from(value.len()).unwrap());
        block.extend_from_slice(value.as_bytes());
    }
    frame(0x1, 0x5, stream, &block)
}

/// An HTTP/2 connection that grants `window` and opens a stream for each of `paths`.
fn h2_connection<'a>(address: SocketAddr, window: u32, paths: impl IntoIterator<Item = &'a str>) -> TcpStream {
    let mut bytes = PREFACE.to_vec();
    bytes.extend(settings(window));
    for (index, path) in (0u32..).zip(paths) {
        bytes.extend(get(1 + 2 * index, path));
    }
    open_with(address, &bytes)
}

/// One clustered node expecting one node (ready).
fn one_node() -> ArlenProcess {
    let mut node = ArlenProcess::serve(
        binary(),
        Path::new("/nonexistent"),
        &[("ARLEN_CLUSTER_ENABLED", "1"), ("ARLEN_CLUSTER_EXPECTED_NODES", "1")],
    );
    node.wait_live();
    node
}

/// Opens a connection and sends `bytes`.
fn open_with(address: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).unwrap();
    stream.write_all(bytes).unwrap();
    stream
}

fn status_of(address: SocketAddr, target: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn metric(node: &ArlenProcess, name: &str) -> f64 {
    arlen_http::metrics::sample_value(&node.get("/metrics").text(), name).unwrap_or(f64::NAN)
}

#[test]
fn http2_connections_that_send_only_a_preface_or_stay_idle_are_closed_on_http1s_deadline() {
    let mut node =
        ArlenProcess::serve(binary(), Path::new("/nonexistent"), &[("ARLEN_CONNECTION_TIMEOUT_SECONDS", "2")]);
    node.wait_live();
    let started = Instant::now();
    let mut preface_only: Vec<TcpStream> = (0..20).map(|_| open_with(node.address(), PREFACE)).collect();
    let mut idle: Vec<TcpStream> = (0..20).map(|_| h2_connection(node.address(), 65_535, ["/livez"])).collect();
    for (kind, streams) in [("preface only", &mut preface_only), ("idle after a request", &mut idle)] {
        for (index, stream) in streams.iter_mut().enumerate() {
            assert!(
                read_until_closed(stream, Duration::from_secs(10).saturating_sub(started.elapsed())).is_some(),
                "HTTP/2 connection {index} ({kind}) still open {:?} after it was opened (connection timeout 2 s)",
                started.elapsed()
            );
        }
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(1500), "closed before the deadline: {elapsed:?}");
    eprintln!("40 idle HTTP/2 connections closed after {elapsed:?} (connection timeout 2 s)");
    assert_eq!(status_of(node.address(), "/readyz"), Some(200));
}

#[test]
fn two_http2_connections_cannot_take_every_wait_and_event_stream() {
    let node = one_node();
    // Two connections, 64 streams each of long /clusterz waits and of event
    // streams: before, these took all 64 wait and all 64 stream slots.
    let hogs: Vec<TcpStream> = (0..2)
        .map(|_| {
            let paths = ["/clusterz?wait_for_nodes=9&timeout=30s", "/clusterz/events"];
            h2_connection(node.address(), 65_535, (0..128).map(|i| paths[i % 2]))
        })
        .collect();
    // The node has taken them in: its shares are full.
    poll_until_explained(
        "the hogs' streams to be admitted",
        Duration::from_secs(10),
        || (metric(&node, "arlen_http_requests_active") >= 16.0).then_some(()),
        || node.describe(),
    );
    // An honest deploy script still gets its wait and its event stream.
    let wait = send_raw(
        node.address(),
        b"GET /clusterz?wait_for_nodes=1&timeout=2s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(wait.status, 200, "an honest wait was refused: {}", wait.head);
    let mut events = open_with(node.address(), b"GET /clusterz/events HTTP/1.1\r\nHost: x\r\n\r\n");
    events.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = [0u8; 12];
    events.read_exact(&mut head).unwrap();
    assert_eq!(&head[9..12], b"200", "an honest event stream was refused: {}", String::from_utf8_lossy(&head));
    drop(hogs);
}

/// 100 HTTP/2 connections grant no window and open as many streams as they
/// may: what the node holds for them is bounded (before: ~1 MiB a
/// connection, not returned), and comes back when they close.
#[test]
fn http2_streams_a_client_does_not_read_hold_bounded_memory_returned_on_close() {
    let node = one_node();
    let before = rss_kib(node.pid());
    let stalled: Vec<TcpStream> =
        (0..100).map(|_| h2_connection(node.address(), 0, std::iter::repeat_n("/metrics", 200))).collect();
    poll_until_explained(
        "the stalled streams to be taken in",
        Duration::from_secs(10),
        || (metric(&node, "arlen_http_requests_total") >= 3000.0).then_some(()),
        || node.describe(),
    );
    let held = rss_kib(node.pid());
    drop(stalled);
    poll_until_explained(
        "the stalled connections to be gone",
        Duration::from_secs(10),
        || (status_of(node.address(), "/livez") == Some(200) && rss_kib(node.pid()) < held).then_some(()),
        || node.describe(),
    );
    let after = rss_kib(node.pid());
    eprintln!(
        "100 HTTP/2 connections granting no window: RSS {before} KiB -> {held} KiB held -> {after} KiB after close"
    );
    assert!(held < before + 48 * 1024, "100 stalled connections hold {} KiB", held - before);
}

fn upstream_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/upstream.py")
}

fn sidecar_under_limit(upstream: &str, nofile: Option<u32>, extra: &[(&str, &str)]) -> ArlenProcess {
    let port = free_port();
    let port_text = port.to_string();
    let mut vars: Vec<(&str, &str)> = vec![
        ("ARLEN_CLUSTER_ENABLED", "1"),
        ("ARLEN_CLUSTER_EXPECTED_NODES", "1"),
        ("ARLEN_PROXY_HEALTH_PATH", "/health"),
    ];
    vars.extend_from_slice(extra);
    let arlen = binary().display().to_string();
    let mut args = vec!["serve", "--port", &port_text, "--app-root", "/nonexistent"];
    if !upstream.is_empty() {
        args.extend(["--upstream", upstream]);
    }
    let mut node = match nofile {
        Some(limit) => {
            let limit = format!("--nofile={limit}:{limit}");
            let mut wrapped = vec![limit.as_str(), arlen.as_str()];
            wrapped.extend(args);
            ArlenProcess::spawn(Path::new("/usr/bin/prlimit"), &wrapped, &vars, port)
        }
        None => ArlenProcess::spawn(binary(), &args, &vars, port),
    };
    node.wait_live();
    node
}

fn rss_kib(pid: u32) -> u64 {
    support::memory_kib(pid, "VmRSS")
}

#[test]
fn slow_readers_are_cut_at_the_write_deadline_and_cannot_pin_the_sidecar() {
    let app = PythonUpstream::start(&upstream_script(), free_port(), "app-1");
    let node = sidecar_under_limit(&app.url(), None, &[("ARLEN_WRITE_TIMEOUT_MS", "1000")]);
    poll_until_explained(
        "the sidecar to be ready",
        Duration::from_secs(10),
        || (status_of(node.address(), "/readyz") == Some(200)).then_some(()),
        || node.describe(),
    );
    let before = rss_kib(node.pid());
    // 40 clients ask for 50 MB each and never read.
    let started = Instant::now();
    let mut readers: Vec<TcpStream> = (0..40)
        .map(|index| {
            let mut stream = open_with(node.address(), b"GET /big?bytes=50000000 HTTP/1.1\r\nHost: x\r\n\r\n");
            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            // The response has begun (the upstream is sending); from here on, nothing is read.
            let mut head = [0u8; 12];
            stream.read_exact(&mut head).unwrap();
            assert_eq!(&head[9..12], b"200", "slow reader {index}: {}", String::from_utf8_lossy(&head));
            stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            stream
        })
        .collect();
    // Meanwhile the node serves others and stays ready.
    for _ in 0..10 {
        assert_eq!(status_of(node.address(), "/"), Some(200), "{}", node.describe());
        assert_eq!(status_of(node.address(), "/readyz"), Some(200));
    }
    let peak = rss_kib(node.pid());
    // Without reading a byte more: the node gives up on every one of them.
    let cut_after = poll_until_explained(
        "the slow readers to be cut",
        Duration::from_secs(20),
        || (metric(&node, "arlen_http_slow_readers_cut_total") >= 40.0).then(|| started.elapsed()),
        || format!("{} cut\n{}", metric(&node, "arlen_http_slow_readers_cut_total"), node.describe()),
    );
    // Each ends: what the socket buffers held, then the end.
    for (index, reader) in readers.iter_mut().enumerate() {
        let read = read_until_closed(reader, Duration::from_secs(30).saturating_sub(started.elapsed()));
        let total = read.unwrap_or_else(|| {
            panic!("slow reader {index} still connected after {:?} (cut seen after {cut_after:?})", started.elapsed())
        });
        assert!(total < 50_000_000, "slow reader {index} got the whole body");
    }
    eprintln!("40 slow readers of 50 MB cut after {cut_after:?} (write timeout 1 s); RSS {before} KiB -> {peak} KiB");
    assert!(peak < before + 32 * 1024, "memory grew from {before} KiB to {peak} KiB");
}

/// Opens a WebSocket-like tunnel through the sidecar (the upstream echoes).
fn tunnel(address: SocketAddr) -> Option<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(b"GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n").ok()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        stream.read_exact(&mut byte).ok()?;
        head.push(byte[0]);
    }
    head.starts_with(b"HTTP/1.1 101").then_some(stream)
}

#[test]
fn an_idle_tunnel_is_closed_and_tunnels_count_against_the_descriptor_budget() {
    let app = PythonUpstream::start(&upstream_script(), free_port(), "app-1");
    let node = sidecar_under_limit(&app.url(), Some(1024), &[("ARLEN_CONNECTION_TIMEOUT_SECONDS", "2")]);
    poll_until_explained(
        "the sidecar to be ready",
        Duration::from_secs(10),
        || (status_of(node.address(), "/readyz") == Some(200)).then_some(()),
        || node.describe(),
    );
    let mut idle = tunnel(node.address()).expect("a tunnel");
    idle.write_all(b"ping").unwrap();
    let mut echo = [0u8; 4];
    idle.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"ping");
    let quiet = Instant::now();
    assert!(read_until_closed(&mut idle, Duration::from_secs(10)).is_some(), "an idle tunnel stayed open");
    eprintln!("idle tunnel closed {:?} after its last byte (connection timeout 2 s)", quiet.elapsed());

    // 507 tunnels at a 1,024 limit: some are refused, and every probe is answered.
    let mut open = Vec::new();
    let mut unanswered = 0;
    let mut probes = 0;
    for index in 0..507 {
        if let Some(stream) = tunnel(node.address()) {
            open.push(stream);
        }
        if index % 25 == 0 {
            probes += 1;
            if status_of(node.address(), "/readyz").is_none() {
                unanswered += 1;
            }
        }
    }
    for _ in 0..20 {
        probes += 1;
        if status_of(node.address(), "/livez") != Some(200) {
            unanswered += 1;
        }
    }
    eprintln!("507 tunnels asked at a 1,024 limit: {} opened; {unanswered} of {probes} probes unanswered", open.len());
    assert_eq!(unanswered, 0, "probes unanswered\n{}", node.describe());
    assert!(open.len() < 507, "every tunnel opened: the budget counted nothing");
    assert!(open.len() >= 100, "only {} tunnels opened", open.len());
}

#[test]
fn at_a_1024_descriptor_limit_every_probe_is_answered_while_1100_connections_idle() {
    let node = sidecar_under_limit("", Some(1024), &[]);
    assert!(node.stderr().contains("descriptor budget"), "{}", node.describe());
    let started = Instant::now();
    let mut attackers = Vec::new();
    let mut unanswered = Vec::new();
    let mut probes = 0;
    // 1,100 connections that send the HTTP/2 preface and nothing else,
    // interleaved with probes; then 20 more probes while they are held.
    for index in 0..1100 {
        if let Ok(mut stream) = TcpStream::connect_timeout(&node.address(), Duration::from_secs(2)) {
            let _ = stream.write_all(PREFACE);
            attackers.push(stream);
        }
        if index % 50 == 0 {
            probes += 1;
            if status_of(node.address(), "/readyz") != Some(200) {
                unanswered.push(format!("/readyz at connection {index}"));
            }
        }
    }
    for round in 0..20 {
        probes += 1;
        if status_of(node.address(), "/livez") != Some(200) {
            unanswered.push(format!("/livez round {round}"));
        }
    }
    eprintln!(
        "1,100 preface-only connections at a 1,024 limit over {:?}: {probes} probes, {} unanswered; {} evicted",
        started.elapsed(),
        unanswered.len(),
        metric(&node, "arlen_http_connections_evicted_total"),
    );
    assert!(unanswered.is_empty(), "unanswered: {unanswered:?}\n{}", node.describe());
    drop(attackers);
}
