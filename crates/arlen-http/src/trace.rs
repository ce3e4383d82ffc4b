//! Identity and trace headers (CONTRACT §4, baseline).
//!
//! `X-Request-Id` and `X-Correlation-Id` carry a fresh 32-hex id per request
//! (or, with `http.keepIncomingRequestId`, a well-formed incoming one);
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

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes the low `out.len()` hex digits of `bits`, lower-case (`out.len()`
/// even, at most 32), a byte at a time.
fn write_hex(bits: u128, out: &mut [u8]) {
    let bytes = bits.to_be_bytes();
    let low = &bytes[16 - out.len() / 2..];
    for (pair, byte) in out.chunks_exact_mut(2).zip(low) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
}

/// A random value that is non-zero in its low `digits` hex digits.
fn fresh_bits(digits: usize) -> u128 {
    let mask = if digits >= 32 { u128::MAX } else { (1u128 << (digits * 4)) - 1 };
    loop {
        let bits = rand::random::<u128>() & mask;
        if bits != 0 {
            return bits;
        }
    }
}

fn header_from_ascii(bytes: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(bytes).expect("hex and dashes are a valid header value")
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

/// The caller's span id: the parent-id of a valid incoming `traceparent`.
pub fn incoming_parent(request_headers: &HeaderMap) -> Option<String> {
    incoming_parent_id(request_headers).map(str::to_owned)
}

/// [`incoming_parent`], borrowed from the request's headers.
pub fn incoming_parent_id(request_headers: &HeaderMap) -> Option<&str> {
    let value = request_headers.get(&TRACEPARENT)?.to_str().ok()?;
    parse_traceparent(value)?;
    value.trim().split('-').nth(2)
}

/// An incoming `X-Request-Id` worth keeping: 1 to 128 of `A-Z a-z 0-9 - _ . :`
/// (no spaces, no quotes, nothing a log line or a header could be confused by).
pub fn well_formed_request_id(id: &[u8]) -> bool {
    (1..=128).contains(&id.len())
        && id.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

impl RequestIds {
    /// Decides the ids for a request with these headers.
    ///
    /// The fresh ids are written into one buffer that every header value
    /// shares (one allocation, and clones that only count references).
    pub fn for_request(
        request_headers: &HeaderMap,
        identity_enabled: bool,
        trace_enabled: bool,
        keep_incoming_id: bool,
    ) -> Self {
        let incoming_id = (identity_enabled && keep_incoming_id)
            .then(|| request_headers.get(&X_REQUEST_ID))
            .flatten()
            .filter(|id| well_formed_request_id(id.as_bytes()));
        let fresh_id = identity_enabled && incoming_id.is_none();
        if !fresh_id && !trace_enabled {
            return Self { request_id: incoming_id.cloned(), trace: None };
        }
        // [request id (32)] ["00-" trace-id(32) "-" parent-id(16) "-" flags(2)]
        const ID: usize = 32;
        const PARENT: std::ops::Range<usize> = ID..ID + 55;
        let mut buffer = Vec::with_capacity(PARENT.end);
        buffer.extend_from_slice(&[b'0'; ID]);
        if fresh_id {
            write_hex(fresh_bits(32), &mut buffer[..ID]);
        }
        if trace_enabled {
            buffer.extend_from_slice(b"00-00000000000000000000000000000000-0000000000000000-01");
            let traceparent = &mut buffer[PARENT];
            let incoming = request_headers.get(&TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(parse_traceparent);
            match incoming {
                Some((trace_id, flags)) => {
                    traceparent[3..35].copy_from_slice(trace_id.as_bytes());
                    traceparent[53..55].copy_from_slice(flags.as_bytes());
                }
                None => write_hex(fresh_bits(32), &mut traceparent[3..35]),
            }
            write_hex(fresh_bits(16), &mut traceparent[36..52]);
        }
        let buffer = axum::body::Bytes::from(buffer);
        let value = |range: std::ops::Range<usize>| {
            HeaderValue::from_maybe_shared(buffer.slice(range)).expect("hex and dashes are a valid header value")
        };
        let request_id = match incoming_id {
            Some(id) => Some(id.clone()),
            None => fresh_id.then(|| value(0..ID)),
        };
        let trace = trace_enabled.then(|| (value(PARENT.start + 3..PARENT.start + 35), value(PARENT)));
        Self { request_id, trace }
    }

    /// Decides the ids as the snapshot's settings say.
    pub fn for_snapshot(request_headers: &HeaderMap, snapshot: &arlen_cluster::Snapshot) -> Self {
        let settings = &snapshot.settings;
        Self::for_request(
            request_headers,
            settings.response_identity_headers_enabled,
            settings.trace_propagation_enabled,
            settings.keep_incoming_request_id,
        )
    }

    /// Takes the trace and span ids of the span that exports this request
    /// (an OpenTelemetry span, see [`crate::otel`]): the headers name a span
    /// that exists. No-op when trace propagation is off.
    pub fn use_span(&mut self, trace_id: [u8; 16], span_id: [u8; 8], flags: u8) {
        if self.trace.is_none() {
            return;
        }
        let mut traceparent = *b"00-00000000000000000000000000000000-0000000000000000-00";
        write_hex(u128::from_be_bytes(trace_id), &mut traceparent[3..35]);
        write_hex(u128::from(u64::from_be_bytes(span_id)), &mut traceparent[36..52]);
        write_hex(u128::from(flags), &mut traceparent[53..55]);
        self.trace = Some((header_from_ascii(&traceparent[3..35]), header_from_ascii(&traceparent)));
    }

    /// The trace id, when trace propagation is on.
    pub fn trace_id(&self) -> Option<&str> {
        self.trace.as_ref().and_then(|(trace_id, _)| trace_id.to_str().ok())
    }

    /// This request's span id (the parent the upstream sees).
    pub fn span_id(&self) -> Option<&str> {
        self.trace.as_ref().and_then(|(_, traceparent)| traceparent.to_str().ok()).map(|t| &t[36..52])
    }

    /// The `traceparent` of this request's span (what a proxy sends upstream).
    pub fn traceparent(&self) -> Option<&HeaderValue> {
        self.trace.as_ref().map(|(_, traceparent)| traceparent)
    }

    /// The request id, when identity headers are on.
    pub fn request_id(&self) -> Option<&HeaderValue> {
        self.request_id.as_ref()
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

    #[test]
    fn hex_digits_are_the_low_ones_in_order() {
        let mut out = [0u8; 32];
        write_hex(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210, &mut out);
        assert_eq!(&out, b"0123456789abcdeffedcba9876543210");
        let mut out = [0u8; 16];
        write_hex(0xffff_0000_0000_0000_00f0_67aa_0ba9_02b7, &mut out);
        assert_eq!(&out, b"00f067aa0ba902b7");
    }

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn an_incoming_request_id_is_kept_only_when_asked_and_well_formed() {
        let with = |id: &'static str| {
            let mut request = HeaderMap::new();
            request.insert(X_REQUEST_ID, HeaderValue::from_static(id));
            request
        };
        let kept = RequestIds::for_request(&with("req-2024.11:abc_9"), true, false, true);
        assert_eq!(kept.request_id().unwrap(), "req-2024.11:abc_9");
        let fresh = RequestIds::for_request(&with("req-2024.11:abc_9"), true, false, false);
        assert_ne!(fresh.request_id().unwrap(), "req-2024.11:abc_9");
        for bad in ["has space", "quote\"", "semi;colon", ""] {
            let ids = RequestIds::for_request(&with(bad), true, false, true);
            assert_eq!(ids.request_id().unwrap().len(), 32, "{bad:?} replaced by a fresh id");
        }
        let long: &'static str = Box::leak("a".repeat(129).into_boxed_str());
        assert_eq!(RequestIds::for_request(&with(long), true, false, true).request_id().unwrap().len(), 32);
        let ids = RequestIds::for_request(&HeaderMap::new(), true, true, false);
        assert_eq!(ids.trace_id().map(str::len), Some(32));
        assert_eq!(ids.span_id().map(str::len), Some(16));
        assert!(ids.traceparent().unwrap().to_str().unwrap().contains(ids.span_id().unwrap()));
    }

    #[test]
    fn valid_traceparent_is_continued_with_a_new_parent_id() {
        let mut request = HeaderMap::new();
        request.insert(TRACEPARENT, HeaderValue::from_static(VALID));
        let mut response = HeaderMap::new();
        RequestIds::for_request(&request, true, true, false).apply(&mut response);
        assert_eq!(response[&X_TRACE_ID], "4bf92f3577b34da6a3ce929d0e0e4736");
        let tp = response[&TRACEPARENT].to_str().unwrap();
        assert!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && tp.ends_with("-01"), "{tp}");
        assert_ne!(tp, VALID, "the parent id is new");
        assert!(parse_traceparent(tp).is_some());
    }

    #[test]
    fn the_ids_of_an_exporting_span_replace_the_fresh_ones() {
        let mut ids = RequestIds::for_request(&HeaderMap::new(), true, true, false);
        let trace_id = 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736u128.to_be_bytes();
        ids.use_span(trace_id, 0x00f0_67aa_0ba9_02b7u64.to_be_bytes(), 1);
        assert_eq!(ids.traceparent().unwrap(), VALID);
        assert_eq!(ids.trace_id(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(ids.span_id(), Some("00f067aa0ba902b7"));
        let mut off = RequestIds::for_request(&HeaderMap::new(), true, false, false);
        off.use_span(trace_id, [1; 8], 0);
        assert!(off.traceparent().is_none(), "trace propagation off stays off");
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
        RequestIds::for_request(&request, false, true, false).apply(&mut response);
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
                RequestIds::for_request(&HeaderMap::new(), true, false, false).apply(&mut response);
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
