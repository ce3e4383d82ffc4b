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
