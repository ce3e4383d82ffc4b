//! `arlen triage`: the contract's triage workflow (CONTRACT §5) in one
//! command — readiness JSON, `/clusterz`, and the `X-Arlen-*` headers of
//! sampled requests, for every node — with findings in plain words.
//!
//! Exit status: 0 nominal, 1 degraded, 2 partitioned or disagreeing views,
//! 3 some node unreachable (the highest that applies).

use std::collections::BTreeSet;
use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use arlen_http::documents::{ClusterDocument, ProbeDocument};
use arlen_triage::{
    analyze, followable, normalise, parse_document, printable, render, Discovery, Finding, HeaderSample, NodeReport,
    Verdict, MAX_DOCUMENT_BYTES,
};
use serde::Serialize;

use crate::cli::TriageArgs;

#[derive(Serialize)]
struct JsonReport<'a> {
    nodes: &'a [NodeReport],
    findings: &'a [Finding],
    verdict: Verdict,
    exit_code: u8,
}

pub fn run(args: TriageArgs) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    ExitCode::from(runtime.block_on(triage(args)))
}

async fn triage(args: TriageArgs) -> u8 {
    let client = crate::probe::client(Duration::from_millis(args.timeout_ms));
    if let Some(node) = &args.can_stop {
        return can_stop(&client, &args, node).await;
    }
    let tty = std::io::stdout().is_terminal();
    let mut drawn = 0usize;
    loop {
        let (reports, discovery) = collect(&client, &args).await;
        let (mut findings, mut code) = analyze(&reports);
        let left_out = discovery.findings(args.max_nodes);
        if !left_out.is_empty() {
            code = code.max(Verdict::Partitioned);
            findings.extend(left_out);
        }
        let text = if args.json {
            serde_json::to_string_pretty(&JsonReport {
                nodes: &reports,
                findings: &findings,
                verdict: code,
                exit_code: code.exit_code(),
            })
            .expect("json")
                + "\n"
        } else {
            render(&reports, &findings, code)
        };
        if args.watch && tty && drawn > 0 {
            say_raw!("\x1b[{drawn}A\x1b[J");
        }
        // Everything in it came from nodes: no control character reaches the terminal.
        let text = printable(&text);
        say_raw!("{text}");
        let _ = std::io::stdout().flush();
        drawn = text.lines().count();
        if !args.watch {
            return code.exit_code();
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(args.interval_ms)) => {}
            _ = tokio::signal::ctrl_c() => return code.exit_code(),
        }
        if !tty {
            say!();
        }
    }
}

/// Reads every node given, and every member they name — within the first
/// node's cluster, over http(s) only, at most `--max-nodes` nodes, within
/// `--deadline-ms`. A member could otherwise keep naming new members.
async fn collect(client: &reqwest::Client, args: &TriageArgs) -> (Vec<NodeReport>, Discovery) {
    let mut queue: Vec<String> = args.urls.iter().map(|u| normalise(u)).collect();
    let mut seen: BTreeSet<String> = queue.iter().cloned().collect();
    let mut reports: Vec<NodeReport> = Vec::new();
    let mut discovery = Discovery::default();
    let mut cluster: Option<String> = None;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(args.deadline_ms);
    let given = queue.len();
    while !queue.is_empty() {
        let batch = std::mem::take(&mut queue);
        let reads = futures_util::future::join_all(batch.iter().map(|url| read_node(client, url, args)));
        let Ok(results) = tokio::time::timeout_at(deadline, reads).await else {
            discovery.deadline_hit = true;
            for url in batch {
                reports.push(NodeReport {
                    url,
                    error: Some("not read before the triage deadline".into()),
                    ..NodeReport::default()
                });
            }
            break;
        };
        for report in results {
            let discovered = reports.len() >= given;
            if cluster.is_none() {
                cluster = report.cluster.clone();
            }
            if discovered && report.cluster.is_some() && report.cluster != cluster {
                discovery.foreign.push(format!("{} ({})", report.url, report.cluster.as_deref().unwrap_or("?")));
                continue;
            }
            for member in &report.member_urls {
                let Some(member) = followable(member) else {
                    discovery.not_http += 1;
                    continue;
                };
                if seen.contains(&member) {
                    continue;
                }
                if seen.len() >= args.max_nodes.max(1) {
                    discovery.beyond_limit += 1;
                    continue;
                }
                seen.insert(member.clone());
                queue.push(member);
            }
            reports.push(report);
        }
    }
    arlen_triage::name_unreachable(&mut reports);
    reports.sort_by(|a, b| a.node_id.cmp(&b.node_id).then(a.url.cmp(&b.url)));
    (reports, discovery)
}

