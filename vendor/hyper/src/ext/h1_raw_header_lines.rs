// ARLEN PATCH (see vendor/README.md in the Arlen repository): this file is new.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Header lines written verbatim into an HTTP/1 response head, after the
/// fields of the response's `HeaderMap`.
///
/// Leave a `RawHeaderLines` in a connection's [`RawHeaderLinesSlot`] and the
/// server connection writes its bytes into the next response head as they
/// are, in the capitalisation given, without looking at them again. This is
/// for headers that many responses share and whose exact spelling matters on
/// the wire: they are rendered and validated once, and each response then
/// costs a copy of the bytes instead of a `HeaderMap` insert and a per-byte
/// title-casing pass each.
///
/// The lines are checked when the value is made: each is `name: value\r\n`,
/// the name an RFC 9110 token, the value made of visible ASCII, spaces, tabs
/// and obs-text (no CR or LF). Names that decide the message framing or that
/// hyper writes itself (`content-length`, `transfer-encoding`, `connection`,
/// `date`, `trailer`, `upgrade`, `keep-alive`) are refused, because hyper
/// frames the message from the `HeaderMap` alone.
///
/// Only HTTP/1 server connections write them.
///
/// # Example
///
/// ```
/// # use hyper::ext::RawHeaderLines;
/// let lines = RawHeaderLines::new(bytes::Bytes::from_static(b"X-Cluster-Name: alpha\r\n")).unwrap();
/// assert_eq!(lines.as_bytes(), b"X-Cluster-Name: alpha\r\n");
/// assert!(RawHeaderLines::new(bytes::Bytes::from_static(b"X-Bad: a\r\nb\r\n")).is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawHeaderLines(Bytes);

/// A connection's hand-off point for [`RawHeaderLines`].
///
/// Give a clone to [`http1::Builder::raw_header_lines_slot`] for one
/// connection and keep one where that connection's service can reach it (a
/// task-local around the connection future, say). Lines [`set`] there are
/// written into the next response head the connection writes, which empties
/// the slot. An HTTP/1 server connection has at most one request in flight,
/// so the lines set while answering a request go out with its response.
///
/// [`http1::Builder::raw_header_lines_slot`]: crate::server::conn::http1::Builder::raw_header_lines_slot
/// [`set`]: RawHeaderLinesSlot::set
#[derive(Clone, Debug, Default)]
pub struct RawHeaderLinesSlot(Arc<Mutex<Option<RawHeaderLines>>>);

impl RawHeaderLinesSlot {
    /// An empty slot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lines for the next response head (replacing any not written yet).
    pub fn set(&self, lines: RawHeaderLines) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(lines);
    }

    /// Takes the lines for the response head being written.
    pub(crate) fn take(&self) -> Option<RawHeaderLines> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Why bytes were refused by [`RawHeaderLines::new`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidRawHeaderLines {
    line: usize,
    reason: &'static str,
}

const MANAGED: [&str; 7] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "date",
    "trailer",
    "upgrade",
    "keep-alive",
];

impl RawHeaderLines {
    /// Checks `lines` (zero or more `name: value\r\n` lines).
    pub fn new(lines: Bytes) -> Result<Self, InvalidRawHeaderLines> {
        let mut rest: &[u8] = &lines;
        let mut number = 0;
        while !rest.is_empty() {
            number += 1;
            let fail = |reason| InvalidRawHeaderLines {
                line: number,
                reason,
            };
            let end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or_else(|| fail("does not end with CRLF"))?;
            let line = &rest[..end];
            rest = &rest[end + 2..];
            let colon = line
                .iter()
                .position(|&b| b == b':')
                .ok_or_else(|| fail("has no colon"))?;
            let (name, value) = (&line[..colon], &line[colon + 1..]);
            if name.is_empty() || !name.iter().all(|&b| is_token(b)) {
                return Err(fail("name is not a token"));
            }
            if MANAGED
                .iter()
                .any(|managed| managed.as_bytes().eq_ignore_ascii_case(name))
            {
                return Err(fail("name is one hyper manages"));
            }
            if !value
                .iter()
                .all(|&b| b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80)
            {
                return Err(fail("value has a control character"));
            }
        }
        Ok(Self(lines))
    }

    /// The lines as they will be written.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl std::fmt::Display for InvalidRawHeaderLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "raw header line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for InvalidRawHeaderLines {}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(bytes: &'static [u8]) -> Result<RawHeaderLines, InvalidRawHeaderLines> {
        RawHeaderLines::new(Bytes::from_static(bytes))
    }

    #[test]
    fn accepts_well_formed_lines() {
        assert!(check(b"").is_ok());
        assert!(check(b"X-A: 1\r\nX-B-Name:\tv w\r\n").is_ok());
    }

    #[test]
    fn refuses_injection_and_managed_names() {
        let reason = |b| check(b).unwrap_err().to_string();
        assert_eq!(
            reason(b"X-A: 1"),
            "raw header line 1: does not end with CRLF"
        );
        assert_eq!(
            reason(b"X-A: 1\r\nX-B: 2\nX-C: 3\r\n"),
            "raw header line 2: value has a control character"
        );
        assert_eq!(reason(b"X-A: 1\r\n\r\n"), "raw header line 2: has no colon");
        assert_eq!(
            reason(b"X A: 1\r\n"),
            "raw header line 1: name is not a token"
        );
        assert_eq!(
            reason(b"Content-Length: 1\r\n"),
            "raw header line 1: name is one hyper manages"
        );
    }
}
