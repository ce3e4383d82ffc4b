//! Gossip keys: `cluster.gossip.keys` (inline, comma-separated) or
//! `cluster.gossip.keysFile` (one a line). Each is the base64 of 32 random
//! bytes; the first seals, every one opens. Key material never appears in a
//! message, a `Debug` output or `arlen config`: errors name the key's
//! position, never its text.

use std::path::{Path, PathBuf};

/// Bytes in one gossip key.
pub const GOSSIP_KEY_BYTES: usize = 32;
/// Most keys one node holds (enough for any rotation).
pub const MAX_GOSSIP_KEYS: usize = 16;

/// The gossip keys in force, first one sealing.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct GossipKeys(Vec<[u8; GOSSIP_KEY_BYTES]>);

impl std::fmt::Debug for GossipKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GossipKeys({} configured)", self.0.len())
    }
}

impl GossipKeys {
    pub fn bytes(&self) -> &[[u8; GOSSIP_KEY_BYTES]] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses keys given one by one; the error names the position (1-based).
    pub fn parse<'a>(items: impl IntoIterator<Item = (usize, &'a str)>) -> Result<Self, (usize, String)> {
        let mut keys = Vec::new();
        for (position, item) in items {
            keys.push(parse_key(item).map_err(|error| (position, error))?);
        }
        if keys.len() > MAX_GOSSIP_KEYS {
            return Err((keys.len(), format!("at most {MAX_GOSSIP_KEYS} keys, found {}", keys.len())));
        }
        Ok(Self(keys))
    }

    /// Parses a comma-separated list (`cluster.gossip.keys`).
    pub fn parse_list(text: &str) -> Result<Self, (usize, String)> {
        Self::parse(text.split(',').map(str::trim).filter(|s| !s.is_empty()).enumerate().map(|(i, s)| (i + 1, s)))
    }

    /// Reads a keys file: one key a line; blank lines and `#` comments are
    /// skipped. The error's position is the line number.
    pub fn read_file(path: &Path) -> Result<Self, (Option<usize>, String)> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| (None, format!("cannot read {}: {error}", path.display())))?;
        Self::parse(
            text.lines()
                .enumerate()
                .map(|(i, line)| (i + 1, line.trim()))
                .filter(|(_, line)| !line.is_empty() && !line.starts_with('#')),
        )
        .map_err(|(line, error)| (Some(line), error))
    }
}

fn parse_key(text: &str) -> Result<[u8; GOSSIP_KEY_BYTES], String> {
    let mut key = [0u8; GOSSIP_KEY_BYTES];
    match <base64ct::Base64 as base64ct::Encoding>::decode(text, &mut key) {
        Ok(decoded) if decoded.len() == GOSSIP_KEY_BYTES => Ok(key),
        _ => Err(format!("is not the base64 of {GOSSIP_KEY_BYTES} bytes (make one with `arlen gossip keygen`)")),
    }
}

/// Where a keys file named in the configuration is.
pub fn resolve_keys_file(app_root: &Path, configured: &str) -> PathBuf {
    let path = Path::new(configured);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        app_root.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn keys_parse_and_never_show() {
        let keys = GossipKeys::parse_list(&format!("{KEY}, {KEY}")).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.bytes()[0][31], 31);
        assert_eq!(format!("{keys:?}"), "GossipKeys(2 configured)");
        let (position, error) = GossipKeys::parse_list(&format!("{KEY},c2hvcnQ=")).unwrap_err();
        assert_eq!(position, 2);
        assert!(!error.contains("c2hvcnQ"), "{error}");
        assert!(GossipKeys::parse_list("not base64!").is_err());
    }

    #[test]
    fn key_files_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, format!("# rotation\n{KEY}\n\nbad\n")).unwrap();
        let (line, _) = GossipKeys::read_file(&path).unwrap_err();
        assert_eq!(line, Some(4));
        std::fs::write(&path, format!("{KEY}\n")).unwrap();
        assert_eq!(GossipKeys::read_file(&path).unwrap().len(), 1);
        assert_eq!(resolve_keys_file(Path::new("/app"), "keys"), PathBuf::from("/app/keys"));
    }
}
