//! What the sidecar tells the application about a request: the forwarding
//! headers and the path. Both are the runtime's own, never the client's word
//! about itself.
//!
//! - From a peer that is not a trusted proxy (`proxy.trustedProxies`), the
//!   client's `X-Forwarded-For`, `-Proto`, `-Host`, `Forwarded` and
//!   `X-Real-IP` are replaced by what the sidecar knows. From a trusted
//!   proxy they are extended (nginx's `real_ip`, Envoy's
//!   `xff_num_trusted_hops`): the chain gets the peer appended, and
//!   `X-Real-IP` is the right-most address of the chain that is not trusted.
//! - The path is normalised the way the runtime matches its reserved paths:
//!   percent-encoded unreserved characters decoded, empty and dot segments
//!   removed; an encoded `/`, `\` or NUL, or a `..` above the root, is
//!   refused. A path that names a reserved endpoint in any other spelling
//!   (`//readyz`, `/READYZ`, `/./metrics`) is refused too: the runtime did
//!   not answer it, and the application must not either.

use std::borrow::Cow;
use std::net::IpAddr;

use http::header::{self, HeaderName, HeaderValue};
use http::HeaderMap;
use ipnet::IpNet;

pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(crate) const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The sidecar's listeners speak plain HTTP.
const PROTO: &str = "http";

/// The forwarding rules: which peers' forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Forwarding {
    trusted: Vec<IpNet>,
}

impl Forwarding {
    pub(crate) fn new(trusted: Vec<IpNet>) -> Self {
        Self { trusted }
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&address))
    }

    /// Sets the forwarding headers for a request from `peer`.
    pub(crate) fn apply(&self, headers: &mut HeaderMap, peer: Option<IpAddr>) {
        let trusted = peer.is_some_and(|peer| self.trusts(peer));
        // Usually the client sent none: one pass over the names (cheap
        // comparisons) spares a lookup per forwarding header.
        if !trusted && headers.keys().any(|name| FORWARDING.contains(name)) {
            for name in &FORWARDING {
                headers.remove(name);
            }
        }
        let Some(peer) = peer else { return };
        if trusted {
            self.extend(headers, peer);
        } else {
            first_hop(headers, peer);
        }
    }

    /// A trusted proxy's forwarding headers, extended by its own address.
    fn extend(&self, headers: &mut HeaderMap, peer: IpAddr) {
        let earlier = joined(headers, &X_FORWARDED_FOR);
        let chain = match &earlier {
            Some(earlier) => format!("{earlier}, {peer}"),
            None => peer.to_string(),
        };
        let real_ip = chain
            .rsplit(',')
            .map(str::trim)
            .filter_map(|hop| hop.parse::<IpAddr>().ok())
            .find(|hop| !self.trusts(*hop))
            .unwrap_or(peer);
        let proto = headers.get(&X_FORWARDED_PROTO).cloned().unwrap_or(HeaderValue::from_static(PROTO));
        let host = headers.get(&X_FORWARDED_HOST).or(headers.get(header::HOST)).cloned();
        let forwarded = forwarded_element(peer, headers.get(header::HOST));
        let forwarded = match joined(headers, &header::FORWARDED) {
            Some(earlier) => format!("{earlier}, {forwarded}"),
            None => forwarded,
        };
        for (name, value) in
            [(X_FORWARDED_FOR, chain), (X_REAL_IP, real_ip.to_string()), (header::FORWARDED, forwarded)]
        {
            if let Some(value) = owned_value(value) {
                headers.insert(name, value);
            }
        }
        headers.insert(X_FORWARDED_PROTO, proto);
        if let Some(host) = host {
            headers.insert(X_FORWARDED_HOST, host);
        }
    }
}

/// The forwarding headers of a request straight from its client (whose
/// own were removed): the peer is the whole chain and the real address.
fn first_hop(headers: &mut HeaderMap, peer: IpAddr) {
    let mut address = String::with_capacity(40);
    push_address(&mut address, peer);
    let host = headers.get(header::HOST).cloned();
    let forwarded = forwarded_element(peer, host.as_ref());
    if let Some(forwarded) = owned_value(forwarded) {
        headers.insert(header::FORWARDED, forwarded);
    }
    if let Some(address) = owned_value(address) {
        headers.insert(X_FORWARDED_FOR, address.clone());
        headers.insert(X_REAL_IP, address);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(PROTO));
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST, host);
    }
}

