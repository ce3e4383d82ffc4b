//! Triage analysis (CONTRACT §5): what the documents and headers read from
//! a set of nodes say about the cluster — findings in plain words and an exit
//! status. Pure: `arlen triage` does the HTTP, this crate decides. Everything
//! here comes from nodes and is hostile: documents are bounded before they
//! are parsed, discovery is bounded, and [`printable`] escapes what reaches a
//! terminal.
//!
//! Exit status: 0 nominal, 1 degraded, 2 partitioned or disagreeing views,
//! 3 some node unreachable (the highest that applies).

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};

use arlen_wire::documents::{ClusterDocument, ProbeDocument};
use arlen_wire::states::{MemberState, QuorumStatus};
use serde::Serialize;

/// The largest node document read (a `/clusterz` of the largest cluster is far smaller).
pub const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;

/// Reads a node document (`/clusterz`, a probe's JSON) from its body.
pub fn parse_document<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    if body.len() > MAX_DOCUMENT_BYTES {
        return Err(format!("a document of more than {MAX_DOCUMENT_BYTES} bytes"));
    }
    serde_json::from_slice(body).map_err(|e| format!("not an Arlen document: {e}"))
}

/// The headers of one sampled request.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct HeaderSample {
    pub http_status: u16,
    pub node: Option<String>,
    pub status: Option<QuorumStatus>,
    pub observed: Option<u64>,
    pub expected: Option<u64>,
}

/// Everything triage learned about one node.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeReport {
    pub url: String,
    pub reachable: bool,
    pub error: Option<String>,
    pub node_id: Option<String>,
    pub ready: Option<bool>,
    pub quorum_required: Option<bool>,
    pub status: Option<QuorumStatus>,
    pub observed: Option<u64>,
    pub expected: Option<u64>,
    pub policy: Option<String>,
    pub source: Option<String>,
    pub draining: Option<bool>,
    pub generation: Option<u64>,
    /// The cluster name this node reports.
    pub cluster: Option<String>,
    /// Node ids this node counts alive.
    pub sees: Vec<String>,
    /// Other members' URLs, for discovery.
    #[serde(skip)]
    pub member_urls: Vec<String>,
    /// The node withheld member details from triage (`observability.detailsAccess`).
    pub details_restricted: bool,
    /// Every member this node knows, as it sees them (itself included).
    pub members: Vec<MemberView>,
    /// For a node that did not answer: its id, learnt from its peers' views.
    pub named_by_peers: bool,
    pub samples: Vec<HeaderSample>,
    /// The node's recent verdicts about others, explained (`down` and
    /// `suspect` ones, newest last; empty when details are restricted).
    pub accusations: Vec<String>,
    /// `/clusterz` status read again after sampling (to tell change from contradiction).
    #[serde(skip)]
    pub status_after: Option<QuorumStatus>,
    /// What the node says of its zones ("survives the loss of zone b; not
    /// of zone a"), when its members name zones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone_summary: Option<String>,
}

/// One member as one node sees it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MemberView {
    pub node_id: String,
    pub state: MemberState,
    pub last_heard_ms: Option<u64>,
    #[serde(skip)]
    pub url: Option<String>,
    /// Its software version, when it told (and details are not restricted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub software: Option<String>,
    /// How it answers this node's probes, and why (gossip).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reachability: Option<arlen_wire::states::Reachability>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reachability_explanation: Option<String>,
}

/// A finding, in plain words.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Finding {
    pub kind: &'static str,
    pub message: String,
}

