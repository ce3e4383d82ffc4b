// ARLEN PATCH (see vendor/README.md in the Arlen repository): this file is new.

use bytes::Bytes;

/// Header lines written verbatim into an HTTP/1 response head, after the
/// fields of the response's `HeaderMap`.
///
/// Put a `RawHeaderLines` in a response's extensions and a server connection
/// writes its bytes as they are, in the capitalisation given, without looking
/// at them again. This is for headers that many responses share and whose
/// exact spelling matters on the wire: they are rendered and validated once,
/// and each response then costs a copy of the bytes instead of a `HeaderMap`
/// insert and a per-byte title-casing pass each.
///
/// The lines are checked when the value is made: each is `name: value\r\n`,
/// the name an RFC 9110 token, the value made of visible ASCII, spaces, tabs
/// and obs-text (no CR or LF). Names that decide the message framing or that
/// hyper writes itself (`content-length`, `transfer-encoding`, `connection`,
/// `date`, `trailer`, `upgrade`, `keep-alive`) are refused, because hyper
/// frames the message from the `HeaderMap` alone.
///
/// Only HTTP/1 server connections write them; the HTTP/2 encoder and the
/// client ignore this extension.
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
