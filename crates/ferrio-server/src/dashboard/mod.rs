//! `/dashboard`: a live page of connections, message rates and rooms, behind an admin
//! credential, fed over ferrio itself.

use serde::{Deserialize, Serialize};

use crate::config::values;

/// `[dashboard]`: off unless a password is set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DashboardSettings {
    /// The admin password (HTTP Basic, user `admin`); unset turns the dashboard off.
    #[serde(
        deserialize_with = "values::opt_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub password: Option<String>,
}
