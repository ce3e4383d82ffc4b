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

impl RequestIds {
    /// Decides the ids for a request with these headers.
    pub fn for_request(request_headers: &HeaderMap, identity_enabled: bool, trace_enabled: bool) -> Self {
        let request_id = identity_enabled.then(|| {
            let mut id = [0u8; 32];
            write_hex(fresh_bits(32), &mut id);
            header_from_ascii(&id)
        });
        let trace = trace_enabled.then(|| {
            // "00-" trace-id(32) "-" parent-id(16) "-" flags(2)
            let mut traceparent = *b"00-00000000000000000000000000000000-0000000000000000-01";
            let incoming = request_headers.get(&TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(parse_traceparent);
            match incoming {
                Some((trace_id, flags)) => {
                    traceparent[3..35].copy_from_slice(trace_id.as_bytes());
                    traceparent[53..55].copy_from_slice(flags.as_bytes());
                }
                None => write_hex(fresh_bits(32), &mut traceparent[3..35]),
            }
            write_hex(fresh_bits(16), &mut traceparent[36..52]);
            (header_from_ascii(&traceparent[3..35]), header_from_ascii(&traceparent))
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
