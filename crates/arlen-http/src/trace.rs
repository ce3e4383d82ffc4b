//! Identity and trace headers (CONTRACT §4, baseline).
//!
//! `X-Request-Id` and `X-Correlation-Id` carry a fresh 32-hex id per request;
//! `X-Trace-Id` and W3C `traceparent` continue a valid incoming
//! `traceparent`, else start a new trace.

use http::{HeaderMap, HeaderName, HeaderValue};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
pub const X_TRACE_ID: HeaderName = HeaderName::from_static("x-trace-id");
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The identity and trace headers decided for one request.
#[derive(Debug, Clone, Default)]
pub struct RequestIds {
    request_id: Option<HeaderValue>,
    trace: Option<(HeaderValue, HeaderValue)>,
}

fn hex_id(bits: u128, digits: usize) -> String {
    format!("{bits:0digits$x}")
}

/// A random non-zero id of `digits` hex digits (32 or 16).
fn fresh_id(digits: usize) -> String {
    loop {
        let bits: u128 = rand::random();
        let bits = if digits >= 32 { bits } else { bits & ((1u128 << (digits * 4)) - 1) };
        if bits != 0 {
            return hex_id(bits, digits);
        }
    }
}

/// A valid W3C `traceparent`: `(trace-id, flags)` from
/// `version-traceid-parentid-flags`, lower-case hex, ids not all zero,
/// version not `ff`.
pub fn parse_traceparent(value: &str) -> Option<(&str, &str)> {
    let mut parts = value.trim().split('-');
    let (version, trace_id, parent_id, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let lower_hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let valid = lower_hex(version, 2)
        && version != "ff"
        && lower_hex(trace_id, 32)
        && trace_id.bytes().any(|b| b != b'0')
        && lower_hex(parent_id, 16)
        && parent_id.bytes().any(|b| b != b'0')
        && lower_hex(flags, 2)
        // Version 00 has exactly four fields; later versions may add more.
        && (version != "00" || parts.next().is_none());
    valid.then_some((trace_id, flags))
}

impl RequestIds {
    /// Decides the ids for a request with these headers.
    pub fn for_request(request_headers: &HeaderMap, identity_enabled: bool, trace_enabled: bool) -> Self {
        let request_id = identity_enabled.then(|| HeaderValue::try_from(fresh_id(32)).expect("hex is a valid header"));
        let trace = trace_enabled.then(|| {
            let incoming = request_headers.get(&TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(parse_traceparent);
            let (trace_id, flags) = match incoming {
                Some((trace_id, flags)) => (trace_id.to_owned(), flags.to_owned()),
                None => (fresh_id(32), "01".to_owned()),
            };
            let traceparent = format!("00-{trace_id}-{}-{flags}", fresh_id(16));
            (
                HeaderValue::try_from(trace_id).expect("hex is a valid header"),
                HeaderValue::try_from(traceparent).expect("hex is a valid header"),
            )
        });
        Self { request_id, trace }
    }

    /// Decides the ids as the snapshot's settings say.
    pub fn for_snapshot(request_headers: &HeaderMap, snapshot: &arlen_cluster::Snapshot) -> Self {
        let settings = &snapshot.settings;
        Self::for_request(
            request_headers,
            settings.response_identity_headers_enabled,
            settings.trace_propagation_enabled,
        )
    }

    /// Writes the headers into a response.
    pub fn apply(&self, headers: &mut HeaderMap) {
        if let Some(id) = &self.request_id {
            headers.insert(X_REQUEST_ID, id.clone());
            headers.insert(X_CORRELATION_ID, id.clone());
        }
        if let Some((trace_id, traceparent)) = &self.trace {
            headers.insert(X_TRACE_ID, trace_id.clone());
            headers.insert(TRACEPARENT, traceparent.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn valid_traceparent_is_continued_with_a_new_parent_id() {
        let mut request = HeaderMap::new();
        request.insert(TRACEPARENT, HeaderValue::from_static(VALID));
        let mut response = HeaderMap::new();
        RequestIds::for_request(&request, true, true).apply(&mut response);
        assert_eq!(response[&X_TRACE_ID], "4bf92f3577b34da6a3ce929d0e0e4736");
        let tp = response[&TRACEPARENT].to_str().unwrap();
        assert!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && tp.ends_with("-01"), "{tp}");
        assert_ne!(tp, VALID, "the parent id is new");
        assert!(parse_traceparent(tp).is_some());
    }

    #[test]
    fn invalid_traceparents_start_a_new_trace() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
        let mut request = HeaderMap::new();
        request.insert(TRACEPARENT, HeaderValue::from_static("garbage"));
        let mut response = HeaderMap::new();
        RequestIds::for_request(&request, false, true).apply(&mut response);
        let trace_id = response[&X_TRACE_ID].to_str().unwrap();
        assert_eq!(trace_id.len(), 32);
        assert!(response[&TRACEPARENT].to_str().unwrap().starts_with(&format!("00-{trace_id}-")));
        assert!(!response.contains_key(&X_REQUEST_ID));
    }

    #[test]
    fn request_ids_are_fresh_lower_hex() {
        let ids: Vec<String> = (0..50)
            .map(|_| {
                let mut response = HeaderMap::new();
                RequestIds::for_request(&HeaderMap::new(), true, false).apply(&mut response);
                assert!(!response.contains_key(&X_TRACE_ID));
                response[&X_REQUEST_ID].to_str().unwrap().to_owned()
            })
            .collect();
        for id in &ids {
            assert_eq!(id.len(), 32);
            assert!(id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        }
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
    }
}
