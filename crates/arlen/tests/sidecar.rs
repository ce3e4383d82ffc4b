//! `arlen serve --upstream`: a real Python application behind a real sidecar
//! process, on loopback. Forwarding, headers both ways, streaming, Upgrade,
//! 502/504, the upstream check in readiness, and the drain.

use arlen_wire::documents::ProbeDocument;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use arlen_testkit::{free_port, poll_until_explained, send_raw, ArlenProcess, PythonUpstream};

mod support;
use support::binary;

/// The Python application, killed on drop.
fn upstream(port: u16, name: &str) -> PythonUpstream {
    PythonUpstream::start(&support::upstream_script(), port, name)
}

/// A sidecar that checks the upstream's `/health` every 200 ms.
fn sidecar(upstream: &str, extra: &[(&str, &str)]) -> ArlenProcess {
    let mut vars = vec![("ARLEN_PROXY_HEALTH_PATH", "/health"), ("ARLEN_PROXY_HEALTH_INTERVAL_MS", "200")];
    vars.extend_from_slice(extra);
    support::sidecar(upstream, &vars)
}

fn wait_ready(node: &ArlenProcess, status: u16) -> Duration {
    let started = Instant::now();
    poll_until_explained(
        &format!("/readyz {status}"),
        Duration::from_secs(10),
        || (node.get("/readyz").status == status).then_some(()),
        || node.describe(),
    );
    started.elapsed()
}

fn assert_cluster_headers(response: &arlen_testkit::RawResponse) {
    assert_eq!(response.header("X-Arlen-Cluster"), Some("shop"), "{}", response.head);
    assert_eq!(response.header("X-Arlen-Cluster-Status"), Some("nominal"));
    assert_eq!(response.header("X-Request-Id").map(str::len), Some(32));
}

#[test]
fn the_sidecar_forwards_with_headers_both_ways_and_answers_for_a_missing_upstream() {
    let app = upstream(free_port(), "app-1");
    let node = sidecar(&app.url(), &[("ARLEN_PROXY_RESPONSE_TIMEOUT_SECONDS", "1")]);
    wait_ready(&node, 200);

    let hello = node.get("/");
    assert_eq!((hello.status, hello.text().as_str()), (200, "hello from app-1\n"));
    assert_eq!(hello.header("X-App"), Some("app-1"), "the upstream's own headers come back");
    assert_cluster_headers(&hello);
    for code in [404, 500, 503] {
        let response = node.get(&format!("/status/{code}"));
        assert_eq!(response.status, code, "the upstream's own {code}");
        assert_cluster_headers(&response);
    }
    // What the upstream saw: the sidecar's own forwarding headers (the
    // client's word about itself replaced), host, and the sidecar's span.
    let request = "GET /headers HTTP/1.1\r\nHost: shop.example\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\nForwarded: for=203.0.113.9\r\nX-Real-IP: 203.0.113.9\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n";
    let mut stream = TcpStream::connect(node.address()).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let response = arlen_testkit::read_response(&mut stream).unwrap();
    let seen: serde_json::Value = response.json();
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "shop.example");
    assert_eq!(seen["x-real-ip"], "127.0.0.1");
    assert_eq!(seen["forwarded"], "for=127.0.0.1;host=\"shop.example\";proto=http");
    assert_eq!(seen["host"], "shop.example");
    assert!(seen.get("x-hop").is_none() && seen.get("connection").is_none(), "hop-by-hop removed: {seen}");
    let sent_trace = seen["traceparent"].as_str().unwrap();
    assert!(sent_trace.starts_with("00-0af7651916cd43dd8448eb211c80319c-"), "the trace continues: {sent_trace}");
    assert_eq!(response.header("traceparent"), Some(sent_trace), "the span the upstream saw is the one answered");

    // A response head that does not come in time: 504, with the reason.
    let slow = node.get("/slow?ms=3000");
    assert_eq!(slow.status, 504, "{}", slow.head);
    assert_eq!(slow.header("X-Arlen-Upstream-Error"), Some("timeout"));
    assert_cluster_headers(&slow);

    // Nothing listening: 502 at once, never a hang.
    let gone = sidecar(&format!("http://127.0.0.1:{}", free_port()), &[]);
    let started = Instant::now();
    let refused = gone.get("/");
    assert_eq!(refused.status, 502, "{}", refused.head);
    assert_eq!(refused.header("X-Arlen-Upstream-Error"), Some("connect_failed"));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(gone.get("/readyz").status, 503, "readiness follows the upstream");
    assert_eq!(gone.get("/livez").status, 200, "liveness does not");
}

