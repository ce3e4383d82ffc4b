//! Triage's reading of node documents: a readiness document and a
//! `/clusterz` document per node, then the findings and the rendered table.
//! No input panics, and nothing printed carries a control character.
#![no_main]

use arlen_http::documents::{ClusterDocument, ProbeDocument};
use arlen_triage::{analyze, parse_document, printable, render, NodeReport};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fields = arlen_fuzz::fields(data);
    let mut reports = Vec::new();
    for (i, pair) in fields.chunks(2).enumerate() {
        let url = format!("http://127.0.0.1:{}", 8000 + i);
        let [ready, clusterz] = pair else { continue };
        let ready = parse_document::<ProbeDocument>(ready);
        let clusterz = parse_document::<ClusterDocument>(clusterz);
        reports.push(match (ready, clusterz) {
            (Ok(ready), Ok(clusterz)) => {
                let status = if ready.ok { 200 } else { 503 };
                NodeReport::from_documents(&url, status, &ready, &clusterz)
            }
            (Err(error), _) | (_, Err(error)) => NodeReport { url, error: Some(error), ..NodeReport::default() },
        });
    }
    let (findings, code) = analyze(&reports);
    assert!(code.exit_code() <= 3, "exit status {} is not one triage documents", code.exit_code());
    let text = printable(&render(&reports, &findings, code));
    assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "a control character reaches the terminal");
});
