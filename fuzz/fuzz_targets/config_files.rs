//! Configuration files (plist, TOML, JSON) through the real loader: parsed,
//! merged, typed and validated. Any input is loaded or refused with errors
//! that name the file; none panics or overflows the stack.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use arlen_config::{LoadOptions, MapEnvironment};
use libfuzzer_sys::fuzz_target;

const EXTENSIONS: [&str; 3] = ["plist", "toml", "json"];

/// One application root per extension, so a layer never has two files.
fn roots() -> &'static [PathBuf; 3] {
    static ROOTS: OnceLock<[PathBuf; 3]> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("arlen-fuzz-config-{}", std::process::id()));
        EXTENSIONS.map(|ext| {
            let root = base.join(ext);
            std::fs::create_dir_all(root.join("config/environments")).expect("fuzz directory");
            root
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, text)) = data.split_first() else { return };
    let which = usize::from(selector % 3);
    let ext = EXTENSIONS[which];
    let root = &roots()[which];
    // Even selectors fill the application file, odd ones the environment's.
    let (path, other) = if selector & 4 == 0 {
        (root.join(format!("config/app.{ext}")), root.join(format!("config/environments/development.{ext}")))
    } else {
        (root.join(format!("config/environments/development.{ext}")), root.join(format!("config/app.{ext}")))
    };
    let _ = std::fs::remove_file(other);
    std::fs::write(&path, text).expect("write the fuzz file");
    match arlen_config::load(&LoadOptions::new(root), &MapEnvironment::default()) {
        Ok(loaded) => {
            for setting in &loaded.settings {
                let _ = format!("{:?}", setting.value);
            }
        }
        Err(errors) => {
            let text = errors.to_string();
            assert!(!text.is_empty(), "a refused configuration says why");
        }
    }
});