/// Behind a trusted proxy the chain is extended; an h2c upgrade is never
/// forwarded; the application sees the path the runtime would match, and
/// no other spelling of a reserved one.
#[test]
fn the_sidecar_tells_the_application_the_truth_about_hops_upgrades_and_paths() {
    let app = upstream(free_port(), "app-1");
    let node = sidecar(&app.url(), &[("ARLEN_PROXY_TRUSTED_PROXIES", "127.0.0.0/8")]);
    wait_ready(&node, 200);
    let ask = |request: &str| send_raw(node.address(), request.as_bytes()).unwrap();

    let trusted = ask("GET /headers HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n");
    let seen: serde_json::Value = trusted.json();
    assert_eq!(seen["x-forwarded-for"], "203.0.113.9, 127.0.0.1", "{seen}");
    assert_eq!(seen["x-forwarded-proto"], "https");
    assert_eq!(seen["x-real-ip"], "203.0.113.9", "the right-most untrusted hop");

    let h2c = ask("GET /headers HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n");
    assert_eq!(h2c.status, 200, "answered as HTTP/1.1, not switched: {}", h2c.head);
    let seen: serde_json::Value = h2c.json();
    for gone in ["upgrade", "http2-settings"] {
        assert!(seen.get(gone).is_none(), "{gone} reached the application: {seen}");
    }

    let merged = ask("GET //headers/./x/..?q=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_eq!(merged.status, 200, "{}", merged.head);
    assert_eq!(merged.json()[":path"], "/headers/?q=1");
    for spelling in ["/READYZ", "//readyz", "/./metrics", "/headers/../clusterz", "/%6Civez", "/a%2Fb", "/.."] {
        let refused = ask(&format!("GET {spelling} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
        assert_eq!(refused.status, 400, "{spelling}: {}", refused.head);
        assert_eq!(refused.header("X-Arlen-Upstream-Error"), Some("bad_target"), "{spelling}");
    }
}

#[test]
fn bodies_stream_both_ways_and_upgrades_pass_through() {
    let app = upstream(free_port(), "app-1");
    let node = sidecar(&app.url(), &[("ARLEN_MAX_BODY_BYTES", "4194304")]);
    wait_ready(&node, 200);
    let big = node.get("/big?bytes=1048576");
    assert_eq!(big.header("Transfer-Encoding"), Some("chunked"), "streamed, not buffered: {}", big.head);
    assert_eq!((big.status, big.decoded_body().len()), (200, 1 << 20));
    assert_cluster_headers(&big);

    // 2 MiB up, chunked (no Content-Length), counted by the upstream.
    let mut stream = TcpStream::connect(node.address()).unwrap();
    stream.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    let chunk = vec![b'y'; 65536];
    for _ in 0..32 {
        stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).unwrap();
        stream.write_all(&chunk).unwrap();
        stream.write_all(b"\r\n").unwrap();
    }
    stream.write_all(b"0\r\n\r\n").unwrap();
    let echoed = arlen_testkit::read_response(&mut stream).unwrap();
    assert_eq!(echoed.text(), "2097152 bytes\n");

    // Past requestLimits.maxBodyBytes while streaming: 413.
    let small = sidecar(&app.url(), &[("ARLEN_MAX_BODY_BYTES", "100000")]);
    wait_ready(&small, 200);
    let mut stream = TcpStream::connect(small.address()).unwrap();
    stream.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    for _ in 0..4 {
        let _ = stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes());
        let _ = stream.write_all(&chunk);
        let _ = stream.write_all(b"\r\n");
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let limited = arlen_testkit::read_response(&mut stream).unwrap();
    assert_eq!(limited.status, 413, "{}", limited.head);

    // Upgrade: the upstream switches protocols and echoes raw bytes through the sidecar.
    let mut stream = TcpStream::connect(node.address()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(b"GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream.write_all(b"ping through the sidecar").unwrap();
    let mut echoed = [0u8; 24];
    stream.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"ping through the sidecar");
}

#[test]
fn a_dead_upstream_takes_the_node_out_of_rotation_within_a_second_and_liveness_stays() {
    let port = free_port();
    let app = upstream(port, "app-1");
    let node = sidecar(&app.url(), &[]);
    wait_ready(&node, 200);
    drop(app);
    let took = wait_ready(&node, 503);
    eprintln!("upstream stopped -> /readyz 503 after {took:?}");
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert_eq!(node.get("/livez").status, 200);
    let verbose = node.get("/readyz?verbose").text();
    assert!(verbose.contains("[-]upstream failed: upstream http://127.0.0.1"), "{verbose}");
    assert_eq!(node.get("/readyz/upstream").status, 503);
    assert_eq!(node.get("/readyz?exclude=upstream").status, 200, "the Kubernetes grammar applies");
    let probe: ProbeDocument = node.get("/readyz?format=json").document();
    assert_eq!(probe.checks.upstream.map(|upstream| upstream.ok), Some(false), "an upstream check, failing");
    assert_eq!(node.get("/clusterz").json()["upstream"]["ok"], false);
    assert!(node.get("/metrics").text().contains("arlen_upstream_up 0"));

    let _back = upstream(port, "app-1");
    wait_ready(&node, 200);
    assert!(node.get("/metrics").text().contains("arlen_upstream_up 1"));
}

#[test]
fn sigterm_drains_a_sidecar_with_a_proxied_request_in_flight() {
    let app = upstream(free_port(), "app-1");
    let mut node = sidecar(&app.url(), &[("ARLEN_SHUTDOWN_DRAIN_DELAY_SECONDS", "1")]);
    wait_ready(&node, 200);
    let address = node.address();
    let in_flight = std::thread::spawn(move || {
        send_raw(address, b"GET /slow?ms=2500 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap()
    });
    poll_until_explained(
        "the slow request to be in flight",
        Duration::from_secs(10),
        || {
            let metrics = node.get("/metrics").text();
            arlen_http::metrics::sample_value(&metrics, "arlen_http_requests_active").filter(|n| *n >= 2.0)
        },
        || node.describe(),
    );
    node.signal("TERM");
    wait_ready(&node, 503);
    let response = in_flight.join().unwrap();
    assert_eq!((response.status, response.text().as_str()), (200, "slow from app-1\n"));
    assert_eq!(node.wait_exit(Duration::from_secs(15)).code(), Some(0), "{}", node.stderr());
}

#[test]
fn checks_from_configuration_gate_readiness_and_liveness_for_any_language() {
    let app = upstream(free_port(), "checked");
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("queue-ok");
    std::fs::write(&flag, "").unwrap();
    let readiness = format!("app_db=/status/200, queue=exec:test -e {}", flag.display());
    let node = sidecar(
        &app.url(),
        &[
            ("ARLEN_CHECKS_READINESS", &readiness),
            ("ARLEN_CHECKS_LIVENESS", "worker=exec:echo progressing"),
            ("ARLEN_CHECKS_INTERVAL_MS", "100"),
        ],
    );
    wait_ready(&node, 200);
    let verbose = node.get("/readyz?verbose").text();
    assert!(verbose.contains("[+]app_db ok\n") && verbose.contains("[+]queue ok\n"), "{verbose}");
    assert!(node.get("/livez?verbose").text().contains("[+]worker ok\n"));
    let metrics = node.get("/metrics").text();
    assert!(metrics.contains("arlen_check_up{check=\"worker\",kind=\"liveness\"} 1"), "{metrics}");

    std::fs::remove_file(&flag).unwrap();
    let took = wait_ready(&node, 503);
    println!("out of rotation {took:?} after the queue check began failing");
    let single = node.get("/readyz/queue");
    assert_eq!(single.status, 503);
    assert!(single.text().contains("exited 1"), "{}", single.text());
    assert_eq!(node.get("/livez").status, 200);
    // The application keeps being served while a check of its fails.
    assert_eq!(node.get("/").status, 200);

    std::fs::write(&flag, "").unwrap();
    wait_ready(&node, 200);
}

#[test]
fn a_check_on_the_upstream_without_an_upstream_is_a_configuration_error() {
    let output = std::process::Command::new(binary())
        .args(["serve", "--port", "1", "--app-root", "/nonexistent"])
        .env_clear()
        .env("ARLEN_CHECKS_READINESS", "db=/health/db, Bad Name=exec:true")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("variable ARLEN_CHECKS_READINESS (key checks.readiness)"), "{said}");
    assert!(said.contains("check name \"Bad Name\""), "{said}");
    assert!(said.contains("db: a /path target is a GET on proxy.upstream, which is not set"), "{said}");
}

#[test]
fn the_request_id_reaches_the_application_and_every_log_line_and_the_access_log() {
    let app = upstream(free_port(), "correlated");
    let node = sidecar(
        &app.url(),
        &[("ARLEN_HTTP_KEEP_INCOMING_REQUEST_ID", "YES"), ("ARLEN_ACCESS_LOG", "YES"), ("ARLEN_LOG_FORMAT", "json")],
    );
    wait_ready(&node, 200);
    // A well-formed incoming id is kept: the application and the client see it.
    let response = arlen_testkit::get(node.address(), "/headers", &[("X-Request-Id", "checkout-7f3a.2")]).unwrap();
    let seen: serde_json::Value = response.json();
    assert_eq!(seen["x-request-id"], "checkout-7f3a.2");
    assert_eq!(response.header("X-Request-Id"), Some("checkout-7f3a.2"));
    let trace_id = response.header("X-Trace-Id").unwrap().to_owned();
    // A malformed one is replaced, and the application gets the replacement.
    let response = arlen_testkit::get(node.address(), "/headers", &[("X-Request-Id", "two words")]).unwrap();
    let seen: serde_json::Value = response.json();
    let fresh = response.header("X-Request-Id").unwrap();
    assert_eq!(fresh.len(), 32);
    assert_eq!(seen["x-request-id"], fresh);
    // A failing upstream path: its log line carries the request's ids.
    let failed = arlen_testkit::get(node.address(), "/status/503", &[("X-Request-Id", "order-42")]).unwrap();
    assert_eq!(failed.status, 503);

    let access = poll_until_explained(
        "three access lines",
        Duration::from_secs(5),
        || {
            let lines: Vec<serde_json::Value> = node
                .stderr()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|l| {
                    l["target"] == "arlen::access"
                        && !["/readyz", "/livez"].contains(&l["fields"]["path"].as_str().unwrap_or_default())
                })
                .collect();
            (lines.len() >= 3).then_some(lines)
        },
        || node.stderr(),
    );
    let first = &access[0]["fields"];
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/headers");
    assert_eq!(first["status"], 200);
    assert_eq!(first["request_id"], "checkout-7f3a.2");
    assert_eq!(first["trace_id"], trace_id.as_str());
    assert!(first["duration_ms"].as_f64().is_some() && first["bytes"].as_u64().is_some(), "{first}");
    let third = &access[2];
    assert_eq!(third["fields"]["status"], 503);
    assert_eq!(third["fields"]["request_id"], "order-42");
    assert!(third.get("span").is_none(), "the access line carries its own ids, not the span's: {third}");

    // A log line written inside a request carries the request's span: its ids.
    drop(app);
    let gone = arlen_testkit::get(node.address(), "/", &[("X-Request-Id", "after-the-app")]).unwrap();
    assert_eq!(gone.status, 502);
    let warning = poll_until_explained(
        "the proxy's warning, in the request's span",
        Duration::from_secs(5),
        || {
            node.stderr()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|l| l["fields"]["message"] == "cannot connect to the upstream")
        },
        || node.stderr(),
    );
    assert_eq!(warning["span"]["request_id"], "after-the-app", "{warning}");
    assert_eq!(warning["span"]["trace_id"].as_str().map(str::len), Some(32), "{warning}");
}
