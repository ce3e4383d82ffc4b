//! What the real-process tests share (each test file is its own crate and
//! includes this module: not every helper is used by every file).
#![allow(dead_code)]

use std::path::Path;

/// The `arlen` binary under test.
pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_arlen"))
}
