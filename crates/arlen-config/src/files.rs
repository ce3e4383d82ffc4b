//! Reading configuration files (OpenStep plist, TOML, JSON) into one tree shape.
//!
//! Every format becomes a `serde_json` object, so merging and lookups are the
//! same for all of them. Where the parser knows where a value sits (TOML), the
//! position of each leaf is kept for error messages.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{ConfigError, LineIndex, Position};

/// The file extensions Arlen reads, in the order they are looked for.
pub const EXTENSIONS: &[&str] = &["plist", "toml", "json"];

/// One configuration file, parsed.
#[derive(Debug, Clone)]
pub struct FileLayer {
    /// Path as shown to people (relative to the app root).
    pub display: PathBuf,
    pub root: Map<String, Value>,
    /// Dotted key → position of its value, where the format tells it.
    pub positions: HashMap<String, Position>,
}

impl FileLayer {
    /// The value at a dotted key, if present.
    pub fn get(&self, dotted: &str) -> Option<&Value> {
        lookup(&self.root, dotted)
    }

    /// Every leaf (non-object value) as a dotted key.
    pub fn leaf_keys(&self) -> Vec<String> {
        let mut out = Vec::new();
        collect_leaves(&self.root, "", &mut out);
        out
    }
}

pub(crate) fn lookup<'a>(root: &'a Map<String, Value>, dotted: &str) -> Option<&'a Value> {
    let mut segments = dotted.split('.');
    let mut current = root.get(segments.next()?)?;
    for segment in segments {
        current = current.as_object()?.get(segment)?;
    }
    Some(current)
}

fn collect_leaves(map: &Map<String, Value>, prefix: &str, out: &mut Vec<String>) {
    for (key, value) in map {
        let dotted = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match value {
            Value::Object(inner) => collect_leaves(inner, &dotted, out),
            _ => out.push(dotted),
        }
    }
}

