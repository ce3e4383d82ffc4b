//! `arlen up`: a local cluster of real `arlen serve` processes on loopback,
//! wired by gossip (or a throwaway etcd), with a live status table until
//! Ctrl-C or `q`.
//!
//! Readiness is gated by quorum (`majority` unless `--quorum-policy` says
//! otherwise), so a lost node shows the survivors' readiness react. Keys act
//! on a node: a digit selects it, `k` kills it (-9), `s` stops it (SIGTERM),
//! `r` restarts it, `p` partitions it (both ways, through its fault
//! endpoint), `h` heals it. After each action the event lines say what was
//! done and how long until every other node saw it. On a terminal the table
//! is redrawn in place (stdin in raw mode); otherwise tables and events are
//! appended as plain lines, and keys are still read from stdin (a pipe).

use std::collections::VecDeque;
use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use arlen_config::Key;
use tokio::time::Instant;

use crate::cli::UpArgs;
use crate::cluster::{ClusterSpec, LocalCluster, LocalNode};
use crate::probe::{client, probe, NodeReport};

pub fn run(args: UpArgs) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(up(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            shout!("arlen up: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let expected = args.expected.unwrap_or(args.nodes);
    let token = format!("{:032x}", rand::random::<u128>());
    let gated = !args.no_quorum_gate;
    let spec = ClusterSpec {
        nodes: args.nodes,
        base_port: Some(args.base_port),
        expected,
        cluster: args.cluster.clone(),
        source: args.source,
        quorum_required: gated,
        env: vec![
            (Key::ClusterQuorumPolicy.variable(), args.quorum_policy.clone()),
            (Key::ClusterFaultInjectionEnabled.variable(), "1".to_owned()),
            (Key::ObservabilityOpsToken.variable(), token.clone()),
        ],
    };
    let note = spec.rolling_restart_note();
    let mut cluster = LocalCluster::start(spec).await?;
    say!(
        "arlen up: {} nodes of cluster {:?}, expecting {expected}; {}",
        args.nodes,
        args.cluster,
        if gated {
            format!("readiness requires quorum (policy {})", args.quorum_policy)
        } else {
            "readiness does not require quorum".to_owned()
        }
    );
    if let Some(note) = note {
        // `up` defaults to majority (a local cluster is for trying faults);
        // the contract's default, and serve's, is all.
        let origin = if args.quorum_policy == "majority" { " (up's default; serve's is all)" } else { "" };
        say!("  {note}{origin}");
    }
    if let Some(etcd) = &cluster.etcd {
        say!(
            "  etcd    {}  pid {}  log {}",
            etcd.url,
            etcd.child.as_ref().and_then(|c| c.id()).unwrap_or(0),
            etcd.log.display()
        );
    }
    for node in &cluster.nodes {
        say!("  {}  {}  pid {}  log {}", node.id, node.url, node.pid().unwrap_or(0), node.log.display());
    }
    say!("Ctrl-C or q stops every node.\n");

    let result = watch(&mut cluster, &token, args.refresh_ms).await;
    say!("\nstopping {} nodes", cluster.nodes.len());
    cluster.stop_all(|who, how| say!("  {who} {how}")).await;
    result
}

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Select(usize),
    Kill,
    Stop,
    Restart,
    Partition,
    Heal,
    Quit,
}

fn action(key: u8) -> Option<Action> {
    match key {
        b'1'..=b'9' => Some(Action::Select(usize::from(key - b'1'))),
        b'k' | b'K' => Some(Action::Kill),
        b's' | b'S' => Some(Action::Stop),
        b'r' | b'R' => Some(Action::Restart),
        b'p' | b'P' => Some(Action::Partition),
        b'h' | b'H' => Some(Action::Heal),
        b'q' | b'Q' | 3 => Some(Action::Quit),
        _ => None,
    }
}

const KEYS_FOOTER: &str =
    "keys: 1-9 select a node · k kill -9 · s stop (SIGTERM) · r restart · p partition · h heal · q quit";

/// Raw mode on the terminal (no echo, no line buffering) until dropped.
struct RawTerminal {
    saved: nix::sys::termios::Termios,
}

impl RawTerminal {
    fn enable() -> Option<Self> {
        use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg, SpecialCharacterIndices};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.local_flags.remove(LocalFlags::ICANON | LocalFlags::ECHO);
        raw.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
        raw.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(Self { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, &self.saved);
    }
}

/// Keys from stdin (a terminal in raw mode, or a pipe), until it ends. A
/// plain thread: a blocked read must not hold up the runtime's shutdown.
fn read_keys() -> tokio::sync::mpsc::Receiver<u8> {
    use std::io::Read as _;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buffer = [0u8; 64];
        while let Ok(n) = stdin.read(&mut buffer) {
            if n == 0 {
                return;
            }
            for key in &buffer[..n] {
                if tx.blocking_send(*key).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// An action whose effect is being timed: until every other node stops (or
/// starts again) counting `node`.
struct Pending {
    node: usize,
    since: Instant,
    /// True: wait until the node is counted by everyone; false: by nobody else.
    back: bool,
    what: String,
}

/// The event lines under the table.
struct Events {
    started: Instant,
    lines: VecDeque<String>,
    tty: bool,
}

impl Events {
    fn push(&mut self, line: String) {
        let line = format!("[{:>7.2}s] {line}", self.started.elapsed().as_secs_f64());
        if !self.tty {
            say!("{line}");
        }
        if self.lines.len() == 8 {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }
}

/// Refreshes the table and acts on keys until SIGINT, SIGTERM or `q`.
async fn watch(cluster: &mut LocalCluster, token: &str, refresh_ms: u64) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let http = client(Duration::from_millis(400));
    let tty = std::io::stdout().is_terminal();
    let _raw = if std::io::stdin().is_terminal() { RawTerminal::enable() } else { None };
    let mut keys = read_keys();
    let mut keys_open = true;
    if !tty {
        say!("{KEYS_FOOTER}");
    }
    let mut events = Events { started: Instant::now(), lines: VecDeque::new(), tty };
    let mut selected = 0usize;
    let mut pending: Vec<Pending> = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(refresh_ms.max(50)));
    let mut last_table = String::new();
    let mut screen = if tty { Some(Screen::enter()?) } else { None };
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            key = keys.recv(), if keys_open => match key.and_then(action) {
                Some(Action::Quit) => return Ok(()),
                Some(Action::Select(node)) if node < cluster.nodes.len() => {
                    selected = node;
                    if !tty {
                        events.push(format!("selected {}", cluster.nodes[node].id));
                    }
                }
                Some(act @ (Action::Kill | Action::Stop | Action::Restart | Action::Partition | Action::Heal)) => {
                    if let Some(timed) = act_on(cluster, &http, token, selected, act, &mut events).await {
                        pending.push(timed);
                    }
                }
                Some(Action::Select(_)) => {}
                None => keys_open = key.is_some(),
            },
            _ = interrupt.recv() => return Ok(()),
            _ = terminate.recv() => return Ok(()),
        }
        let reports = futures_util::future::join_all(cluster.nodes.iter().map(|n| probe(&http, &n.url))).await;
        let exited: Vec<Option<String>> = cluster
            .nodes
            .iter_mut()
            .map(|n| n.child.as_mut().and_then(|c| c.try_wait().ok().flatten()).map(|status| status.to_string()))
            .collect();
        settle(&mut pending, &cluster.nodes, &reports, &exited, &mut events);
        let table = render(&cluster.nodes, &reports, &exited);
        if let Some(screen) = screen.as_mut() {
            let mut lines: Vec<String> = table.lines().map(str::to_owned).collect();
            lines.push(String::new());
            lines.extend(events.lines.iter().cloned());
            lines.push(String::new());
            lines.push(format!("{KEYS_FOOTER} · selected: {}", cluster.nodes[selected].id));
            let (width, height) = crossterm::terminal::size().unwrap_or((80, 24));
            screen.draw(&mut std::io::stdout().lock(), lines, width, height)?;
        } else if table != last_table {
            say!("{table}");
            std::io::stdout().flush()?;
        }
        last_table = table;
    }
}

/// Why `p`/`h` do nothing under a source without fault rules.
fn partition_unavailable(id: &str, source: crate::cli::UpSource) -> String {
    format!(
        "{id}: nothing cut — p and h cut and heal a node's gossip through its fault endpoint, and the {} source \
         has no gossip. k (kill -9) or s (stop) show a node leaving; `arlen up --source gossip` has p and h",
        source.name()
    )
}

/// The live table on a terminal: drawn on the alternate screen from its
/// top-left corner every time, each line cut to the terminal's width and
/// the frame to its height, so no line ever wraps into rows a redraw does
/// not know of (a 70-column terminal re-stacked the table when the redraw
/// moved up by lines, not rows). On drop the normal screen is back, with
/// the last frame printed on it.
struct Screen {
    last: Vec<String>,
}

impl Screen {
    fn enter() -> std::io::Result<Self> {
        crossterm::execute!(std::io::stdout(), crossterm::terminal::EnterAlternateScreen, crossterm::cursor::Hide)?;
        Ok(Self { last: Vec::new() })
    }

    fn draw(
        &mut self,
        out: &mut impl std::io::Write,
        lines: Vec<String>,
        width: u16,
        height: u16,
    ) -> std::io::Result<()> {
        use crossterm::{cursor::MoveTo, queue, style::Print, terminal::Clear, terminal::ClearType};
        queue!(out, MoveTo(0, 0), Clear(ClearType::All))?;
        for (row, line) in frame(&lines, width, height).into_iter().enumerate() {
            queue!(out, MoveTo(0, u16::try_from(row).unwrap_or(u16::MAX)), Print(line))?;
        }
        out.flush()?;
        self.last = lines;
        Ok(())
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let mut out = std::io::stdout();
        let _ = crossterm::execute!(out, crossterm::cursor::Show, crossterm::terminal::LeaveAlternateScreen);
        for line in &self.last {
            let _ = std::io::Write::write_fmt(&mut out, format_args!("{line}\n"));
        }
    }
}

/// What fits a `width` × `height` terminal: lines cut at `width` characters
/// (an ellipsis marks the cut), at most `height` of them.
fn frame(lines: &[String], width: u16, height: u16) -> Vec<String> {
    let width = usize::from(width.max(1));
    lines
        .iter()
        .take(usize::from(height.max(1)))
        .map(|line| {
            if line.chars().count() <= width {
                line.clone()
            } else {
                let mut cut: String = line.chars().take(width - 1).collect();
                cut.push('…');
                cut
            }
        })
        .collect()
}

/// Does what a key asked to node `index`; returns what to time.
async fn act_on(
    cluster: &mut LocalCluster,
    http: &reqwest::Client,
    token: &str,
    index: usize,
    act: Action,
    events: &mut Events,
) -> Option<Pending> {
    let id = cluster.nodes[index].id.clone();
    let timed = |back: bool, what: String| Some(Pending { node: index, since: Instant::now(), back, what });
    let running = cluster.nodes[index].child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)));
    match act {
        Action::Kill if running => {
            events.push(format!("{id}: kill -9"));
            cluster.kill(index).await;
            timed(false, format!("{id} killed"))
        }
        Action::Stop if running => {
            events.push(format!("{id}: SIGTERM (drains, tells its peers, stops)"));
            cluster.terminate(index);
            timed(false, format!("{id} stopped"))
        }
        Action::Restart => {
            if running {
                events.push(format!("{id}: SIGTERM, then start again"));
                cluster.terminate(index);
                cluster.wait_exit(index, Duration::from_secs(15)).await;
            } else {
                events.push(format!("{id}: start"));
                cluster.nodes[index].child = None;
            }
            match cluster.spawn(index) {
                Ok(()) => timed(true, format!("{id} restarted")),
                Err(error) => {
                    events.push(format!("{id}: cannot start: {error}"));
                    None
                }
            }
        }
        Action::Partition | Action::Heal
            if !cluster.spec.source.offers().contains(&crate::cli::Capability::FaultRules) =>
        {
            events.push(partition_unavailable(&id, cluster.spec.source));
            None
        }
        Action::Partition | Action::Heal if running => {
            let url = format!("{}/_arlen/faults", cluster.nodes[index].url);
            let partition = act == Action::Partition;
            let request = if partition {
                http.put(&url).json(&arlen_wire::faults::FaultsBody::rules(vec![arlen_wire::faults::FaultRule::cut(
                    None,
                    arlen_wire::faults::Direction::Both,
                )]))
            } else {
                http.delete(&url)
            };
            match request.bearer_auth(token).send().await {
                Ok(response) if response.status().is_success() => {
                    let (said, what) = if partition {
                        ("partitioned: its gossip is cut both ways", "partitioned")
                    } else {
                        ("healed: its fault rules are removed", "healed")
                    };
                    events.push(format!("{id} {said}"));
                    timed(!partition, format!("{id} {what}"))
                }
                Ok(response) => {
                    events.push(format!("{id}: the fault endpoint answered {}", response.status()));
                    None
                }
                Err(error) => {
                    events.push(format!("{id}: the fault endpoint did not answer: {error}"));
                    None
                }
            }
        }
        _ => {
            events.push(format!("{id} is not running; r starts it"));
            None
        }
    }
}

