//! Configuration errors: each names what is wrong and where.

use std::fmt;
use std::path::PathBuf;

/// A line and column in a configuration file, both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` in `text`.
    pub fn of_offset(text: &str, offset: usize) -> Self {
        LineIndex::new(text).position(text, offset)
    }
}

/// Where each line of a text starts, for turning many byte offsets into
/// positions without rescanning the text for each (a file of many keys).
#[derive(Debug, Clone)]
pub struct LineIndex(Vec<usize>);

impl LineIndex {
    pub fn new(text: &str) -> Self {
        Self(std::iter::once(0).chain(text.match_indices('\n').map(|(at, _)| at + 1)).collect())
    }

    /// The 1-based line and column (in characters) of byte `offset`.
    pub fn position(&self, text: &str, offset: usize) -> Position {
        let offset = offset.min(text.len());
        let line = self.0.partition_point(|start| *start <= offset).max(1);
        let start = self.0[line - 1];
        let column = text.get(start..offset).map_or(0, |before| before.chars().count()) + 1;
        Position { line, column }
    }
}

/// One configuration problem. It names the key, variable or flag, and the
/// file with line and column where they are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    pub position: Option<Position>,
    pub key: Option<String>,
    pub variable: Option<String>,
    pub flag: Option<String>,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self { file: None, position: None, key: None, variable: None, flag: None, message: message.into() }
    }

    pub(crate) fn in_file(mut self, file: impl Into<PathBuf>, position: Option<Position>) -> Self {
        self.file = Some(file.into());
        self.position = position;
        self
    }

    pub(crate) fn for_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub(crate) fn for_variable(mut self, variable: impl Into<String>) -> Self {
        self.variable = Some(variable.into());
        self
    }

    pub(crate) fn for_flag(mut self, flag: impl Into<String>) -> Self {
        self.flag = Some(flag.into());
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if let Some(Position { line, column }) = self.position {
                write!(f, ":{line}:{column}")?;
            }
            f.write_str(": ")?;
        }
        if let Some(variable) = &self.variable {
            write!(f, "variable {variable}")?;
            if let Some(key) = &self.key {
                write!(f, " (key {key})")?;
            }
            f.write_str(": ")?;
        } else if let Some(flag) = &self.flag {
            write!(f, "flag {flag}: ")?;
        } else if let Some(key) = &self.key {
            write!(f, "key {key}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every error of one load, reported together, with the hints the same
/// load found (a misspelled key or variable is often the cause of an error:
/// the hint must not be lost because loading failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    pub errors: Vec<ConfigError>,
    pub hints: Vec<String>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.errors.len();
        write!(f, "configuration is invalid ({count} error{}):", if count == 1 { "" } else { "s" })?;
        for error in &self.errors {
            write!(f, "\n  - {error}")?;
        }
        if !self.hints.is_empty() {
            f.write_str("\nhints:")?;
            for hint in &self.hints {
                write!(f, "\n  - {hint}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_of_offset_counts_lines_and_columns() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(Position::of_offset(text, 0), Position { line: 1, column: 1 });
        assert_eq!(Position::of_offset(text, 11), Position { line: 2, column: 6 });
    }

    #[test]
    fn display_names_file_position_variable_and_key() {
        let error = ConfigError::new("expected a decimal integer, got \"abc\"")
            .for_key("cluster.expectedNodes")
            .in_file("config/app.toml", Some(Position { line: 3, column: 17 }));
        assert_eq!(
            error.to_string(),
            "config/app.toml:3:17: key cluster.expectedNodes: expected a decimal integer, got \"abc\""
        );
        let error = ConfigError::new("bad").for_variable("ARLEN_PORT").for_key("port");
        assert_eq!(error.to_string(), "variable ARLEN_PORT (key port): bad");
    }
}