/// `value` as a header value without copying it (`None` when it holds a
/// byte no header value may).
fn owned_value(value: String) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(axum::body::Bytes::from(value)).ok()
}

/// The headers a client's word about itself travels in.
const FORWARDING: [HeaderName; 5] =
    [X_FORWARDED_FOR, X_FORWARDED_PROTO, X_FORWARDED_HOST, X_REAL_IP, header::FORWARDED];

/// This hop's `Forwarded` element: `for=…;host="…";proto=http`.
fn forwarded_element(peer: IpAddr, host: Option<&HeaderValue>) -> String {
    let mut element = String::with_capacity(96);
    element.push_str("for=");
    match peer {
        IpAddr::V4(_) => push_address(&mut element, peer),
        // RFC 7239 §6: an IPv6 node is bracketed and quoted.
        IpAddr::V6(v6) => element.push_str(&format!("\"[{v6}]\"")),
    }
    if let Some(host) = host.and_then(|h| h.to_str().ok()) {
        element.push_str(";host=\"");
        element.extend(host.chars().filter(|c| !matches!(c, '"' | '\\')));
        element.push('"');
    }
    element.push_str(";proto=");
    element.push_str(PROTO);
    element
}

/// Writes `address` as `Display` does; an IPv4 address without the
/// formatting machinery (it is on every proxied request).
fn push_address(out: &mut String, address: IpAddr) {
    match address {
        IpAddr::V4(v4) => {
            for (index, octet) in v4.octets().into_iter().enumerate() {
                if index > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(v6) => out.push_str(&v6.to_string()),
    }
}

/// All values of a header joined by `, ` (a list split over several lines).
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let values: Vec<&str> = headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// Why a request target is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadTarget {
    /// `%2F`, `%5C` or `%00`: the application and the runtime could
    /// disagree on the segments.
    EncodedSeparator,
    /// `..` above the root.
    AboveRoot,
    /// Names a reserved endpoint in a spelling the runtime does not answer.
    ReservedSpelling,
}

impl BadTarget {
    pub(crate) fn explanation(self) -> &'static str {
        match self {
            BadTarget::EncodedSeparator => "the path contains an encoded '/', '\\' or NUL",
            BadTarget::AboveRoot => "the path climbs above the root",
            BadTarget::ReservedSpelling => "the path names a reserved endpoint; ask for it by its own path",
        }
    }
}

/// The path the application gets for `path`, or why there is none.
pub(crate) fn normalise_path(path: &str) -> Result<Cow<'_, str>, BadTarget> {
    let normal = if is_normal(path) { Cow::Borrowed(path) } else { Cow::Owned(rebuild(path)?) };
    if arlen_http::endpoints::names_reserved_in_any_case(&normal) {
        return Err(BadTarget::ReservedSpelling);
    }
    Ok(normal)
}

/// The common case, checked without allocating: no `%`, no empty or dot segment.
fn is_normal(path: &str) -> bool {
    path.starts_with('/')
        && !path.contains('%')
        && !path.contains("//")
        && !path.contains("/./")
        && !path.contains("/../")
        && !path.ends_with("/.")
        && !path.ends_with("/..")
}

fn rebuild(path: &str) -> Result<String, BadTarget> {
    let decoded = decode_unreserved(path)?;
    let trailing_slash = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop().ok_or(BadTarget::AboveRoot)?;
            }
            other => segments.push(other),
        }
    }
    let mut normal = String::with_capacity(decoded.len());
    for segment in &segments {
        normal.push('/');
        normal.push_str(segment);
    }
    if segments.is_empty() || trailing_slash {
        normal.push('/');
    }
    Ok(normal)
}