/// Reports the actions whose effect every other node now sees, with how long it took.
fn settle(
    pending: &mut Vec<Pending>,
    nodes: &[LocalNode],
    reports: &[NodeReport],
    exited: &[Option<String>],
    events: &mut Events,
) {
    pending.retain(|p| {
        let id = &nodes[p.node].id;
        let observers: Vec<&NodeReport> = reports
            .iter()
            .enumerate()
            .filter(|(i, r)| *i != p.node && r.reachable && exited[*i].is_none())
            .map(|(_, r)| r)
            .collect();
        let counted = |r: &NodeReport| r.alive_members().iter().any(|m| m == id);
        let done = if p.back {
            reports[p.node].reachable && observers.iter().all(|r| counted(r))
        } else {
            observers.iter().all(|r| !counted(r))
        };
        let elapsed = p.since.elapsed();
        if done {
            let readiness: Vec<String> = nodes
                .iter()
                .zip(reports)
                .filter(|(_, r)| r.reachable)
                .map(|(n, r)| format!("{} {}", n.id, if r.ready == Some(true) { "ready" } else { "not ready" }))
                .collect();
            let seen = if p.back { "counted by every node again" } else { "no longer counted by the others" };
            events.push(format!(
                "{}: {seen} after {} ms; {}",
                p.what,
                elapsed.as_millis(),
                if readiness.is_empty() { "no node answers".to_owned() } else { readiness.join(", ") }
            ));
            return false;
        }
        if elapsed > Duration::from_secs(30) {
            events.push(format!("{}: not seen by every node within 30 s", p.what));
            return false;
        }
        true
    });
}

