//! Parsing of scalar values, shared by files, variables and flags.
//!
//! There is one boolean parser and one integer parser; every source of a value
//! goes through them, so `YES` means the same in a plist, a TOML file and
//! `ARLEN_CLUSTER_ENABLED`.

/// Parses the contract's boolean words, case-insensitively, trimmed.
pub fn parse_bool(raw: &str) -> Result<bool, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "1" => Ok(true),
        "no" | "false" | "off" | "0" => Ok(false),
        _ => Err(format!("expected a boolean (YES/NO, true/false, yes/no, on/off, 1/0), got {raw:?}")),
    }
}

/// Parses a decimal integer with an optional sign, trimmed.
pub fn parse_integer(raw: &str) -> Result<i64, String> {
    let trimmed = raw.trim();
    let digits = trimmed.strip_prefix(['+', '-']).unwrap_or(trimmed);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("expected a decimal integer, got {raw:?}"));
    }
    trimmed.parse::<i64>().map_err(|_| format!("integer {raw:?} is out of the representable range"))
}

/// Validates `host:port` (IPv6 hosts in brackets) and returns it trimmed.
pub fn parse_address(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim();
    let bad = || format!("expected host:port (IPv6 in brackets, like [::1]:3000), got {raw:?}");
    let (host, port) = trimmed.rsplit_once(':').ok_or_else(bad)?;
    let bare_host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let bracketed = bare_host.len() != host.len();
    if bare_host.is_empty() || (bare_host.contains(':') && !bracketed) || bare_host.contains(char::is_whitespace) {
        return Err(bad());
    }
    if bracketed && bare_host.parse::<std::net::Ipv6Addr>().is_err() {
        return Err(bad());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(trimmed.to_owned()),
        _ => Err(format!("port in {raw:?} must be 1..65535")),
    }
}

/// Validates an IP address (taken as a range of one) or a CIDR range; the
/// canonical form (`10.0.0.0/8`, `192.0.2.7/32`).
pub fn parse_network(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim();
    let network = match trimmed.parse::<std::net::IpAddr>() {
        Ok(address) => ipnet::IpNet::from(address),
        Err(_) => trimmed
            .parse::<ipnet::IpNet>()
            .map_err(|_| format!("expected an IP address or a CIDR range like 10.0.0.0/8, got {raw:?}"))?,
    };
    Ok(network.trunc().to_string())
}

/// Validates an `http://` or `https://` URL with a `host:port`.
pub fn parse_url(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim();
    let rest = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"))
        .ok_or_else(|| format!("expected an http:// or https:// URL, got {raw:?}"))?;
    let authority = rest.trim_end_matches('/');
    parse_address(authority).map_err(|_| format!("expected http(s)://host:port, got {raw:?}"))?;
    Ok(trimmed.trim_end_matches('/').to_owned())
}

/// An `http://host:port` URL (no path): what the sidecar forwards to.
pub fn parse_http_url(raw: &str) -> Result<String, String> {
    let url = parse_url(raw)?;
    if url.starts_with("https://") {
        return Err(format!(
            "the upstream is reached over plain HTTP (it runs beside the sidecar, on the same host or in the same pod); got {raw:?}"
        ));
    }
    Ok(url)
}

/// `host:port`, with IPv6 literals in brackets.
pub fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// True for `0.0.0.0:p` and `[::]:p`: a bind-anything address nobody can send to.
pub fn is_unspecified_address(address: &str) -> bool {
    address.parse::<std::net::SocketAddr>().is_ok_and(|a| a.ip().is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn boolean_words() {
        for word in ["YES", "yes", " true ", "On", "1"] {
            assert_eq!(parse_bool(word), Ok(true), "{word}");
        }
        for word in ["NO", "no", "FALSE", "off", " 0"] {
            assert_eq!(parse_bool(word), Ok(false), "{word}");
        }
        for word in ["", "2", "yess", "enabled"] {
            assert!(parse_bool(word).is_err(), "{word}");
        }
    }

    #[test]
    fn integers_are_strict() {
        assert_eq!(parse_integer(" 42 "), Ok(42));
        assert_eq!(parse_integer("-3"), Ok(-3));
        assert_eq!(parse_integer("+7"), Ok(7));
        for bad in ["abc", "12abc", "", "-", "1.5", "0x10"] {
            assert!(parse_integer(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses() {
        for good in ["127.0.0.1:3000", " node-1.svc:7946 ", "[::1]:80"] {
            assert!(parse_address(good).is_ok(), "{good}");
        }
        for bad in ["127.0.0.1", "::1:80", ":80", "host:0", "host:99999", "host:abc", "[zz]:80"] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
        assert_eq!(join_host_port("::1", 80), "[::1]:80");
        assert!(is_unspecified_address("0.0.0.0:3000"));
        assert!(!is_unspecified_address("127.0.0.1:3000"));
    }

    proptest! {
        #[test]
        fn every_i64_round_trips(n in any::<i64>()) {
            prop_assert_eq!(parse_integer(&n.to_string()), Ok(n));
        }

        #[test]
        fn text_with_a_letter_is_never_an_integer(s in "[0-9]{0,4}[a-zA-Z][0-9a-z]{0,4}") {
            prop_assert!(parse_integer(&s).is_err());
        }
    }
}
