//! ferrio: a Socket.IO v4 server (Engine.IO v4, Socket.IO protocol v5) for Rust applications.
//!
//! ```no_run
//! use ferrio::{Config, Io};
//!
//! # async fn run() -> std::io::Result<()> {
//! let io = Io::builder(Config::default())
//!     .ns("/", |ns| {
//!         ns.on_connect(|socket| {
//!             let _ = socket.emit("hello", "world");
//!         })
//!         .on("chat", |socket, mut event| {
//!             // Everyone else in the room gets the message; the sender gets an ack.
//!             let room = event.arg::<String>(0).unwrap_or_default();
//!             let _ = socket.to(room.as_str()).emit("chat", event.payload().clone());
//!             event.ack(serde_json::json!({ "ok": true }));
//!         })
//!     })
//!     .build();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! ferrio::serve(listener, io, std::future::pending(), std::time::Duration::from_secs(5)).await
//! # }
//! ```
//!
//! The data path: a frame is decoded once on its connection's task and dispatched to the
//! namespace's handler in arrival order; a broadcast is encoded once and the same bytes are
//! queued for every recipient. Every queue is bounded.

pub mod adapter;
pub mod body;
pub mod builtins;
mod client;
pub mod config;
pub mod engine;
pub mod engine_io;
mod handshake;
mod io;
pub mod metrics;
mod namespace;
mod operators;
mod payload;
mod recovery;
pub mod service;
mod sid;
mod socket;

pub use adapter::{
    Adapter, AdapterError, BroadcastFlags, BroadcastOptions, EncodedPacket, HistoryStore, LocalAdapter,
    LogRefusal, LoggedPacket, LoggedSession, Membership, Room, Sent, SessionLog, SocketInfo,
};
pub use config::{AllowRequest, Config, Cors, HandshakeRequest, OriginCheck, Transports};
pub use engine::{CloseReason, RemoteAddr, SendError, TransportKind};
pub use ferrio_proto as proto;
pub use handshake::Handshake;
pub use io::{ConnectionHandle, ConnectionObserver, Io, IoBuilder};
pub use namespace::{
    AdapterContext, AdapterFactory, ClusterFeed, ConnectRequest, Namespace, NamespaceBuilder, RoomChange,
    ServerEvent,
};
pub use operators::{BroadcastAcks, BroadcastOperator, Confirmation, EmitError};
pub use payload::{AckSender, Event, Payload};
pub use recovery::{History, HistoryError, HistoryMessage, RecoveryConfig, RoomWindow, parse_log_id};
pub use service::{FerrioLayer, ServeOptions, serve, serve_with};
pub use sid::Sid;
pub use socket::{Accepted, AckError, ConnectError, ConnectOutcome, DisconnectReason, Socket};