/// Decodes `%XX` of unreserved characters (RFC 3986 §6.2.2.2), keeps other
/// escapes (upper-cased), refuses separators.
fn decode_unreserved(path: &str) -> Result<String, BadTarget> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        let escaped = (byte == b'%')
            .then(|| bytes.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(b'/' | b'\\' | 0) => return Err(BadTarget::EncodedSeparator),
            Some(c) if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') => {
                out.push(char::from(c));
                index += 3;
            }
            Some(c) => {
                out.push_str(&format!("%{c:02X}"));
                index += 3;
            }
            None => {
                // The URI parser let only visible ASCII through.
                out.push(char::from(byte));
                index += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    const LIES: [(&str, &str); 6] = [
        ("host", "shop.example"),
        ("x-forwarded-for", "203.0.113.9"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("forwarded", "for=203.0.113.9;proto=https"),
        ("x-real-ip", "203.0.113.9"),
    ];

    #[test]
    fn an_untrusted_clients_word_about_itself_is_replaced() {
        let mut map = headers(&LIES);
        Forwarding::default().apply(&mut map, Some("192.0.2.7".parse().unwrap()));
        assert_eq!(map[X_FORWARDED_FOR], "192.0.2.7");
        assert_eq!(map[X_FORWARDED_PROTO], "http");
        assert_eq!(map[X_FORWARDED_HOST], "shop.example");
        assert_eq!(map[X_REAL_IP], "192.0.2.7");
        assert_eq!(map[header::FORWARDED], "for=192.0.2.7;host=\"shop.example\";proto=http");
        assert_eq!(map.get_all(X_FORWARDED_FOR).iter().count(), 1);
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for text in ["0.0.0.0", "1.2.3.4", "10.0.100.255", "192.168.9.99", "255.255.255.255", "::1", "2001:db8::7"] {
            let address: IpAddr = text.parse().unwrap();
            let mut written = String::new();
            push_address(&mut written, address);
            assert_eq!(written, address.to_string());
        }
        let mut map = headers(&[("host", "a\"b\\c")]);
        Forwarding::default().apply(&mut map, Some("2001:db8::7".parse().unwrap()));
        assert_eq!(map[header::FORWARDED], "for=\"[2001:db8::7]\";host=\"abc\";proto=http");
        assert_eq!(map[X_REAL_IP], "2001:db8::7");
    }

    #[test]
    fn a_trusted_proxy_extends_the_chain() {
        let forwarding = Forwarding::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let mut map = headers(&LIES);
        forwarding.apply(&mut map, Some("10.1.2.3".parse().unwrap()));
        assert_eq!(map[X_FORWARDED_FOR], "203.0.113.9, 10.1.2.3");
        assert_eq!(map[X_FORWARDED_PROTO], "https");
        assert_eq!(map[X_FORWARDED_HOST], "evil.example");
        assert_eq!(map[X_REAL_IP], "203.0.113.9", "the right-most untrusted hop");
        assert_eq!(
            map[header::FORWARDED],
            "for=203.0.113.9;proto=https, for=10.1.2.3;host=\"shop.example\";proto=http"
        );
        let mut v6 = headers(&[("host", "a")]);
        Forwarding::default().apply(&mut v6, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(v6[header::FORWARDED], "for=\"[2001:db8::1]\";host=\"a\";proto=http");
    }

    #[test]
    fn paths_are_normalised_as_the_runtime_matches_them() {
        for (path, normal) in [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("//a///b", "/a/b"),
            ("/a/./b/../c", "/a/c"),
            ("/a/%7Euser/%41", "/a/~user/A"),
            ("/a/%2e%2E/b", "/b"),
            ("/a/%c3%a9", "/a/%C3%A9"),
            ("/a/..", "/"),
            ("/readyzz", "/readyzz"),
            ("/app/readyz", "/app/readyz"),
        ] {
            assert_eq!(normalise_path(path).as_deref(), Ok(normal), "{path}");
        }
        for (path, why) in [
            ("/a%2Fb", BadTarget::EncodedSeparator),
            ("/a%5cb", BadTarget::EncodedSeparator),
            ("/a%00", BadTarget::EncodedSeparator),
            ("/..", BadTarget::AboveRoot),
            ("/a/../../b", BadTarget::AboveRoot),
            ("//readyz", BadTarget::ReservedSpelling),
            ("/READYZ", BadTarget::ReservedSpelling),
            ("/./metrics", BadTarget::ReservedSpelling),
            ("/x/../clusterz", BadTarget::ReservedSpelling),
            ("/%6Civez", BadTarget::ReservedSpelling),
            ("/Healthz/", BadTarget::ReservedSpelling),
        ] {
            assert_eq!(normalise_path(path), Err(why), "{path}");
        }
    }
}
