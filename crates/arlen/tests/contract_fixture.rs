//! CONTRACT §6: the claims fixture (`contract/claims.json`) must be
//! well-formed, name documents that exist (and sections that exist in them)
//! and tests that exist, by file and function name.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    version: u32,
    claims: Vec<Claim>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Claim {
    id: String,
    claim: String,
    sources: Vec<String>,
    tests: Vec<TestRef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestRef {
    file: String,
    name: String,
}

/// Topics CONTRACT §6 requires the claims to cover (by id prefix).
const REQUIRED_TOPICS: &[&str] = &[
    "quorum.gated-readiness",
    "clusterz.quorum-and-coordination",
    "headers.cluster-diagnostics",
    "headers.opt-out",
    "config.keys-and-defaults",
    "config.sources-and-precedence",
    "config.legacy-fallback",
    "fixture.self-check",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// True when `source` defines a test function `name`: a `fn name(` with a
/// test attribute on one of the three lines above it, or inside `proptest!`.
fn defines_test(source: &str, name: &str) -> bool {
    let lines: Vec<&str> = source.lines().map(str::trim).collect();
    let is_test_attribute = |line: &&str| line.starts_with("#[test]") || line.starts_with("#[tokio::test");
    lines.iter().enumerate().any(|(i, line)| {
        let defines = line.starts_with(&format!("fn {name}(")) || line.starts_with(&format!("async fn {name}("));
        let attributed = lines[i.saturating_sub(3)..i].iter().any(is_test_attribute);
        let in_proptest = lines[..i].iter().any(|l| l.starts_with("proptest! {"));
        defines && (attributed || in_proptest)
    })
}

/// Checks a fixture; returns every problem found.
fn validate(text: &str, root: &Path) -> Vec<String> {
    let fixture: Fixture = match serde_json::from_str(text) {
        Ok(fixture) => fixture,
        Err(error) => return vec![format!("malformed fixture: {error}")],
    };
    let mut problems = Vec::new();
    if fixture.version != 1 {
        problems.push(format!("unknown fixture version {}", fixture.version));
    }
    let mut ids = BTreeSet::new();
    for claim in &fixture.claims {
        if !ids.insert(claim.id.as_str()) {
            problems.push(format!("duplicate claim id {}", claim.id));
        }
        if claim.claim.trim().is_empty() {
            problems.push(format!("{}: empty claim", claim.id));
        }
        if claim.sources.is_empty() || claim.tests.is_empty() {
            problems.push(format!("{}: needs at least one source and one test", claim.id));
        }
        for source in &claim.sources {
            let (file, section) = match source.split_once(" §") {
                Some((file, section)) => (file, Some(section)),
                None => (source.as_str(), None),
            };
            match std::fs::read_to_string(root.join(file)) {
                Err(_) => problems.push(format!("{}: source document {file} does not exist", claim.id)),
                Ok(text) => {
                    if let Some(section) = section {
                        let heading = text
                            .lines()
                            .any(|l| l.starts_with('#') && l.trim_start_matches('#').trim_start().starts_with(section));
                        if !heading {
                            problems.push(format!("{}: {file} has no section {section}", claim.id));
                        }
                    }
                }
            }
        }
        for test in &claim.tests {
            match std::fs::read_to_string(root.join(&test.file)) {
                Err(_) => problems.push(format!("{}: test file {} does not exist", claim.id, test.file)),
                Ok(source) if !defines_test(&source, &test.name) => {
                    problems.push(format!("{}: {} defines no test named {}", claim.id, test.file, test.name));
                }
                Ok(_) => {}
            }
        }
    }
    for topic in REQUIRED_TOPICS {
        if !ids.contains(topic) {
            problems.push(format!("no claim covers required topic {topic}"));
        }
    }
    problems
}

#[test]
fn fixture_names_real_documents_and_tests() {
    let root = repo_root();
    let text = std::fs::read_to_string(root.join("contract/claims.json")).unwrap();
    let problems = validate(&text, &root);
    assert!(problems.is_empty(), "contract fixture problems:\n{}", problems.join("\n"));
}

#[test]
fn validator_rejects_broken_fixtures() {
    let root = repo_root();
    assert!(validate("{not json", &root)[0].starts_with("malformed fixture"));
    assert!(validate(r#"{"version": 1, "claims": [], "extra": 1}"#, &root)[0].starts_with("malformed fixture"));
    let broken = r#"{"version": 1, "claims": [
        {"id": "a", "claim": "x", "sources": ["docs/NOPE.md"], "tests": [{"file": "crates/arlen/tests/serve.rs", "name": "no_such_test"}]},
        {"id": "a", "claim": "y", "sources": ["docs/CONTRACT.md §9.9"], "tests": [{"file": "crates/nope.rs", "name": "t"}]}
    ]}"#;
    let problems = validate(broken, &root);
    for expected in [
        "a: source document docs/NOPE.md does not exist",
        "a: crates/arlen/tests/serve.rs defines no test named no_such_test",
        "duplicate claim id a",
        "a: docs/CONTRACT.md has no section 9.9",
        "a: test file crates/nope.rs does not exist",
        "no claim covers required topic headers.opt-out",
    ] {
        assert!(problems.iter().any(|p| p == expected), "missing {expected:?} in {problems:#?}");
    }
}
