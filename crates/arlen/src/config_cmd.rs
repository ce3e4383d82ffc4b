//! `arlen config`: the effective configuration with provenance.

use std::path::PathBuf;
use std::process::ExitCode;

use arlen_config::{load, lookup_variable, Kind, LoadOptions, Loaded, ProcessEnvironment, Typed};
use serde_json::{json, Value};

use crate::cli::{ConfigArgs, Location};

/// Exit status for configuration errors.
pub const CONFIG_ERROR_EXIT: u8 = 2;

/// Load options from `--env`/`--app-root` and `ARLEN_APP_ROOT`.
pub fn load_options(location: &Location) -> LoadOptions {
    let from_variable = || {
        lookup_variable(&ProcessEnvironment, "APP_ROOT").map(|found| {
            if found.legacy {
                // Logging is not set up yet (it depends on the configuration).
                shout!("warning: {} is a legacy variable name; use ARLEN_APP_ROOT instead", found.name);
            }
            PathBuf::from(found.value)
        })
    };
    let app_root = location.app_root.clone().or_else(from_variable).unwrap_or_else(|| PathBuf::from("."));
    LoadOptions { app_root, env_name: location.env.clone(), ..LoadOptions::default() }
}

/// Loads, or prints every error and returns the exit code.
pub fn load_or_report(options: &LoadOptions) -> Result<Loaded, ExitCode> {
    load(options, &ProcessEnvironment).map_err(|errors| {
        shout!("arlen: {errors}");
        ExitCode::from(CONFIG_ERROR_EXIT)
    })
}

pub fn run(args: ConfigArgs) -> ExitCode {
    let loaded = match load_or_report(&load_options(&args.location)) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    for warning in &loaded.warnings {
        shout!("warning: {warning}");
    }
    if args.json {
        say!("{}", serde_json::to_string_pretty(&to_json(&loaded)).expect("json"));
    } else {
        say_raw!("{}", to_table(&loaded));
    }
    ExitCode::SUCCESS
}

fn typed_json(setting: &arlen_config::Setting) -> Value {
    match (&setting.spec.kind, &setting.value) {
        (Kind::Secret, _) => json!(setting.display_value()),
        (_, Typed::Bool(b)) => json!(b),
        (_, Typed::Integer(i)) => json!(i),
        (_, Typed::Text(t)) => json!(t),
        (_, Typed::List(items)) => json!(items),
        (_, Typed::Word { word, .. }) => json!(word),
        (_, Typed::Policy(policy)) => json!(policy.name()),
    }
}

fn to_json(loaded: &Loaded) -> Value {
    let settings: Vec<Value> = loaded
        .settings
        .iter()
        .map(|s| {
            json!({
                "key": s.spec.key,
                "value": typed_json(s),
                "source": s.source.to_string(),
                "variable": s.spec.variable(),
            })
        })
        .collect();
    json!({
        "env": loaded.config.env,
        "app_root": loaded.config.app_root.display().to_string(),
        "settings": settings,
        "warnings": loaded.warnings,
    })
}

/// Longest value shown in the table (`--json` shows every value whole).
const MAX_SHOWN_CHARS: usize = 200;

fn shown(value: String) -> String {
    let length = value.chars().count();
    if length <= MAX_SHOWN_CHARS {
        return value;
    }
    let head: String = value.chars().take(MAX_SHOWN_CHARS).collect();
    format!("{head}… ({length} characters; --json shows it whole)")
}

fn to_table(loaded: &Loaded) -> String {
    let rows: Vec<(String, String, String)> = loaded
        .settings
        .iter()
        .map(|s| (s.spec.key.to_owned(), shown(s.display_value()), s.source.to_string()))
        .collect();
    let key_width = rows.iter().map(|r| r.0.len()).max().unwrap_or(3).max(3);
    let value_width = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(5).max(5);
    let mut out = format!(
        "environment: {}\napp root:    {}\n\n{:key_width$}  {:value_width$}  SOURCE\n",
        loaded.config.env,
        loaded.config.app_root.display(),
        "KEY",
        "VALUE"
    );
    for (key, value, source) in rows {
        out.push_str(&format!("{key:key_width$}  {value:value_width$}  {source}\n"));
    }
    out
}
