//! Per-event rules from `[events."<name>"]`: a JSON Schema the payload must match, forwarding
//! to the webhook backend, or handling as an RPC whose backend reply becomes the ack.

pub mod reserved;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use ferrio::Payload;
use ferrio::proto::socket::RESERVED_EVENTS;
use jsonschema::Validator;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::{ConfigError, Layers, Settings};

pub use reserved::ServerEvents;

/// How many schema violations an `invalid_payload` answer lists at most.
const MAX_DETAILS: usize = 5;

/// Events the server itself handles; they may have a schema but cannot be RPCs or forwarded
/// (the `join` and `leave` webhooks report what the room events did).
pub const BUILT_IN: &[&str] = &["join", "leave", "publish", "presence"];

/// One client event's rules.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct EventSettings {
    /// A JSON Schema (any draft the `jsonschema` crate knows; 2020-12 when `$schema` is
    /// absent) for the event's first argument (`null` when it has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    /// The same, read from a JSON file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_file: Option<PathBuf>,
    /// Forward each such event to the webhook backend (type `event`).
    pub webhook: bool,
    /// Forward each such event to the backend and answer the client's ack with its reply.
    pub rpc: bool,
}

/// The checked rules of every configured event.
#[derive(Clone, Default)]
pub struct EventRules {
    schemas: HashMap<String, Arc<Validator>>,
    forwarded: Vec<String>,
    rpcs: Vec<String>,
}

impl std::fmt::Debug for EventRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRules")
            .field("schemas", &self.schemas.keys().collect::<Vec<_>>())
            .field("forwarded", &self.forwarded)
            .field("rpcs", &self.rpcs)
            .finish()
    }
}

fn key(name: &str, leaf: &str) -> String {
    format!("events.\"{name}\".{leaf}")
}

impl EventRules {
    /// Compiles the schemas; every mistake names its key.
    pub fn new(settings: &Settings, layers: &Layers) -> Result<Self, ConfigError> {
        let mut rules = Self::default();
        for (name, event) in &settings.events {
            let schema = match (&event.schema, &event.schema_file) {
                (Some(_), Some(_)) => {
                    return Err(layers.error(
                        &key(name, "schema_file"),
                        "set `schema` or `schema_file`, not both",
                    ));
                }
                (Some(schema), None) => Some(schema.clone()),
                (None, Some(path)) => {
                    let bytes = crate::config::read_key_file(layers, &key(name, "schema_file"), path)?;
                    let schema = serde_json::from_slice(&bytes).map_err(|e| {
                        layers.error(
                            &key(name, "schema_file"),
                            format!("{} is not JSON: {e}", path.display()),
                        )
                    })?;
                    Some(schema)
                }
                (None, None) => None,
            };
            if let Some(schema) = schema {
                let validator = jsonschema::validator_for(&schema).map_err(|e| {
                    layers.error(&key(name, "schema"), format!("not a valid JSON Schema: {e}"))
                })?;
                rules.schemas.insert(name.clone(), Arc::new(validator));
            }
            if event.webhook {
                rules.forwarded.push(name.clone());
            }
            if event.rpc {
                rules.rpcs.push(name.clone());
            }
        }
        Ok(rules)
    }

    /// Whether the event's payload matches its schema (events without one always do). A
    /// mismatch is the answer the client's ack gets: `{"ok":false,"error":"invalid_payload",
    /// "details":[{"path","message"}…]}`.
    pub fn check(&self, name: &str, args: &[Value]) -> Result<(), Payload> {
        let Some(validator) = self.schemas.get(name) else {
            return Ok(());
        };
        let instance = args.first().unwrap_or(&Value::Null);
        let details: Vec<Value> = validator
            .iter_errors(instance)
            .take(MAX_DETAILS)
            .map(|e| json!({ "path": e.instance_path().as_str(), "message": e.to_string() }))
            .collect();
        if details.is_empty() {
            return Ok(());
        }
        Err(json!({ "ok": false, "error": "invalid_payload", "details": details }).into())
    }

    /// Whether any event has a schema.
    pub fn has_schemas(&self) -> bool {
        !self.schemas.is_empty()
    }

    /// Events forwarded to the webhook backend.
    pub fn forwarded(&self) -> &[String] {
        &self.forwarded
    }

    /// Events handled as RPCs.
    pub fn rpcs(&self) -> &[String] {
        &self.rpcs
    }
}

/// Checks the `[events]` keys that need no file.
pub fn validate(settings: &Settings, layers: &Layers) -> Result<(), ConfigError> {
    let events: &BTreeMap<String, EventSettings> = &settings.events;
    for (name, event) in events {
        let at = |leaf: &str| key(name, leaf);
        if name.is_empty() || name.len() > ferrio::builtins::MAX_NAME_LEN {
            return Err(layers.error(
                &format!("events.\"{name}\""),
                "an event name must have 1 to 256 bytes",
            ));
        }
        if RESERVED_EVENTS.contains(&name.as_str()) {
            return Err(layers.error(
                &format!("events.\"{name}\""),
                "a reserved event name (clients cannot send it)",
            ));
        }
        if event.rpc && event.webhook {
            return Err(layers.error(
                &at("webhook"),
                "an RPC event already goes to the backend; set `rpc` or `webhook`",
            ));
        }
        if (event.rpc || event.webhook) && settings.webhooks.url.is_none() {
            let leaf = if event.rpc { "rpc" } else { "webhook" };
            return Err(layers.error(&at(leaf), "needs `webhooks.url`"));
        }
        let taken = BUILT_IN.contains(&name.as_str()) || *name == settings.auth.refresh_event;
        if (event.rpc || event.webhook) && taken {
            let leaf = if event.rpc { "rpc" } else { "webhook" };
            return Err(layers.error(&at(leaf), "the server handles this event itself"));
        }
    }
    EventRules::new(settings, layers).map(|_| ())
}
