//! Drill reports: `report.json`, `report.md` and `timeline.svg`.

use arlen_wire::states::QuorumStatus;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::sampler::Change;

/// One measured figure against its budget.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    pub budget: Option<f64>,
    pub within_budget: bool,
}

/// A phase of the drill, at `t_ms` after the start.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub t_ms: u64,
    pub what: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub source: String,
    pub nodes: usize,
    pub passed: bool,
    pub figures: Vec<Figure>,
    pub events: Vec<Event>,
    /// Start and end of each fault (one per restarted node in a restart
    /// step), ms after the start.
    pub fault_windows_ms: Vec<(u64, u64)>,
    pub duration_ms: u64,
    pub node_ids: Vec<String>,
    pub timeline: Vec<Vec<Change>>,
    pub samples: u64,
    pub requests_ok: u64,
    pub requests_failed: u64,
    /// Time with no node ready after convergence (a load balancer would have
    /// answered 503), and the traffic ticks that found none.
    pub unserved_ms: u64,
    pub unserved_ticks: u64,
    pub failures: Vec<String>,
}

pub fn write_all(report: &Report, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(report).expect("json") + "\n")?;
    std::fs::write(dir.join("report.md"), markdown(report))?;
    std::fs::write(dir.join("timeline.svg"), svg(report))?;
    Ok(())
}

fn number(value: f64, unit: &str) -> String {
    if unit == "ms" {
        format!("{value:.0} ms")
    } else {
        format!("{value:.0}")
    }
}

pub fn markdown(report: &Report) -> String {
    let mut out = format!(
        "# Drill `{}` — {}\n\n{} nodes, membership source `{}`, {:.1} s, {} samples; background traffic {} ok / {} failed \
         ({} of them ticks with no node ready); no node ready for {} ms in all.\n\n",
        report.scenario,
        if report.passed { "passed" } else { "FAILED" },
        report.nodes,
        report.source,
        report.duration_ms as f64 / 1000.0,
        report.samples,
        report.requests_ok,
        report.requests_failed,
        report.unserved_ticks,
        report.unserved_ms
    );
    out.push_str("| figure | measured | budget | |\n|---|---|---|---|\n");
    for f in &report.figures {
        let budget = f.budget.map_or("—".to_owned(), |b| format!("≤ {}", number(b, f.unit)));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            f.name,
            number(f.value, f.unit),
            budget,
            if f.within_budget { "ok" } else { "**over budget**" }
        );
    }
    out.push_str("\n## Events\n\n");
    for e in &report.events {
        let _ = writeln!(out, "- {:>7.2} s — {}", e.t_ms as f64 / 1000.0, e.what);
    }
    if !report.failures.is_empty() {
        out.push_str("\n## Failed requests\n\n");
        for failure in report.failures.iter().take(50) {
            let _ = writeln!(out, "- {failure}");
        }
    }
    out.push_str(
        "\nSee `timeline.svg` for each node's status over time (each fault's window shaded, events marked).\n",
    );
    out
}

/// Text for SVG content.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn colour(status: &str) -> &'static str {
    match status.parse::<QuorumStatus>() {
        Ok(QuorumStatus::Nominal) => "#2e7d32",
        Ok(QuorumStatus::Degraded) => "#f9a825",
        Ok(QuorumStatus::Partitioned) => "#c62828",
        Ok(QuorumStatus::SingleNode) => "#1565c0",
        Err(_) if status == super::sampler::UNREACHABLE => "#9e9e9e",
        Err(_) => "#6d4c41",
    }
}

