//! `ferrio`, the standalone Socket.IO v4 server: configuration, JWT authentication, origin
//! policy, room permissions and limits on top of the `ferrio` library.
//!
//! With no configuration, `ferrio serve` listens on 127.0.0.1:3000 in development mode and
//! offers the built-in room events (`join`, `leave`, `publish`) on namespace `/`.

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod drain;
pub mod events;
pub mod front;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod origin;
pub mod presence;
pub mod rooms;
pub mod server;
pub mod stats;
pub mod webhooks;
