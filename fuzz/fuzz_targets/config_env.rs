//! `ARLEN_*` environment values through the real loader: any value of any
//! key (and of the legacy `MOJOOBJC_*` names) is accepted or refused with an
//! error naming the variable; none panics.
#![no_main]

use arlen_config::{LoadOptions, MapEnvironment, KEYS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut vars = Vec::new();
    // Each field: one byte choosing the key (and prefix), then the value.
    for field in arlen_fuzz::fields(data) {
        let Some((&choice, value)) = field.split_first() else { continue };
        let spec = &KEYS[usize::from(choice) % KEYS.len()];
        let prefix = if choice & 0x80 == 0 { "ARLEN_" } else { "MOJOOBJC_" };
        let Ok(value) = std::str::from_utf8(value) else { continue };
        vars.push((format!("{prefix}{}", spec.env), value.to_owned()));
    }
    match arlen_config::load(&LoadOptions::new("/nonexistent"), &MapEnvironment::new(vars)) {
        Ok(loaded) => assert!(loaded.config.cluster.expected_nodes >= 1, "expected nodes are clamped to at least 1"),
        Err(errors) => assert!(
            errors.to_string().contains("ARLEN_")
                || errors.to_string().contains("MOJOOBJC_")
                || errors.to_string().contains("key"),
            "{errors}"
        ),
    }
});
