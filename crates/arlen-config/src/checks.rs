//! The application's checks as configuration (`checks.readiness`,
//! `checks.liveness`): how a sidecar's application, in any language, adds
//! checks of its own without code. The name rule is the one every check
//! follows, configured or registered from Rust (`arlen_http::checks`).

/// Names the runtime's own checks use: an application check cannot take one.
pub const RESERVED_CHECK_NAMES: [&str; 8] = [
    "request_dispatch",
    "metrics_registry",
    "active_requests",
    "startup",
    "cluster_quorum",
    "draining",
    "upstream",
    "ping",
];

/// Why `name` cannot name a check, if it cannot: 1 to 64 of `a-z`, `0-9`,
/// `_`, `-` (it appears in paths: `/readyz/<name>`), not one of the
/// runtime's.
pub fn check_name_problem(name: &str) -> Option<String> {
    let shaped = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !shaped {
        return Some(format!(
            "check name {name:?}: use 1 to 64 of a-z, 0-9, `_` and `-` (it appears in paths: /readyz/<name>)"
        ));
    }
    RESERVED_CHECK_NAMES.contains(&name).then(|| format!("check name {name:?} is one of the runtime's own checks"))
}

/// What a configured check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckTarget {
    /// `GET` of this path on `proxy.upstream`; 2xx is healthy.
    UpstreamPath(String),
    /// `GET` of this `http://` URL; 2xx is healthy.
    Url(String),
    /// `sh -c <command>`; exit 0 is healthy (killed at the timeout).
    Command(String),
}

/// One configured check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfiguredCheck {
    pub name: String,
    pub target: CheckTarget,
}

/// Parses `name=target, name=target`: a target `/path`, `http://…`, or
/// `exec:command` (a command cannot contain a comma). Every problem, named.
pub fn parse_checks(raw: &str) -> Result<Vec<ConfiguredCheck>, Vec<String>> {
    let (checks, problems) = parse_each(raw);
    if problems.is_empty() {
        Ok(checks)
    } else {
        Err(problems)
    }
}

/// The entries that parse, and a problem for each that does not.
pub(crate) fn parse_each(raw: &str) -> (Vec<ConfiguredCheck>, Vec<String>) {
    let mut checks: Vec<ConfiguredCheck> = Vec::new();
    let mut problems = Vec::new();
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((name, target)) = entry.split_once('=') else {
            problems.push(format!("{entry:?}: expected name=target (a /path, an http:// URL or exec:command)"));
            continue;
        };
        let (name, target) = (name.trim(), target.trim());
        if let Some(problem) = check_name_problem(name) {
            problems.push(problem);
            continue;
        }
        if checks.iter().any(|c| c.name == name) {
            problems.push(format!("check name {name:?} is used twice"));
            continue;
        }
        let target = if let Some(command) = target.strip_prefix("exec:") {
            if command.trim().is_empty() {
                problems.push(format!("{name}: exec: needs a command"));
                continue;
            }
            CheckTarget::Command(command.trim().to_owned())
        } else if target.starts_with('/') {
            CheckTarget::UpstreamPath(target.to_owned())
        } else if target.starts_with("http://") && target.len() > "http://".len() {
            CheckTarget::Url(target.to_owned())
        } else {
            problems.push(format!("{name}: target {target:?} is not a /path, an http:// URL or exec:command"));
            continue;
        };
        checks.push(ConfiguredCheck { name: name.to_owned(), target });
    }
    (checks, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_kinds_of_target_and_every_problem() {
        let checks = parse_checks(" db=/health/db, cache=http://127.0.0.1:6380/ping , disk=exec:test -w /tmp").unwrap();
        assert_eq!(
            checks,
            vec![
                ConfiguredCheck { name: "db".into(), target: CheckTarget::UpstreamPath("/health/db".into()) },
                ConfiguredCheck { name: "cache".into(), target: CheckTarget::Url("http://127.0.0.1:6380/ping".into()) },
                ConfiguredCheck { name: "disk".into(), target: CheckTarget::Command("test -w /tmp".into()) },
            ]
        );
        assert_eq!(parse_checks("").unwrap(), vec![]);
        let problems = parse_checks("nothing, DB=/x, upstream=/y, a=ftp://x, b=exec:, c=/1, c=/2").unwrap_err();
        assert_eq!(problems.len(), 6, "{problems:?}");
        assert!(problems[0].contains("expected name=target"));
        assert!(problems[2].contains("runtime's own"));
        assert!(problems[5].contains("used twice"));
    }
}