/// Each node's status over time as coloured bands, readiness as a thin bar
/// beneath, each fault's window shaded, each event marked (numbered, with its
/// text as a tooltip and in a list below), on an opaque background with a
/// legend: readable on a dark theme too.
pub fn svg(report: &Report) -> String {
    let left = 90.0;
    let width = 900.0;
    let row = 44.0;
    let top = 56.0;
    let events_height = 16.0 * report.events.len() as f64;
    let height = top + row * report.node_ids.len() as f64 + 90.0 + events_height;
    let total = report.duration_ms.max(1) as f64;
    let x = |t: u64| left + width * (t as f64 / total);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n",
        left + width + 20.0
    );
    let _ = writeln!(out, "<rect x=\"0\" y=\"0\" width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>");
    let _ = writeln!(
        out,
        "<text x=\"{left}\" y=\"20\" font-size=\"14\">drill {} ({} nodes, {}): {}</text>",
        report.scenario,
        report.nodes,
        report.source,
        if report.passed { "passed" } else { "FAILED" }
    );
    let rows_height = row * report.node_ids.len() as f64;
    for (index, (fault_start, fault_end)) in report.fault_windows_ms.iter().enumerate() {
        let _ = writeln!(
            out,
            "<rect x=\"{:.1}\" y=\"{}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#000\" fill-opacity=\"0.10\"><title>fault {} from {} ms to {} ms</title></rect>",
            x(*fault_start),
            top - 8.0,
            (x(*fault_end) - x(*fault_start)).max(1.0),
            rows_height + 8.0,
            index + 1,
            fault_start,
            fault_end
        );
    }
    // Events: a numbered marker above the rows and a hairline through them.
    for (index, event) in report.events.iter().enumerate() {
        let ex = x(event.t_ms);
        let _ = writeln!(
            out,
            "<g><title>{} ms: {}</title><line x1=\"{ex:.1}\" y1=\"{}\" x2=\"{ex:.1}\" y2=\"{}\" stroke=\"#1a237e\" stroke-opacity=\"0.35\"/>\
             <path d=\"M{:.1},{} l4,-7 h-8 z\" fill=\"#1a237e\"/><text x=\"{ex:.1}\" y=\"{}\" font-size=\"9\" text-anchor=\"middle\" fill=\"#1a237e\">{}</text></g>",
            event.t_ms,
            escape(&event.what),
            top - 12.0,
            top + rows_height,
            ex,
            top - 12.0,
            top - 22.0,
            index + 1
        );
    }
    for (index, node) in report.node_ids.iter().enumerate() {
        let y = top + row * index as f64;
        let _ = writeln!(out, "<text x=\"8\" y=\"{:.1}\">{node}</text>", y + 18.0);
        let changes = &report.timeline[index];
        for (i, change) in changes.iter().enumerate() {
            let end = changes.get(i + 1).map_or(report.duration_ms, |next| next.t_ms);
            let (x0, x1) = (x(change.t_ms), x(end));
            let _ = writeln!(
                out,
                "<rect x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"24\" fill=\"{}\"><title>{} {} observed {} at {} ms</title></rect>",
                (x1 - x0).max(0.5),
                colour(&change.state.status),
                node,
                change.state.status,
                change.state.observed.map_or("-".into(), |o| o.to_string()),
                change.t_ms
            );
            let _ = writeln!(
                out,
                "<rect x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"5\" fill=\"{}\"/>",
                y + 27.0,
                (x1 - x0).max(0.5),
                if change.state.ready { "#263238" } else { "#eceff1" }
            );
        }
    }
    let axis_y = top + row * report.node_ids.len() as f64 + 10.0;
    let _ =
        writeln!(out, "<line x1=\"{left}\" y1=\"{axis_y}\" x2=\"{}\" y2=\"{axis_y}\" stroke=\"#333\"/>", left + width);
    let step = if total > 20_000.0 { 5000 } else { 1000 };
    let mut t = 0u64;
    while t as f64 <= total {
        let _ = writeln!(
            out,
            "<line x1=\"{0:.1}\" y1=\"{axis_y}\" x2=\"{0:.1}\" y2=\"{1}\" stroke=\"#333\"/><text x=\"{0:.1}\" y=\"{2}\" text-anchor=\"middle\">{3}s</text>",
            x(t),
            axis_y + 5.0,
            axis_y + 18.0,
            t / 1000
        );
        t += step;
    }
    let legend_y = axis_y + 40.0;
    let mut lx = left;
    let statuses = [QuorumStatus::Nominal, QuorumStatus::Degraded, QuorumStatus::Partitioned].map(QuorumStatus::as_str);
    for status in statuses.into_iter().chain([super::sampler::UNREACHABLE]) {
        let _ = writeln!(out, "<rect x=\"{lx}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{legend_y}\">{status}</text>", legend_y - 10.0, colour(status), lx + 16.0);
        lx += 110.0;
    }
    let _ = writeln!(out, "<rect x=\"{lx}\" y=\"{}\" width=\"12\" height=\"5\" fill=\"#263238\"/><text x=\"{}\" y=\"{legend_y}\">ready (thin bar; light = not ready)</text>", legend_y - 6.0, lx + 16.0);
    let legend_y = legend_y + 20.0;
    let _ = writeln!(
        out,
        "<rect x=\"{left}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"#000\" fill-opacity=\"0.10\"/><text x=\"{}\" y=\"{legend_y}\">fault window</text>\
         <path d=\"M{},{} l4,-7 h-8 z\" fill=\"#1a237e\"/><text x=\"{}\" y=\"{legend_y}\">event (numbered below)</text>",
        legend_y - 10.0,
        left + 16.0,
        left + 126.0,
        legend_y,
        left + 136.0
    );
    for (index, event) in report.events.iter().enumerate() {
        let _ = writeln!(
            out,
            "<text x=\"{left}\" y=\"{:.1}\" font-size=\"11\" fill=\"#222\">{}. {:.2} s — {}</text>",
            legend_y + 18.0 + 16.0 * index as f64,
            index + 1,
            event.t_ms as f64 / 1000.0,
            escape(&event.what)
        );
    }
    out.push_str("</svg>\n");
    out
}