impl NodeReport {
    /// A reachable node's report from its readiness answer (`ready_status`,
    /// the probe document) and its `/clusterz` document.
    pub fn from_documents(url: &str, ready_status: u16, ready: &ProbeDocument, clusterz: &ClusterDocument) -> Self {
        let cluster = &clusterz.cluster;
        Self {
            url: url.to_owned(),
            reachable: true,
            ready: Some(ready_status == 200),
            quorum_required: Some(ready.checks.cluster_quorum.required_for_readyz),
            node_id: Some(cluster.node_id.clone()),
            cluster: Some(cluster.name.clone()),
            status: Some(cluster.quorum.status),
            observed: Some(u64::from(cluster.observed_nodes)),
            expected: Some(u64::from(cluster.expected_nodes)),
            policy: Some(cluster.quorum.policy.clone()),
            source: Some(clusterz.coordination.membership_source.to_string()),
            draining: Some(cluster.lifecycle.draining),
            generation: Some(cluster.generation),
            sees: clusterz.alive_members().map(str::to_owned).collect::<BTreeSet<_>>().into_iter().collect(),
            member_urls: cluster.members.iter().filter(|m| !m.is_self).filter_map(|m| m.http_url.clone()).collect(),
            details_restricted: clusterz.details == arlen_wire::documents::RESTRICTED,
            members: cluster
                .members
                .iter()
                .map(|m| MemberView {
                    node_id: m.node_id.clone(),
                    state: m.state,
                    last_heard_ms: m.last_heard_ms,
                    url: m.http_url.as_deref().and_then(followable),
                    software: m.software().as_deref().map(printable),
                    reachability: m.reachability,
                    reachability_explanation: m.evidence.as_ref().map(|e| printable(&e.explanation)),
                })
                .collect(),
            zone_summary: cluster.quorum.zone_summary.as_deref().map(printable),
            accusations: {
                let lines: Vec<String> = cluster
                    .accusations
                    .iter()
                    .flatten()
                    .filter(|a| a.verdict != "refuted")
                    .map(|a| format!("{}: {}", a.at, printable(&a.explanation)))
                    .collect();
                lines[lines.len().saturating_sub(5)..].to_vec()
            },
            ..Self::default()
        }
    }
}

/// `text` with every control character but the line breaks escaped
/// (`\u{1b}`), so a node cannot send escape sequences to the operator's terminal.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

pub fn normalise(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    if url.starts_with("http://") || url.starts_with("https://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    }
}

/// A member URL that discovery may follow: explicitly http(s).
pub fn followable(url: &str) -> Option<String> {
    let url = url.trim().trim_end_matches('/');
    (url.starts_with("http://") || url.starts_with("https://")).then(|| url.to_owned())
}

/// What discovery left out, for the findings.
#[derive(Debug, Default)]
pub struct Discovery {
    /// Member URLs not followed because the node limit was reached.
    pub beyond_limit: usize,
    /// Nodes that answered for another cluster (named), not counted.
    pub foreign: Vec<String>,
    /// Member URLs that are not http(s), not followed.
    pub not_http: usize,
    pub deadline_hit: bool,
}

impl Discovery {
    pub fn findings(&self, max_nodes: usize) -> Vec<Finding> {
        let mut findings = Vec::new();
        if self.beyond_limit > 0 {
            findings.push(Finding {
                kind: "discovery_limit",
                message: format!(
                    "discovery stopped at {max_nodes} nodes; {} more member URLs were not followed (--max-nodes)",
                    self.beyond_limit
                ),
            });
        }
        if !self.foreign.is_empty() {
            findings.push(Finding {
                kind: "foreign_cluster",
                message: format!(
                    "members that answered for another cluster were left out: {}",
                    self.foreign.join(", ")
                ),
            });
        }
        if self.not_http > 0 {
            findings.push(Finding {
                kind: "not_http",
                message: format!("{} member URLs are not http(s) and were not followed", self.not_http),
            });
        }
        if self.deadline_hit {
            findings.push(Finding {
                kind: "deadline",
                message: "the triage deadline ended discovery (--deadline-ms)".into(),
            });
        }
        findings
    }
}

/// Gives each node that did not answer the id its peers know it by (the
/// member whose URL is the one that was tried).
pub fn name_unreachable(reports: &mut [NodeReport]) {
    let known: Vec<(String, String)> = reports
        .iter()
        .filter(|r| r.reachable)
        .flat_map(|r| r.members.iter().filter_map(|m| Some((m.url.clone()?, m.node_id.clone()))))
        .collect();
    for report in reports.iter_mut().filter(|r| !r.reachable && r.node_id.is_none()) {
        if let Some((_, id)) = known.iter().find(|(url, _)| *url == report.url) {
            report.node_id = Some(id.clone());
            report.named_by_peers = true;
        }
    }
}

/// How the reachable nodes see member `id`: `(observer, state, last heard)`.
pub fn peer_views<'a>(reports: &'a [NodeReport], id: &str) -> Vec<(String, &'a str, Option<u64>)> {
    reports
        .iter()
        .filter(|r| r.reachable && r.node_id.as_deref() != Some(id))
        .filter_map(|r| {
            let member = r.members.iter().filter(|m| m.node_id == id).min_by_key(|m| m.state != MemberState::Alive)?;
            Some((name(r), member.state.as_str(), member.last_heard_ms))
        })
        .collect()
}

