//! Probes that cannot be starved: a real `arlen serve` whose every session is
//! held by abusive clients (`/clusterz` long-polls, with more long-polls and
//! slow request heads over the limit; written here, bounded in count and
//! time) still answers `/livez` and `/readyz` by their own rules. Slow heads
//! cannot hold sessions: with no request in flight they are idle, and with
//! every session taken a newcomer evicts one idle for 50 ms.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use arlen_testkit::{poll_until_explained, ArlenProcess};

mod support;
use support::{binary, hold_every_session, long_poll};

#[test]
fn probes_answer_by_their_own_rules_while_abusers_hold_every_session() {
    // The admin listener is where the test counts requests in flight: its
    // connections are not the service listener's sessions.
    let admin = SocketAddr::from(([127, 0, 0, 1], arlen_testkit::free_port()));
    let mut node = ArlenProcess::serve(
        binary(),
        Path::new("/nonexistent"),
        &[("ARLEN_MAX_HTTP_SESSIONS", "40"), ("ARLEN_ADMIN_LISTEN", &admin.to_string())],
    );
    node.wait_live();
    let address = node.address();
    let started = Instant::now();
    let mut polls = hold_every_session(&node, admin, 40);
    let held = polls.len();
    assert!(held <= 64, "{held} long-polls to hold 40 sessions");
    // 100 long-polls in all: at most 64 wait, the rest are told at once.
    polls.extend((held..100).map(|_| long_poll(address)));
    // Probes, meanwhile: by their own rules (one node, no quorum required: 200).
    for _ in 0..10 {
        for (path, word) in [("/livez", "live\n"), ("/readyz", "ready\n")] {
            let response = arlen_testkit::get(address, path, &[]).unwrap();
            assert_eq!((response.status, response.text().as_str()), (200, word), "{path}: {}", response.head);
        }
    }
    // The application's own paths are turned away over the limit (503, not held).
    let busy = arlen_testkit::get(address, "/", &[]).unwrap();
    assert_eq!(busy.status, 503, "{}", busy.head);
    // Those beyond the cap of 64 waits are answered at once (429, wait_limit).
    for stream in &mut polls {
        stream.set_nonblocking(true).unwrap();
    }
    let mut answered = vec![false; polls.len()];
    let told = poll_until_explained(
        "long-polls beyond the cap to be answered",
        Duration::from_secs(10),
        || {
            for (stream, seen) in polls.iter_mut().zip(answered.iter_mut()) {
                let mut head = [0u8; 12];
                if !*seen && stream.read(&mut head).is_ok_and(|n| n == 12 && &head == b"HTTP/1.1 429") {
                    *seen = true;
                }
            }
            let told = answered.iter().filter(|a| **a).count();
            (told == 100 - 64).then_some(told)
        },
        || node.describe(),
    );
    eprintln!("{told} of 100 long-polls answered at once with 429 wait_limit (within {:?})", started.elapsed());
    // 60 connections that send half a head and stop, with every session held:
    // each is dropped within the over-limit head deadline (2 s).
    let mut slow: Vec<TcpStream> = (0..60)
        .map(|_| {
            let mut stream = TcpStream::connect(address).unwrap();
            stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
            stream
        })
        .collect();
    let sent = Instant::now();
    for stream in &mut slow {
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buffer = [0u8; 1];
        let read = stream.read(&mut buffer);
        let closed = match &read {
            Ok(n) => *n == 0,
            Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        };
        assert!(closed, "an over-limit slow head still open after 5 s: {read:?}");
    }
    eprintln!("60 over-limit slow heads closed within {:?}", sent.elapsed());
    drop(polls);
    drop(slow);
    assert_eq!(node.get("/livez").status, 200);
}

#[test]
fn slow_heads_within_the_session_limit_are_closed_at_the_head_timeout_and_keep_alive_stays() {
    let mut node = ArlenProcess::serve(
        binary(),
        Path::new("/nonexistent"),
        &[("ARLEN_HEAD_TIMEOUT_MS", "300"), ("ARLEN_CONNECTION_TIMEOUT_SECONDS", "30")],
    );
    node.wait_live();
    let address = node.address();
    // A kept-alive connection that has been answered once and then idles.
    let mut kept = TcpStream::connect(address).unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    kept.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(arlen_testkit::read_response(&mut kept).unwrap().status, 200);
    // 20 slow heads, far below the session limit, and one head sent in two
    // parts in good time.
    let started = Instant::now();
    let mut slow: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut stream = TcpStream::connect(address).unwrap();
            stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
            stream.set_nonblocking(true).unwrap();
            stream
        })
        .collect();
    let mut split = TcpStream::connect(address).unwrap();
    split.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    split.write_all(b"GET /readyz HTTP/1.1\r\n").unwrap();
    split.write_all(b"Host: x\r\n\r\n").unwrap();
    assert_eq!(arlen_testkit::read_response(&mut split).unwrap().status, 200, "a head in two writes is answered");
    let mut closed = vec![false; slow.len()];
    poll_until_explained(
        "every slow head to be closed",
        Duration::from_secs(10),
        || {
            for (stream, done) in slow.iter_mut().zip(closed.iter_mut()) {
                let mut buffer = [0u8; 64];
                match stream.read(&mut buffer) {
                    Ok(_) => *done = true,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => *done = true,
                }
            }
            closed.iter().all(|c| *c).then_some(())
        },
        || node.describe(),
    );
    let elapsed = started.elapsed();
    eprintln!("20 slow heads closed {elapsed:?} after they began (head timeout 300 ms, connection timeout 30 s)");
    assert!(elapsed < Duration::from_secs(10), "closed at the head timeout, not the connection timeout");
    // The idle kept-alive connection outlived the head timeout and still serves.
    kept.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(arlen_testkit::read_response(&mut kept).unwrap().status, 200, "idle keep-alive is not a slow head");
}
