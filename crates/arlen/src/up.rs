//! `arlen up`: a local cluster of real `arlen serve` processes on loopback,
//! wired by gossip (or a throwaway etcd), with a live status table until Ctrl-C.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use crate::cli::UpArgs;
use crate::cluster::{ClusterSpec, LocalCluster, LocalNode};
use crate::probe::{client, probe, NodeReport};

pub fn run(args: UpArgs) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(up(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("arlen up: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let expected = args.expected.unwrap_or(args.nodes);
    let spec = ClusterSpec {
        nodes: args.nodes,
        base_port: Some(args.base_port),
        expected,
        cluster: args.cluster.clone(),
        source: args.source,
        quorum_required: args.quorum_required,
        env: Vec::new(),
    };
    let mut cluster = LocalCluster::start(spec).await?;
    println!(
        "arlen up: {} nodes of cluster {:?}, expecting {expected}{}",
        args.nodes,
        args.cluster,
        if args.quorum_required { ", quorum required for readiness" } else { "" }
    );
    if let Some(etcd) = &cluster.etcd {
        println!(
            "  etcd    {}  pid {}  log {}",
            etcd.url,
            etcd.child.as_ref().and_then(|c| c.id()).unwrap_or(0),
            etcd.log.display()
        );
    }
    for node in &cluster.nodes {
        println!("  {}  {}  pid {}  log {}", node.id, node.url, node.pid().unwrap_or(0), node.log.display());
    }
    println!("Ctrl-C stops every node.\n");

    let result = watch(&mut cluster.nodes, args.refresh_ms).await;
    println!("\nstopping {} nodes", cluster.nodes.len());
    cluster.stop_all(|who, how| println!("  {who} {how}")).await;
    result
}

/// Refreshes the table until SIGINT/SIGTERM.
async fn watch(nodes: &mut [LocalNode], refresh_ms: u64) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let http = client(Duration::from_millis(400));
    let tty = std::io::stdout().is_terminal();
    let mut ticker = tokio::time::interval(Duration::from_millis(refresh_ms.max(50)));
    let mut last_table = String::new();
    let mut drawn_lines = 0usize;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = interrupt.recv() => return Ok(()),
            _ = terminate.recv() => return Ok(()),
        }
        let reports = futures_util::future::join_all(nodes.iter().map(|n| probe(&http, &n.url))).await;
        let exited: Vec<Option<String>> = nodes
            .iter_mut()
            .map(|n| n.child.as_mut().and_then(|c| c.try_wait().ok().flatten()).map(|status| status.to_string()))
            .collect();
        let table = render(nodes, &reports, &exited);
        if tty {
            let mut out = std::io::stdout().lock();
            if drawn_lines > 0 {
                write!(out, "\x1b[{drawn_lines}A\x1b[J")?;
            }
            write!(out, "{table}")?;
            out.flush()?;
            drawn_lines = table.lines().count();
        } else if table != last_table {
            println!("{table}");
            std::io::stdout().flush()?;
        }
        last_table = table;
    }
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
