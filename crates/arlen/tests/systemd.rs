//! systemd `Type=notify` against a real unix datagram `NOTIFY_SOCKET` made
//! here: `READY=1` with a status once started, `WATCHDOG=1` at half
//! `WATCHDOG_USEC`, a new `STATUS=` when the cluster status changes, and
//! `STOPPING=1` when the drain begins.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use arlen_testkit::ArlenProcess;

mod support;
use support::binary;

/// Every datagram that arrives until `done` says so, or the deadline passes.
fn receive_until(socket: &UnixDatagram, limit: Duration, mut done: impl FnMut(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while !done(&received) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "notifications so far: {received:#?}");
        socket.set_read_timeout(Some(left)).unwrap();
        if let Ok(n) = socket.recv(&mut buffer) {
            received.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
        }
    }
    received
}

#[test]
fn the_node_notifies_ready_watchdog_status_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let path = path.to_str().unwrap().to_owned();
    let mut node = ArlenProcess::serve(
        binary(),
        Path::new("/nonexistent"),
        &[
            ("NOTIFY_SOCKET", path.as_str()),
            ("WATCHDOG_USEC", "200000"),
            ("ARLEN_CLUSTER_ENABLED", "YES"),
            ("ARLEN_CLUSTER_EXPECTED_NODES", "2"),
            ("ARLEN_CLUSTER_OBSERVED_NODES", "2"),
            ("ARLEN_SHUTDOWN_DRAIN_DELAY_SECONDS", "1"),
        ],
    );
    let received = receive_until(&socket, Duration::from_secs(10), |r| r.iter().any(|m| m.contains("READY=1")));
    let ready = received.iter().find(|m| m.contains("READY=1")).unwrap();
    assert!(ready.contains("STATUS=nominal: 2 of 2 expected observed (policy all); ready"), "{ready}");
    node.wait_live();
    // Pings at half of 200 ms: five arrive well within two seconds.
    let started = Instant::now();
    receive_until(&socket, Duration::from_secs(5), |r| r.iter().filter(|m| m.trim() == "WATCHDOG=1").count() >= 5);
    eprintln!("5 watchdog pings in {:?}", started.elapsed());
    node.signal("TERM");
    let received = receive_until(&socket, Duration::from_secs(10), |r| r.iter().any(|m| m.contains("STOPPING=1")));
    assert!(received.iter().any(|m| m.contains("STATUS=draining")), "{received:#?}");
    assert!(node.wait_exit(Duration::from_secs(20)).success());
}

#[test]
fn a_status_change_reaches_the_service_manager() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let path = path.to_str().unwrap().to_owned();
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("config")).unwrap();
    let config = root.path().join("config/app.toml");
    std::fs::write(&config, "[cluster]\nenabled = true\nexpectedNodes = 3\nobservedNodes = 3\n").unwrap();
    let mut node = ArlenProcess::serve(binary(), root.path(), &[("NOTIFY_SOCKET", path.as_str())]);
    receive_until(&socket, Duration::from_secs(10), |r| r.iter().any(|m| m.contains("READY=1")));
    node.wait_live();
    std::fs::write(&config, "[cluster]\nenabled = true\nexpectedNodes = 3\nobservedNodes = 2\n").unwrap();
    node.signal("HUP");
    let received = receive_until(&socket, Duration::from_secs(10), |r| {
        r.iter().any(|m| m.contains("STATUS=degraded: 2 of 3 expected observed"))
    });
    assert!(!received.iter().any(|m| m.contains("WATCHDOG=1")), "no watchdog without WATCHDOG_USEC: {received:#?}");
}