/// `--can-stop NODE`: the node's own maintenance verdict, as an exit status.
async fn can_stop(client: &reqwest::Client, args: &TriageArgs, node: &str) -> u8 {
    let (reports, _) = collect(client, args).await;
    let wanted = normalise(node);
    let Some(report) = reports.iter().find(|r| r.node_id.as_deref() == Some(node) || r.url == wanted) else {
        let known: Vec<String> = reports.iter().map(|r| r.node_id.clone().unwrap_or_else(|| r.url.clone())).collect();
        say!("{}", printable(&format!("{node}: not found among {}", known.join(", "))));
        return 3;
    };
    let url = format!("{}/clusterz?maintenance=true", report.url);
    match get_document::<ClusterDocument>(client, &url).await {
        Ok((status, document)) => match (status, document.maintenance) {
            (200 | 412, Some(verdict)) => {
                let answer = if verdict.can_stop { "yes" } else { "no" };
                say!("{}", printable(&format!("{node} may stop now: {answer} — {}", verdict.reason)));
                if verdict.can_stop {
                    0
                } else {
                    1
                }
            }
            (status, _) => {
                say!("{}", printable(&format!("{node}: {url} answered {status} without a maintenance verdict")));
                3
            }
        },
        Err(error) => {
            say!("{}", printable(&format!("{node} does not answer: {error}")));
            3
        }
    }
}

/// A node document, its body bounded before it is parsed.
async fn get_document<T: serde::de::DeserializeOwned>(client: &reqwest::Client, url: &str) -> Result<(u16, T), String> {
    let mut request = client.get(url);
    if let Some(authorization) = crate::probe::details_authorization() {
        request = request.header(reqwest::header::AUTHORIZATION, authorization);
    }
    let mut response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("{url}: {e}"))? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("{url}: a document of more than {MAX_DOCUMENT_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    let document = parse_document(&body).map_err(|e| format!("{url}: {e}"))?;
    Ok((status, document))
}

async fn read_node(client: &reqwest::Client, url: &str, args: &TriageArgs) -> NodeReport {
    let ready = get_document::<ProbeDocument>(client, &format!("{url}/readyz?format=json")).await;
    let clusterz = get_document::<ClusterDocument>(client, &format!("{url}/clusterz")).await;
    let mut report = match (ready, clusterz) {
        (Ok((status, ready)), Ok((_, clusterz))) => NodeReport::from_documents(url, status, &ready, &clusterz),
        (Err(error), _) | (_, Err(error)) => {
            return NodeReport { url: url.to_owned(), error: Some(error), ..NodeReport::default() };
        }
    };
    for _ in 0..args.samples {
        match client.get(format!("{url}{}", args.path)).send().await {
            Ok(response) => {
                let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
                report.samples.push(HeaderSample {
                    http_status: response.status().as_u16(),
                    node: header(arlen_wire::headers::NODE),
                    status: header(arlen_wire::headers::CLUSTER_STATUS).and_then(|v| v.parse().ok()),
                    observed: header(arlen_wire::headers::CLUSTER_OBSERVED_NODES).and_then(|v| v.parse().ok()),
                    expected: header(arlen_wire::headers::CLUSTER_EXPECTED_NODES).and_then(|v| v.parse().ok()),
                });
            }
            Err(error) => {
                report.samples.push(HeaderSample::default());
                report.error = Some(format!("sampling {}: {error}", args.path));
            }
        }
    }
    report.status_after = get_document::<ClusterDocument>(client, &format!("{url}/clusterz"))
        .await
        .ok()
        .map(|(_, doc)| doc.cluster.quorum.status);
    report
}
