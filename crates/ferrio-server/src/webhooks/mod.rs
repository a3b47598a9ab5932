//! Webhooks: lifecycle and client events posted to a backend, signed and at least once; RPC
//! events whose backend reply becomes the client's ack.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::values::{self, List, Millis};

/// `[webhooks]`: where events go and how hard ferrio tries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhookSettings {
    /// The backend's URL; unset turns webhooks (and RPC events) off.
    #[serde(
        deserialize_with = "values::opt_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub url: Option<String>,
    /// The shared secret the signature is made with.
    #[serde(
        deserialize_with = "values::opt_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub secret: Option<String>,
    /// Lifecycle events to send: `connection`, `disconnection`, `join`, `leave`.
    pub events: List,
    /// How long one request may take.
    pub timeout: Millis,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            url: None,
            secret: None,
            events: List::of(&["connection", "disconnection", "join", "leave"]),
            timeout: Millis(Duration::from_secs(5)),
        }
    }
}
