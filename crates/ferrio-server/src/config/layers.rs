//! Where each key's value came from: the TOML file, a `FERRIO_…` environment variable or a
//! command-line flag (later layers win), merged into one table that remembers the source of
//! every key so errors can name it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

/// Prefix of the environment variables that override keys.
pub const ENV_PREFIX: &str = "FERRIO_";
/// Separates a section from its key in a variable name: `FERRIO_LIMITS__MAX_CONNECTIONS`.
pub const ENV_NESTING: &str = "__";
/// The variable that names the configuration file (like `--config`), not a key itself.
pub const ENV_CONFIG_FILE: &str = "FERRIO_CONFIG";

/// The origin of a configuration value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Env(name) => write!(f, "environment variable {name}"),
            Source::Flag(name) => write!(f, "flag {name}"),
        }
    }
}

/// A configuration error that names the key and where its value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub source: Source,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{} ({})", self.message, self.source)
        } else {
            write!(f, "`{}` ({}): {}", self.key, self.source, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The merged layers and the source of each key path (`limits.max_connections`).
#[derive(Debug, Default)]
pub struct Layers {
    pub table: Table,
    sources: BTreeMap<String, Source>,
}

impl Layers {
    /// The source of `key`, or of the closest section that holds it.
    pub fn source_of(&self, key: &str) -> Source {
        let mut key = key;
        loop {
            if let Some(source) = self.sources.get(key) {
                return source.clone();
            }
            match key.rfind(['.', '[']) {
                Some(i) => key = &key[..i],
                None => return Source::Default,
            }
        }
    }

    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            key: key.to_owned(),
            source: self.source_of(key),
            message: message.into(),
        }
    }

    /// Reads a TOML file as the bottom layer.
    pub fn add_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let source = Source::File(path.to_owned());
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            key: String::new(),
            source: source.clone(),
            message: format!("cannot read the configuration: {e}"),
        })?;
        let table: Table = toml::from_str(&text).map_err(|e| ConfigError {
            key: String::new(),
            source: source.clone(),
            message: format!("invalid TOML: {}", e.to_string().trim_end()),
        })?;
        self.merge(table, &source);
        Ok(())
    }

    /// Adds every `FERRIO_…` variable. Returns the names of variables that map to no key of
    /// a known section but might belong to other programs (they are not errors: see
    /// [`classify_env`]).
    pub fn add_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) {
        let mut vars: Vec<_> = vars
            .into_iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX) && name != ENV_CONFIG_FILE)
            .collect();
        vars.sort();
        for (name, raw) in vars {
            let path: Vec<String> = name[ENV_PREFIX.len()..]
                .split(ENV_NESTING)
                .map(str::to_ascii_lowercase)
                .collect();
            if path.iter().any(String::is_empty) {
                continue;
            }
            let source = Source::Env(name.clone());
            self.set(&path, env_value(&raw), &source);
        }
    }

    /// Sets one key from a flag.
    pub fn add_flag(&mut self, path: &[&str], value: Value, flag: &str) {
        let path: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
        self.set(&path, value, &Source::Flag(flag.to_owned()));
    }

    fn merge(&mut self, table: Table, source: &Source) {
        for (key, value) in table {
            self.set(std::slice::from_ref(&key), value, source);
        }
    }

    fn set(&mut self, path: &[String], value: Value, source: &Source) {
        let dotted = path.join(".");
        // Tables merge key by key; anything else replaces what was there.
        if let Value::Table(inner) = value {
            self.sources.entry(dotted).or_insert_with(|| source.clone());
            for (key, v) in inner {
                let mut sub = path.to_vec();
                sub.push(key);
                self.set(&sub, v, source);
            }
            return;
        }
        let mut table = &mut self.table;
        for (i, segment) in path[..path.len() - 1].iter().enumerate() {
            let entry = table
                .entry(segment.clone())
                .or_insert_with(|| Value::Table(Table::new()));
            if !entry.is_table() {
                // A scalar where a section belongs: keep the scalar so the error names it.
                self.sources.insert(path[..=i].join("."), source.clone());
                return;
            }
            table = match entry {
                Value::Table(t) => t,
                _ => return,
            };
        }
        table.insert(path[path.len() - 1].clone(), value);
        self.sources
            .retain(|k, _| !(k == &dotted || k.starts_with(&format!("{dotted}."))));
        self.sources.insert(dotted, source.clone());
    }
}

/// An environment value as TOML would read it when it is a number, a boolean or an array;
/// anything else is a string as written.
fn env_value(raw: &str) -> Value {
    let trimmed = raw.trim();
    let looks_typed = trimmed == "true"
        || trimmed == "false"
        || trimmed.starts_with('[')
        || trimmed.starts_with('"')
        || trimmed.parse::<i64>().is_ok()
        || trimmed
            .parse::<f64>()
            .is_ok_and(|f| f.is_finite() && trimmed.contains('.'));
    if looks_typed
        && let Ok(mut table) = toml::from_str::<Table>(&format!("v = {trimmed}"))
        && let Some(v) = table.remove("v")
    {
        return v;
    }
    Value::String(raw.to_owned())
}

/// How an environment variable that names no key is treated.
#[derive(Debug, PartialEq, Eq)]
pub enum UnknownEnv {
    /// Under a known section, or a near miss of a known key: a typo, an error.
    Error,
    /// Some other program's variable that shares the prefix (`FERRIO_BIN`): ignored, with a
    /// warning.
    Ignore,
}

/// Decides whether an unknown key that came from a variable is a typo or someone else's
/// variable. `top_level` lists the known top-level keys and sections.
pub fn classify_env(key: &str, top_level: &[&str]) -> UnknownEnv {
    let first = key.split(['.', '[']).next().unwrap_or(key);
    if key.contains('.') && top_level.contains(&first) {
        return UnknownEnv::Error;
    }
    if top_level.iter().any(|k| edit_distance(k, first) <= 2) {
        return UnknownEnv::Error;
    }
    UnknownEnv::Ignore
}

/// The closest known key, for "did you mean" hints.
pub fn closest<'a>(key: &str, known: &'a [String]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(k, key), k.as_str()))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
