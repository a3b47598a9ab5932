//! `config_toml`: the configuration loader of `ferrio serve` / `ferrio check-config` on a TOML
//! file: `Settings::load` (parse, unknown keys, types, defaults, validation), then what
//! `check-config` prints and what `serve` builds from the settings before it binds. A loaded
//! configuration must print as TOML, and its effective values written back as a file must
//! load again to the same effective configuration.
//!
//! Input: the file's bytes. The loader reads only a path, so each input is written to a file
//! of this process (in /dev/shm when there is one). Inputs naming a `*_file` key are skipped:
//! the loader would read whatever path the fuzzer wrote (`/dev/zero`, a FIFO...).

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use ferrio_server::config::{Inputs, Loaded, Settings};
use libfuzzer_sys::fuzz_target;

fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            shm.to_owned()
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("ferrio-fuzz-config-{}.toml", std::process::id()))
    })
}

/// Loads `text` as the configuration file, with no environment and no flags.
fn load(text: &[u8]) -> Result<Loaded, ferrio_server::config::ConfigError> {
    std::fs::write(scratch(), text).expect("write the scratch file");
    let loaded = Settings::load(Inputs {
        file: Some(scratch().clone()),
        env: Vec::new(),
        flags: Vec::new(),
    });
    // Nothing reads it after the load; removing it leaves nothing behind when the run ends.
    let _ = std::fs::remove_file(scratch());
    loaded
}

/// Whether any key, at any depth, ends in `_file`.
fn names_a_file(table: &toml::Table) -> bool {
    table
        .iter()
        .any(|(key, value)| key.ends_with("_file") || value_names_a_file(value))
}

fn value_names_a_file(value: &toml::Value) -> bool {
    match value {
        toml::Value::Table(t) => names_a_file(t),
        toml::Value::Array(items) => items.iter().any(value_names_a_file),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(table) = toml::from_str::<toml::Table>(text)
        && names_a_file(&table)
    {
        return;
    }
    let loaded = match load(data) {
        Ok(loaded) => loaded,
        Err(e) => {
            // The message `ferrio` prints.
            let _ = e.to_string();
            return;
        }
    };
    let settings = &loaded.settings;

    // check-config.
    let _ = ferrio_server::server::check_exposure(settings);
    let printed = settings.to_redacted_toml();
    if let Err(e) = toml::from_str::<toml::Table>(&printed) {
        panic!("check-config prints invalid TOML: {e}\n{printed}");
    }

    // What serve builds from the settings before it binds.
    let _ = settings.library_config();
    let _ = ferrio_server::origin::OriginPolicy::new(settings);
    let _ = ferrio_server::events::EventRules::new(settings, &loaded.layers);

    // The effective configuration, written back as a file, loads again unchanged.
    let Ok(effective) = toml::to_string_pretty(settings) else {
        return;
    };
    match load(effective.as_bytes()) {
        Ok(again) => assert_eq!(
            again.settings.to_redacted_toml(),
            printed,
            "the effective configuration loads differently:\n{effective}"
        ),
        Err(e) => panic!("the effective configuration does not load: {e}\n{effective}"),
    }
});