/// Deep merge: objects merge key by key, anything else (lists included) replaces.
pub fn merge(base: &mut Map<String, Value>, overlay: &Map<String, Value>) {
    for (key, value) in overlay {
        match (base.get_mut(key), value) {
            (Some(Value::Object(base_inner)), Value::Object(overlay_inner)) => merge(base_inner, overlay_inner),
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Loads `<dir>/<stem>.<ext>` for whichever extension exists. A missing file
/// is `None`; two files for one layer, or a malformed one, add an error.
pub fn load_layer(app_root: &Path, relative_dir: &str, stem: &str, errors: &mut Vec<ConfigError>) -> Option<FileLayer> {
    let present: Vec<(&str, PathBuf)> = EXTENSIONS
        .iter()
        .map(|ext| (*ext, Path::new(relative_dir).join(format!("{stem}.{ext}"))))
        .filter(|(_, relative)| app_root.join(relative).is_file())
        .collect();
    let [(ext, relative)] = present.as_slice() else {
        if present.len() > 1 {
            let names: Vec<String> = present.iter().map(|(_, p)| p.display().to_string()).collect();
            errors.push(
                ConfigError::new(format!("more than one file for this layer: {}; keep one", names.join(", ")))
                    .in_file(Path::new(relative_dir).join(format!("{stem}.*")), None),
            );
        }
        return None;
    };
    let path = app_root.join(relative);
    // Bounded before it is read or parsed: a configuration file is small.
    if let Ok(metadata) = std::fs::metadata(&path) {
        if metadata.len() > MAX_FILE_BYTES {
            errors.push(
                ConfigError::new(format!(
                    "the file is {} bytes; configuration files are at most {MAX_FILE_BYTES} bytes",
                    metadata.len()
                ))
                .in_file(relative, None),
            );
            return None;
        }
    }
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) => {
            errors.push(ConfigError::new(format!("cannot read file: {error}")).in_file(relative, None));
            return None;
        }
    };
    match parse(ext, &text) {
        Ok((root, positions)) => Some(FileLayer { display: relative.clone(), root, positions }),
        Err((message, position)) => {
            errors.push(ConfigError::new(message).in_file(relative, position));
            None
        }
    }
}

type Parsed = (Map<String, Value>, HashMap<String, Position>);
type ParseFailure = (String, Option<Position>);

/// Largest configuration file read.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Deepest nesting of dictionaries and lists accepted (the parsers recurse).
pub const MAX_NESTING: usize = 64;

/// The first place where brackets nest deeper than [`MAX_NESTING`], found by a
/// scan that skips quoted strings and comments, before any parser recurses.
fn too_deep(text: &str) -> Option<Position> {
    let (mut depth, mut line, mut column) = (0usize, 1usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut comment = false;
    for c in text.chars() {
        column += 1;
        if c == '\n' {
            line += 1;
            column = 0;
            comment = false;
            continue;
        }
        if comment {
            continue;
        }
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some(c),
            '#' => comment = true,
            '{' | '[' | '(' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(Position { line, column });
                }
            }
            '}' | ']' | ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// Parses configuration text of the given format.
pub fn parse(ext: &str, text: &str) -> Result<Parsed, ParseFailure> {
    if text.trim().is_empty() {
        return Ok((Map::new(), HashMap::new()));
    }
    if let Some(position) = too_deep(text) {
        return Err((format!("dictionaries and lists nest deeper than {MAX_NESTING} levels here"), Some(position)));
    }
    match ext {
        "json" => parse_json(text),
        "toml" => parse_toml(text),
        "plist" => parse_plist(text),
        other => Err((format!("unsupported configuration format {other:?}"), None)),
    }
}

fn root_object(value: Value, found: &str) -> Result<Map<String, Value>, ParseFailure> {
    match value {
        Value::Object(map) => Ok(map),
        _ => Err((format!("the root must be a dictionary, found {found}"), Some(Position { line: 1, column: 1 }))),
    }
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a dictionary",
    }
}

fn parse_json(text: &str) -> Result<Parsed, ParseFailure> {
    let value: Value = serde_json::from_str(text).map_err(|error| {
        let position = Position { line: error.line(), column: error.column() };
        (format!("malformed JSON: {error}"), Some(position))
    })?;
    let name = json_type_name(&value);
    Ok((root_object(value, name)?, HashMap::new()))
}

fn parse_toml(text: &str) -> Result<Parsed, ParseFailure> {
    let value: toml::Value = toml::from_str(text).map_err(|error| {
        let position = error.span().map(|span| Position::of_offset(text, span.start));
        (format!("malformed TOML: {}", error.message()), position)
    })?;
    let json = toml_to_json(value);
    let name = json_type_name(&json);
    let root = root_object(json, name)?;
    let mut positions = HashMap::new();
    if let Ok(spanned) = toml::de::DeTable::parse(text) {
        collect_toml_positions(text, &LineIndex::new(text), spanned.get_ref(), "", &mut positions);
    }
    Ok((root, positions))
}

fn toml_to_json(value: toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => {
            serde_json::Number::from_f64(f).map_or_else(|| Value::String(f.to_string()), Value::Number)
        }
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(items.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(table) => Value::Object(table.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect()),
    }
}

fn collect_toml_positions(
    text: &str,
    lines: &LineIndex,
    table: &toml::de::DeTable<'_>,
    prefix: &str,
    out: &mut HashMap<String, Position>,
) {
    for (key, value) in table {
        let dotted = if prefix.is_empty() { key.get_ref().to_string() } else { format!("{prefix}.{}", key.get_ref()) };
        match value.get_ref() {
            toml::de::DeValue::Table(inner) => collect_toml_positions(text, lines, inner, &dotted, out),
            _ => {
                out.insert(dotted, lines.position(text, value.span().start));
            }
        }
    }
}

fn parse_plist(text: &str) -> Result<Parsed, ParseFailure> {
    // The parser stops after the first value; wrapping the text in a list makes
    // anything after the root dictionary an error. Lines stay where they were.
    let wrapped = format!("({}\n)", strip_plist_comments(text));
    let parsed = openstep_plist::Plist::parse(&wrapped).map_err(|error| plist_failure(&wrapped, &error))?;
    let mut items = match parsed {
        openstep_plist::Plist::Array(items) => items,
        _ => return Err(("malformed property list".to_owned(), None)),
    };
    if items.len() != 1 {
        return Err(("the file must hold exactly one dictionary".to_owned(), Some(Position { line: 1, column: 1 })));
    }
    let json = plist_to_json(items.remove(0));
    let name = json_type_name(&json);
    Ok((root_object(json, name)?, HashMap::new()))
}

fn plist_failure(wrapped: &str, error: &openstep_plist::Error) -> ParseFailure {
    use openstep_plist::Error as E;
    let lc = match error {
        E::UnexpectedChar { lc, .. }
        | E::UnclosedString { lc }
        | E::UnclosedData { lc }
        | E::BadData { lc }
        | E::UnknownEscape { lc }
        | E::InvalidUnicodeEscape { lc, .. }
        | E::NotAString { lc, .. }
        | E::ExpectedEquals { lc }
        | E::ExpectedComma { lc }
        | E::ExpectedSemicolon { lc }
        | E::ExpectedOpenBrace { lc }
        | E::ExpectedCloseBrace { lc }
        | E::ExpectedOpenParen { lc }
        | E::ExpectedCloseParen { lc }
        | E::ExpectedChar { lc, .. }
        | E::ExpectedNumber { lc }
        | E::ExpectedString { lc }
        | E::UnexpectedToken { lc, .. } => Some(lc.clone()),
        _ => None,
    };
    // A missing ',' in the wrapping list means text after the root: point at
    // that text rather than at the end of the dictionary.
    let lc = match (error, lc) {
        (E::ExpectedComma { .. }, Some(lc)) => {
            let offset = offset_of(wrapped, lc.line, lc.column);
            let skipped = wrapped[offset..].len() - wrapped[offset..].trim_start().len();
            Some(openstep_plist::error::LineColumn::from_pos(wrapped, offset + skipped))
        }
        (_, lc) => lc,
    };
    // Undo the one column the wrapping '(' added on the first line.
    let position = lc.map(|lc| Position {
        line: lc.line,
        column: if lc.line == 1 { lc.column.saturating_sub(1).max(1) } else { lc.column },
    });
    let message = error.to_string();
    let message = message.split(" at line ").next().unwrap_or(&message);
    let message = if matches!(error, E::ExpectedComma { .. }) {
        "unexpected text after the root dictionary".to_owned()
    } else {
        message.to_owned()
    };
    (format!("malformed property list: {message}"), position)
}

/// The byte offset of a 1-based line and column (columns counted in bytes).
fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let line_start: usize = text.split_inclusive('\n').take(line.saturating_sub(1)).map(str::len).sum();
    (line_start + column.saturating_sub(1)).min(text.len())
}