fn describe_views(views: &[(String, &str, Option<u64>)]) -> String {
    let parts: Vec<String> = views
        .iter()
        .map(|(observer, state, heard)| match heard {
            Some(ms) => format!("{observer}: {state}, last heard {:.1} s ago", *ms as f64 / 1000.0),
            None => format!("{observer}: {state}"),
        })
        .collect();
    parts.join("; ")
}

/// Who sees whom: rows are the nodes that answered, columns every member any
/// of them knows; `None` when every observer sees the same states.
pub fn reachability_matrix(reports: &[NodeReport]) -> Option<String> {
    let observers: Vec<&NodeReport> = reports.iter().filter(|r| r.reachable && !r.members.is_empty()).collect();
    let columns: BTreeSet<&str> = observers.iter().flat_map(|r| r.members.iter().map(|m| m.node_id.as_str())).collect();
    let state_in = |r: &NodeReport, id: &str| -> String {
        if r.node_id.as_deref() == Some(id) {
            return "self".to_owned();
        }
        r.members
            .iter()
            .filter(|m| m.node_id == id)
            .min_by_key(|m| m.state != MemberState::Alive)
            .map_or("-".to_owned(), |m| m.state.to_string())
    };
    let rows: Vec<Vec<String>> = observers.iter().map(|r| columns.iter().map(|id| state_in(r, id)).collect()).collect();
    // Views differ when two observers disagree about a member other than themselves.
    let differs = columns.iter().enumerate().any(|(c, _)| {
        let seen: BTreeSet<&str> = rows.iter().map(|row| row[c].as_str()).filter(|s| *s != "self").collect();
        seen.len() > 1
    });
    if !differs {
        return None;
    }
    let mut table = vec![std::iter::once("OBSERVER \\ MEMBER".to_owned())
        .chain(columns.iter().map(|c| (*c).to_owned()))
        .collect::<Vec<_>>()];
    for (r, row) in observers.iter().zip(rows) {
        table.push(std::iter::once(name(r)).chain(row).collect());
    }
    let widths: Vec<usize> =
        (0..table[0].len()).map(|c| table.iter().map(|row| row[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::from("who sees whom:\n");
    for row in &table {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:w$}")).collect();
        out.push_str("  ");
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    Some(out)
}

fn name(report: &NodeReport) -> String {
    report.node_id.clone().unwrap_or_else(|| report.url.clone())
}

/// The triage verdict, worst first when ordered: also the exit status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every node reachable, nominal, and agreeing (exit 0).
    #[default]
    Nominal = 0,
    /// Some node reports degraded or draining (exit 1).
    Degraded = 1,
    /// Some node partitioned, or the nodes' views disagree (exit 2).
    Partitioned = 2,
    /// Some node did not answer (exit 3).
    Unreachable = 3,
}

impl Verdict {
    /// The process exit status.
    pub fn exit_code(self) -> u8 {
        self as u8
    }

    fn describe(self) -> &'static str {
        match self {
            Verdict::Nominal => "nominal",
            Verdict::Degraded => "degraded",
            Verdict::Partitioned => "partitioned or disagreeing views",
            Verdict::Unreachable => "some node unreachable",
        }
    }
}

/// Findings and the verdict, from what was collected. Pure.
pub fn analyze(reports: &[NodeReport]) -> (Vec<Finding>, Verdict) {
    let mut found = Found::default();
    unreachable_nodes(reports, &mut found);
    let reachable: Vec<&NodeReport> = reports.iter().filter(|r| r.reachable).collect();
    for r in &reachable {
        node_state(r, &mut found);
        header_samples(r, &mut found);
    }
    restricted_details(&reachable, &mut found);
    mixed_versions(&reachable, &mut found);
    zone_tolerance(&reachable, &mut found);
    gray_failures(&reachable, &mut found);
    disagreement(&reachable, &mut found);
    (found.findings, found.verdict)
}

/// The findings so far and the verdict they add up to.
#[derive(Default)]
struct Found {
    findings: Vec<Finding>,
    verdict: Verdict,
}

impl Found {
    /// A finding that sets the verdict to at least `verdict`.
    fn raise(&mut self, verdict: Verdict, kind: &'static str, message: String) {
        self.verdict = self.verdict.max(verdict);
        self.findings.push(Finding { kind, message });
    }

    /// A finding that changes no verdict.
    fn note(&mut self, kind: &'static str, message: String) {
        self.findings.push(Finding { kind, message });
    }
}

/// Nodes that did not answer, named by their peers when they can be.
fn unreachable_nodes(reports: &[NodeReport], found: &mut Found) {
    for r in reports.iter().filter(|r| !r.reachable) {
        let views = r.node_id.as_deref().map(|id| peer_views(reports, id)).unwrap_or_default();
        let who = match &r.node_id {
            Some(id) => format!("{id} ({})", r.url),
            None => r.url.clone(),
        };
        let peers =
            if views.is_empty() { String::new() } else { format!("; its peers see it: {}", describe_views(&views)) };
        found.raise(
            Verdict::Unreachable,
            "unreachable",
            format!("{who} did not answer: {}{peers}", r.error.as_deref().unwrap_or("no answer")),
        );
    }
}

/// What one node says of itself: partitioned, degraded, out of rotation, draining.
fn node_state(r: &NodeReport, found: &mut Found) {
    let counts = format!("{} of {} expected observed", r.observed.unwrap_or(0), r.expected.unwrap_or(0));
    match r.status {
        Some(QuorumStatus::Partitioned) => found.raise(
            Verdict::Partitioned,
            "partitioned",
            format!("{} reports partitioned: it observes no node ({counts})", name(r)),
        ),
        Some(QuorumStatus::Degraded) => {
            found.raise(Verdict::Degraded, "degraded", format!("{} reports degraded: {counts}", name(r)))
        }
        Some(QuorumStatus::Nominal | QuorumStatus::SingleNode) | None => {}
    }
    if r.quorum_required == Some(true) && r.ready == Some(false) && r.status != Some(QuorumStatus::Nominal) {
        found.raise(
            Verdict::Degraded,
            "quorum_unmet",
            format!(
                "{} requires quorum for readiness and does not have it (policy {}, {counts}): /readyz is 503, it is out of rotation",
                name(r),
                r.policy.as_deref().unwrap_or("all")
            ),
        );
    }
    if r.draining == Some(true) {
        found.raise(Verdict::Degraded, "draining", format!("{} is draining (shutting down, out of rotation)", name(r)));
    }
}

/// Sampled response headers that contradict the node's own `/clusterz`.
fn header_samples(r: &NodeReport, found: &mut Found) {
    for sample in &r.samples {
        let contradicts = sample.status.is_some() && sample.status != r.status && sample.status != r.status_after;
        let wrong_node = sample.node.is_some() && sample.node != r.node_id;
        if contradicts || wrong_node {
            found.raise(
                Verdict::Partitioned,
                "header_contradiction",
                format!(
                    "{}: sampled response headers say node {} status {} ({}/{}), but /clusterz says node {} status {}",
                    r.url,
                    sample.node.as_deref().unwrap_or("?"),
                    sample.status.map_or("?", QuorumStatus::as_str),
                    sample.observed.map_or("?".into(), |v| v.to_string()),
                    sample.expected.map_or("?".into(), |v| v.to_string()),
                    name(r),
                    r.status.map_or("?", QuorumStatus::as_str)
                ),
            );
            return;
        }
    }
}

/// Nodes that withheld member details, so discovery stopped at them.
fn restricted_details(reachable: &[&NodeReport], found: &mut Found) {
    let restricted: Vec<String> = reachable.iter().filter(|r| r.details_restricted).map(|r| name(r)).collect();
    if !restricted.is_empty() {
        found.note(
            "details_restricted",
            format!(
                "{} withheld member details (observability.detailsAccess = restricted), so their members' URLs cannot be followed: set ARLEN_DETAILS_TOKEN to the details token, point triage at the admin listeners, or name every node",
                restricted.join(", ")
            ),
        );
    }
}

/// Mixed versions: normal in the middle of a rolling upgrade, worth knowing
/// about when the upgrade should be over.
fn mixed_versions(reachable: &[&NodeReport], found: &mut Found) {
    let mut versions: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in reachable {
        for m in r.members.iter().filter(|m| m.state.is_up()) {
            let version = m.software.clone().unwrap_or_else(|| "an unversioned release".to_owned());
            versions.entry(version).or_default().insert(m.node_id.clone());
        }
    }
    if versions.len() > 1 {
        let described: Vec<String> = versions
            .iter()
            .map(|(version, who)| format!("{version}: {}", who.iter().cloned().collect::<Vec<_>>().join(", ")))
            .collect();
        found.note(
            "mixed_versions",
            format!(
                "members run different software versions (expected during a rolling upgrade, not after): {}",
                described.join("; ")
            ),
        );
    }
}

/// Members that answer some node's probes one way only, late or lossily:
/// gray failures, which no up/down verdict shows.
fn gray_failures(reachable: &[&NodeReport], found: &mut Found) {
    for r in reachable {
        for m in &r.members {
            let Some(class) = m.reachability.filter(|c| *c != arlen_wire::states::Reachability::Ok) else { continue };
            let why = m.reachability_explanation.as_deref().unwrap_or("no evidence given");
            found.note("gray_failure", format!("{} sees {} {class}: {why}", name(r), m.node_id));
        }
    }
}

/// Zones whose loss would cost quorum, as the ready nodes see it (one
/// finding per distinct view; nothing when every zone can go).
fn zone_tolerance(reachable: &[&NodeReport], found: &mut Found) {
    let mut said: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for r in reachable.iter().filter(|r| r.ready == Some(true)) {
        if let Some(summary) = r.zone_summary.as_deref().filter(|s| s.contains("not")) {
            said.entry(summary).or_default().push(name(r));
        }
    }
    for (summary, who) in said {
        found.note(
            "zone_tolerance",
            format!("the cluster {summary} (as {} see{} it)", who.join(", "), if who.len() == 1 { "s" } else { "" }),
        );
    }
}

/// Who sees whom: differing views of membership are a likely partition.
fn disagreement(reachable: &[&NodeReport], found: &mut Found) {
    let mut views: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
    for r in reachable.iter().filter(|r| r.source.as_deref() != Some("static_config")) {
        views.entry(r.sees.clone()).or_default().push(name(r));
    }
    if views.len() > 1 {
        let described: Vec<String> = views
            .iter()
            .map(|(sees, who)| {
                format!("{} see{} {{{}}}", who.join(", "), if who.len() == 1 { "s" } else { "" }, sees.join(", "))
            })
            .collect();
        // Groups that each see exactly themselves: the cluster is split, and where.
        let split = views.iter().all(|(sees, who)| {
            let who: BTreeSet<&str> = who.iter().map(String::as_str).collect();
            sees.iter().map(String::as_str).collect::<BTreeSet<_>>() == who
        });
        let sides: Vec<String> = views.values().map(|who| format!("{{{}}}", who.join(", "))).collect();
        let named = if split { format!("; partition: {}", sides.join(" | ")) } else { String::new() };
        found.raise(
            Verdict::Partitioned,
            "disagreement",
            format!("nodes disagree about membership, a likely partition: {}{named}", described.join("; ")),
        );
    }
}

pub fn render(reports: &[NodeReport], findings: &[Finding], verdict: Verdict) -> String {
    let mut rows =
        vec![["NODE", "URL", "REACHABLE", "READY", "STATUS", "OBSERVED", "SOURCE", "DRAINING", "GENERATION", "SEES"]
            .map(str::to_owned)];
    for r in reports {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let yes_no = |v: Option<bool>| v.map_or("-".to_owned(), |b| if b { "yes".into() } else { "no".into() });
        rows.push([
            opt(&r.node_id),
            r.url.clone(),
            yes_no(Some(r.reachable)),
            yes_no(r.ready),
            opt(&r.status.map(|s| s.to_string())),
            match (r.observed, r.expected) {
                (Some(o), Some(e)) => format!("{o}/{e}"),
                _ => "-".into(),
            },
            opt(&r.source),
            yes_no(r.draining),
            r.generation.map_or("-".into(), |g| g.to_string()),
            r.sees.join(","),
        ]);
    }
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out.push('\n');
    if let Some(matrix) = reachability_matrix(reports) {
        out.push_str(&matrix);
        out.push('\n');
    }
    let accusations: Vec<&String> = reports.iter().flat_map(|r| &r.accusations).collect();
    if !accusations.is_empty() {
        out.push_str(
            "accusations (each node's own recent verdicts):
",
        );
        for line in accusations {
            out.push_str(&format!(
                "  - {line}
"
            ));
        }
        out.push('\n');
    }
    if findings.is_empty() {
        out.push_str("findings: none — every node is reachable, nominal and agrees\n");
    } else {
        out.push_str("findings:\n");
        for finding in findings {
            out.push_str(&format!("  - {}\n", finding.message));
        }
    }
    out.push_str(&format!("verdict: {} (exit {})\n", verdict.describe(), verdict.exit_code()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, status: &str, sees: &[&str]) -> NodeReport {
        NodeReport {
            url: format!("http://{id}"),
            reachable: true,
            node_id: Some(id.into()),
            ready: Some(true),
            quorum_required: Some(false),
            status: Some(status.parse().unwrap()),
            status_after: Some(status.parse().unwrap()),
            observed: Some(sees.len() as u64),
            expected: Some(3),
            source: Some("gossip".into()),
            draining: Some(false),
            sees: sees.iter().map(|s| (*s).to_owned()).collect(),
            ..NodeReport::default()
        }
    }

    fn member(id: &str, state: &str, heard: Option<u64>) -> MemberView {
        MemberView {
            node_id: id.into(),
            state: state.parse().unwrap(),
            last_heard_ms: heard,
            url: Some(format!("http://{id}")),
            software: None,
            reachability: None,
            reachability_explanation: None,
        }
    }

    #[test]
    fn mixed_software_versions_are_a_finding_and_one_version_is_not() {
        let versioned = |id: &str, software: Option<&str>| MemberView {
            software: software.map(str::to_owned),
            ..member(id, "alive", None)
        };
        let mut a = node("a", "nominal", &["a", "b"]);
        a.members = vec![versioned("a", Some("0.2.0+abc")), versioned("b", Some("0.2.0+abc"))];
        let (findings, _) = analyze(std::slice::from_ref(&a));
        assert!(findings.iter().all(|f| f.kind != "mixed_versions"), "{findings:?}");
        a.members[1].software = None;
        let (findings, _) = analyze(&[a]);
        let mixed = findings.iter().find(|f| f.kind == "mixed_versions").expect("a mixed_versions finding");
        assert_eq!(
            mixed.message,
            "members run different software versions (expected during a rolling upgrade, not after): 0.2.0+abc: a; an unversioned release: b"
        );
    }

    #[test]
    fn a_member_answering_one_way_is_a_gray_failure() {
        let mut a = node("a", "nominal", &["a", "b"]);
        a.members = vec![member("a", "alive", None), member("b", "alive", Some(4))];
        let (findings, _) = analyze(std::slice::from_ref(&a));
        assert!(findings.iter().all(|f| f.kind != "gray_failure"), "{findings:?}");
        a.members[1].reachability = Some(arlen_wire::states::Reachability::OneWay);
        a.members[1].reachability_explanation = Some("the direct path is cut".to_owned());
        let (findings, _) = analyze(&[a]);
        let gray = findings.iter().find(|f| f.kind == "gray_failure").expect("a gray_failure finding");
        assert_eq!(gray.message, "a sees b one_way: the direct path is cut");
    }

    #[test]
    fn a_zone_whose_loss_costs_quorum_is_a_finding() {
        let mut a = node("a", "degraded", &["a", "b"]);
        a.ready = Some(true);
        a.zone_summary = Some("survives the loss of zone z1; not of zone z2".to_owned());
        let (findings, _) = analyze(std::slice::from_ref(&a));
        let zone = findings.iter().find(|f| f.kind == "zone_tolerance").expect("a zone_tolerance finding");
        assert_eq!(zone.message, "the cluster survives the loss of zone z1; not of zone z2 (as a sees it)");
        a.zone_summary = Some("survives the loss of any one zone (z1, z2, z3)".to_owned());
        let (findings, _) = analyze(&[a]);
        assert!(findings.iter().all(|f| f.kind != "zone_tolerance"), "{findings:?}");
    }

    #[test]
    fn a_node_that_does_not_answer_is_named_by_its_peers_with_their_views() {
        let mut a = node("a", "degraded", &["a", "b"]);
        a.members = vec![member("a", "alive", None), member("b", "alive", Some(5)), member("c", "dead", Some(2100))];
        let mut b = node("b", "degraded", &["a", "b"]);
        b.members = vec![member("a", "alive", Some(7)), member("b", "alive", None), member("c", "dead", Some(2000))];
        let c =
            NodeReport { url: "http://c".into(), error: Some("connection refused".into()), ..NodeReport::default() };
        let mut reports = vec![a, b, c];
        name_unreachable(&mut reports);
        assert_eq!(reports[2].node_id.as_deref(), Some("c"));
        let (findings, code) = analyze(&reports);
        assert_eq!(code, Verdict::Unreachable);
        let unreachable = findings.iter().find(|f| f.kind == "unreachable").unwrap();
        assert_eq!(
            unreachable.message,
            "c (http://c) did not answer: connection refused; its peers see it: a: dead, last heard 2.1 s ago; b: dead, last heard 2.0 s ago"
        );
        assert!(reachability_matrix(&reports).is_none(), "a and b agree");
        assert!(render(&reports, &findings, code).contains("\nc  "), "the table names c");
    }

    #[test]
    fn differing_views_draw_the_matrix_and_name_the_partition() {
        let mut a = node("a", "degraded", &["a", "b"]);
        a.members = vec![member("a", "alive", None), member("b", "alive", Some(5)), member("c", "dead", Some(900))];
        let mut b = node("b", "degraded", &["a", "b"]);
        b.members = vec![member("a", "alive", Some(5)), member("b", "alive", None), member("c", "dead", Some(800))];
        let mut c = node("c", "degraded", &["c"]);
        c.members = vec![member("a", "dead", Some(700)), member("b", "suspect", Some(600)), member("c", "alive", None)];
        let reports = [a, b, c];
        let matrix = reachability_matrix(&reports).unwrap();
        assert!(matrix.contains("OBSERVER \\ MEMBER  a      b        c\n"), "{matrix}");
        assert!(matrix.contains("  a                  self   alive    dead\n"), "{matrix}");
        assert!(matrix.contains("  c                  dead   suspect  self\n"), "{matrix}");
        let (findings, _) = analyze(&reports);
        let split = findings.iter().find(|f| f.kind == "disagreement").unwrap();
        assert!(split.message.ends_with("; partition: {a, b} | {c}"), "{}", split.message);
    }

    #[test]
    fn all_nominal_and_agreeing_is_exit_0() {
        let abc = ["a", "b", "c"];
        let (findings, code) =
            analyze(&[node("a", "nominal", &abc), node("b", "nominal", &abc), node("c", "nominal", &abc)]);
        assert_eq!((findings, code), (vec![], Verdict::Nominal));
    }

    #[test]
    fn header_contradiction_is_found() {
        let mut a = node("a", "nominal", &["a", "b", "c"]);
        a.samples.push(HeaderSample {
            http_status: 200,
            node: Some("a".into()),
            status: Some(QuorumStatus::Degraded),
            observed: Some(2),
            expected: Some(3),
        });
        let (findings, code) = analyze(&[a]);
        assert_eq!(code, Verdict::Partitioned);
        assert_eq!(findings[0].kind, "header_contradiction");
        assert!(
            findings[0]
                .message
                .contains("headers say node a status degraded (2/3), but /clusterz says node a status nominal"),
            "{}",
            findings[0].message
        );
    }

    #[test]
    fn a_status_that_changed_during_sampling_is_not_a_contradiction() {
        let mut a = node("a", "nominal", &["a", "b", "c"]);
        a.status_after = Some(QuorumStatus::Degraded);
        a.samples.push(HeaderSample {
            http_status: 200,
            node: Some("a".into()),
            status: Some(QuorumStatus::Degraded),
            observed: Some(2),
            expected: Some(3),
        });
        assert!(analyze(&[a]).0.iter().all(|f| f.kind != "header_contradiction"));
    }
}
