//! ferrio-client: a Socket.IO v4 client (Engine.IO v4, Socket.IO protocol v5) for Rust
//! services, command-line tools and load generators. It talks to ferrio and to any other
//! Socket.IO v4 server, such as the Node.js reference.
//!
//! ```no_run
//! use std::time::Duration;
//! use ferrio_client::{Client, Payload};
//! use serde::Deserialize;
//! use serde_json::json;
//!
//! #[derive(Debug, Deserialize)]
//! struct Chat {
//!     from: String,
//!     text: String,
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::new("http://127.0.0.1:3000")?;
//! let socket = client
//!     .socket("/")
//!     .auth_with(|| async { json!({ "token": "fresh token on every reconnect" }) })
//!     .ack_timeout(Duration::from_secs(5))
//!     .on_typed("message", |chat: Chat| println!("{}: {}", chat.from, chat.text))
//!     .connect();
//! socket.wait_connected().await?;
//!
//! // Acknowledged emits return a future.
//! let joined = socket.emit_with_ack("join", "lobby").await?;
//! println!("join answered {:?}", joined.args);
//!
//! // While disconnected, emits wait in the offline queue and go out in order on reconnection.
//! socket.emit("publish", json!({ "room": "lobby", "event": "message",
//!                                "data": { "from": "me", "text": "hello" } }))?;
//!
//! // Binary arguments travel as attachments.
//! socket.emit("upload", Payload::new().arg("photo.png").binary(vec![0x89, 0x50, 0x4e, 0x47]))?;
//! # Ok(()) }
//! ```
//!
//! What it does:
//!
//! - **Transports:** HTTP long-polling upgraded to WebSocket when the server and the path
//!   allow it (so it works through proxies that block WebSocket), or WebSocket only.
//! - **States:** each [`Socket`] is `Connecting`, `Connected`, `Disconnected { reason }` or
//!   `Reconnecting { attempt }` ([`ConnectionState`]), readable at any time and observable as
//!   a stream of transitions ([`Socket::state_changes`]).
//! - **Reconnection** with exponential backoff and jitter ([`Backoff`], the defaults of
//!   `socket.io-client`), reset on success; none after [`Socket::disconnect`] or a server-side
//!   namespace disconnect.
//! - **Heartbeat supervision:** no ping within `pingInterval + pingTimeout` means the
//!   connection is dead, and it is replaced.
//! - **Offline queue:** emits while disconnected are held (bounded, with an [`Overflow`]
//!   policy) and sent in order on reconnection; volatile emits are never queued.
//! - **Acks** with timeouts ([`Socket::emit_with_ack`]) and `retries`: a retry queue with
//!   one packet in flight, resent until acknowledged, as `socket.io-client` does.
//! - **Namespaces** over one connection, **auth** payloads (fixed or fetched on every
//!   reconnection), **binary** attachments, **connection-state recovery** (the socket keeps
//!   its id and receives what it missed; [`Socket::recovered`]), **typed** events via serde.
//!
//! Delivery guarantees are written down in `docs/delivery.md` of the repository.
//!
//! TLS (`https://`, `wss://`) is not built in: put the client behind a TLS-terminating
//! proxy, or use a plain-HTTP endpoint.

mod client;
mod config;
mod engine;
mod error;
mod payload;
mod queue;
mod socket;
mod state;
mod transport;

pub use client::{Client, ClientBuilder, SocketBuilder};
pub use config::{Auth, AuthFuture, ClientOptions, SocketOptions, Transport};
pub use error::{AckError, EmitError, Error};
pub use ferrio_proto::backoff::Backoff;
pub use payload::{AckSender, Event, Payload};
pub use queue::{Overflow, QueueLimits};
pub use socket::{AckFuture, Socket};
pub use state::{ConnectionState, DisconnectReason, StateChange, StateChanges};