fn render(nodes: &[LocalNode], reports: &[NodeReport], exited: &[Option<String>]) -> String {
    let mut rows = vec![["NODE", "URL", "STATUS", "OBSERVED", "READY", "MEMBERS"].map(str::to_owned)];
    for ((node, report), exited) in nodes.iter().zip(reports).zip(exited) {
        let (status, observed, ready, members) = match (report.reachable, exited) {
            (_, Some(how)) => (format!("exited ({how})"), "-".into(), "-".into(), "-".into()),
            (false, None) => ("unreachable".into(), "-".into(), "-".into(), "-".into()),
            (true, None) => (
                report.status().to_owned(),
                format!("{}/{}", report.observed().unwrap_or(0), report.expected().unwrap_or(0)),
                if report.ready == Some(true) { "yes".into() } else { "no".into() },
                report.alive_members().join(","),
            ),
        };
        rows.push([node.id.clone(), node.url.clone(), status, observed, ready, members]);
    }
    let widths: Vec<usize> = (0..6).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_fits_any_terminal() {
        let lines: Vec<String> =
            vec!["NODE    URL                     REACHABLE  READY".into(), "short".into(), "x".repeat(200)];
        for width in [1u16, 20, 70, 80, 300] {
            for line in frame(&lines, width, 24) {
                assert!(line.chars().count() <= usize::from(width), "{width}: {line:?}");
            }
        }
        assert_eq!(frame(&lines, 70, 2).len(), 2);
        assert_eq!(frame(&lines, 10, 24)[0], "NODE    U…");
        assert_eq!(frame(&lines, 10, 24)[1], "short");
    }

    #[test]
    fn a_redraw_starts_at_the_top_left_and_clears_whatever_was_there() {
        let mut screen = Screen { last: Vec::new() };
        let mut bytes = Vec::new();
        screen.draw(&mut bytes, vec!["a".repeat(100), "b".into()], 70, 24).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        // CSI 1;1 H (home), CSI 2 J (clear), then each row placed by its own move.
        assert!(text.starts_with("\x1b[1;1H\x1b[2J\x1b[1;1H"), "{text:?}");
        assert!(text.contains("\x1b[2;1Hb"), "{text:?}");
        assert!(!text.contains(&"a".repeat(70)), "a line wider than the terminal: {text:?}");
        std::mem::forget(screen); // not a terminal: nothing to leave
    }

    #[test]
    fn partition_keys_under_etcd_say_why_nothing_happens() {
        let said = partition_unavailable("node-2", crate::cli::UpSource::Etcd);
        assert!(said.starts_with("node-2: nothing cut") && said.contains("etcd source has no gossip"), "{said}");
        assert!(!crate::cli::UpSource::Etcd.offers().contains(&crate::cli::Capability::FaultRules));
    }
}