/// Replaces `// …` and `/* … */` comments outside quoted strings with spaces,
/// keeping newlines so positions do not move.
fn strip_plist_comments(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut in_string = false;
    while i < chars.len() {
        let c = chars[i];
        if in_string {
            out.push(c);
            if c == '\\' && i + 1 < chars.len() {
                out.push(chars[i + 1]);
                i += 2;
                continue;
            }
            in_string = c != '"';
            i += 1;
        } else if c == '"' {
            in_string = true;
            out.push(c);
            i += 1;
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            out.push_str("  ");
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                out.push(if chars[i] == '\n' { '\n' } else { ' ' });
                i += 1;
            }
            if i < chars.len() {
                out.push_str("  ");
                i += 2;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn plist_to_json(value: openstep_plist::Plist) -> Value {
    use openstep_plist::Plist;
    match value {
        Plist::Dictionary(dict) => {
            Value::Object(dict.into_iter().map(|(k, v)| (k.to_string(), plist_to_json(v))).collect())
        }
        Plist::Array(items) => Value::Array(items.into_iter().map(plist_to_json).collect()),
        Plist::String(s) => Value::String(s),
        Plist::Integer(i) => Value::from(i),
        Plist::Float(f) => serde_json::Number::from_f64(f).map_or_else(|| Value::String(f.to_string()), Value::Number),
        Plist::Data(bytes) => Value::String(bytes.iter().map(|b| format!("{b:02x}")).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plist_dictionary_lists_and_comments() {
        let text = "// app settings\n{\n  port = 8080; /* the port */\n  cluster = { enabled = YES; name = \"a // b\"; };\n  list = ( a, b );\n}\n";
        let (root, _) = parse("plist", text).unwrap();
        assert_eq!(root["port"], Value::from(8080));
        assert_eq!(root["cluster"]["enabled"], Value::from("YES"));
        assert_eq!(root["cluster"]["name"], Value::from("a // b"));
        assert_eq!(root["list"], serde_json::json!(["a", "b"]));
    }

    #[test]
    fn plist_errors_carry_line_and_column() {
        let (message, position) = parse("plist", "{\n  port = 8080\n  host = x;\n}").unwrap_err();
        assert!(message.contains("';'"), "{message}");
        assert_eq!(position.unwrap().line, 2);
    }

    #[test]
    fn plist_trailing_text_is_an_error() {
        let (message, position) = parse("plist", "{ port = 1; }\njunk").unwrap_err();
        assert!(message.contains("after the root"), "{message}");
        assert_eq!(position.unwrap().line, 2);
    }

    #[test]
    fn root_must_be_a_dictionary() {
        for (ext, text) in [("json", "[1, 2]"), ("plist", "(a, b)"), ("json", "3")] {
            let (message, _) = parse(ext, text).unwrap_err();
            assert!(message.contains("root must be a dictionary"), "{ext}: {message}");
        }
    }

    #[test]
    fn toml_positions_point_at_values() {
        let (root, positions) = parse("toml", "port = 1\n[cluster]\nexpectedNodes = \"abc\"\n").unwrap();
        assert_eq!(root["cluster"]["expectedNodes"], Value::from("abc"));
        assert_eq!(positions["cluster.expectedNodes"], Position { line: 3, column: 17 });
    }

    #[test]
    fn malformed_json_and_toml_name_line_and_column() {
        let (_, position) = parse("json", "{\n  \"port\": ,\n}").unwrap_err();
        assert_eq!(position.unwrap().line, 2);
        let (_, position) = parse("toml", "port = 1\nhost = \n").unwrap_err();
        assert_eq!(position.unwrap().line, 2);
    }

    #[test]
    fn merge_is_deep_for_dictionaries_and_replaces_lists() {
        let mut base = serde_json::json!({"cluster": {"name": "a", "enabled": true}, "list": [1, 2]});
        let overlay = serde_json::json!({"cluster": {"name": "b"}, "list": [3]});
        merge(base.as_object_mut().unwrap(), overlay.as_object().unwrap());
        assert_eq!(base, serde_json::json!({"cluster": {"name": "b", "enabled": true}, "list": [3]}));
    }
}
