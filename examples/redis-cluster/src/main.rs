//! A ferrio node of a Redis-backed cluster. Start several on one Redis and clients of any
//! node reach each other:
//!
//! ```sh
//! redis-server --port 6379 &
//! cargo run -p redis-cluster -- --listen 127.0.0.1:3001 --redis redis://127.0.0.1:6379 &
//! cargo run -p redis-cluster -- --listen 127.0.0.1:3002 --redis redis://127.0.0.1:6379 &
//! # a client on :3001 that joins "lobby" gets what a client on :3002 publishes to "lobby"
//! ```
//!
//! Clients get the built-in `join`, `leave` and `publish` events. With `--cluster-events`
//! they can also drive the cluster-wide operations (the interop tests and the benchmark use
//! them; a real app would not let clients do this):
//!
//! | event | does |
//! |---|---|
//! | `broadcast(event, data)` | `io.emit` |
//! | `to-room(room, event, data)` | `io.to(room).emit` |
//! | `emit-ack(room, event, data)` → answers | `io.to(room).timeout(3s).emitWithAck` |
//! | `fetch(room?)` → `[{id, rooms, data}]` | `io.in(room).fetchSockets()` |
//! | `sockets-join(room, new)`, `sockets-leave(room, old)`, `disconnect-room(room)` | the same, cluster-wide |
//! | `server-emit(event, arg)` / `server-emit-ack(event, arg)` → answers | `io.serverSideEmit` |
//! | `set-data(value)` | `socket.data = value` |
//! | `server-count` → n | `adapter.serverCount()` |
//! | `node-info` → `{port}` | which node the client reached |
//!
//! Every server-side emit named `hello` is passed on to this node's clients as
//! `server-event` and, when asked, answered with `"ack from <port>"`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ferrio::builtins::RoomEvents;
use ferrio::{Config, Event, Io, NamespaceBuilder, Payload, RecoveryConfig, Socket};
use ferrio_redis::{Mode, RedisAdapter};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    Classic,
    Sharded,
    Streams,
}

#[derive(Debug, Parser)]
#[command(
    name = "redis-cluster-node",
    about = "A ferrio node of a Redis-backed cluster"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Redis URL (one server).
    #[arg(long, default_value = "redis://127.0.0.1:6379", conflicts_with = "cluster")]
    redis: String,
    /// Redis Cluster seed nodes, comma-separated (`redis://host:port,...`).
    #[arg(long, value_delimiter = ',')]
    cluster: Vec<String>,
    /// Wire format: classic (`createAdapter`) or sharded (`createShardedAdapter`).
    #[arg(long, value_enum, default_value = "classic")]
    mode: ModeArg,
    /// Channel prefix.
    #[arg(long, default_value = "socket.io")]
    key: String,
    /// Let clients drive cluster-wide operations (see the module docs).
    #[arg(long)]
    cluster_events: bool,
    /// Turn on connection-state recovery with this `max_disconnection_duration`, in
    /// milliseconds (in streams mode sessions are kept in Redis, so a client recovers on any
    /// node; in the other modes only on the node it was on).
    #[arg(long, value_name = "MS")]
    recovery: Option<u64>,
    /// Streams mode: about how many entries the stream keeps (`maxLen`, default 10,000).
    #[arg(long, value_name = "ENTRIES")]
    stream_max_len: Option<usize>,
    /// With `--recovery`: rooms matching this pattern (`name` or `prefix*`) keep a window of
    /// their own, 100 messages and 10 minutes each, in memory and in Redis (`[history]` of
    /// `ferrio serve`).
    #[arg(long, value_name = "PATTERN")]
    history: Option<String>,
}

fn room_arg(event: &Event, i: usize) -> Option<String> {
    event.arg::<String>(i).ok()
}

/// Argument `i` with the event's binary attachments (placeholders keep their numbers).
fn data_arg(event: &Event, i: usize) -> Payload {
    Payload {
        args: vec![event.args().get(i).cloned().unwrap_or(Value::Null)],
        attachments: event.payload().attachments.clone(),
    }
}

fn spawn_ack<F>(mut event: Event, work: F)
where
    F: std::future::Future<Output = Value> + Send + 'static,
{
    let ack = event.take_ack();
    tokio::spawn(async move {
        let answer = work.await;
        if let Some(ack) = ack {
            ack.send(answer);
        }
    });
}

fn selection(socket: &Socket, room: Option<String>) -> ferrio::BroadcastOperator {
    match room {
        Some(room) => socket.ns().to(room.as_str()),
        None => socket.ns().broadcast(),
    }
}

fn cluster_events(ns: NamespaceBuilder, port: u16) -> NamespaceBuilder {
    ns.on("broadcast", |socket, mut event| {
        let name = room_arg(&event, 0).unwrap_or_default();
        let ok = socket.ns().emit(&name, data_arg(&event, 1)).is_ok();
        event.ack(json!(ok));
    })
    .on("to-room", |socket, mut event| {
        let (room, name) = (room_arg(&event, 0).unwrap_or_default(), room_arg(&event, 1).unwrap_or_default());
        let ok = socket.ns().to(room.as_str()).emit(&name, data_arg(&event, 2)).is_ok();
        event.ack(json!(ok));
    })
    .on("emit-ack", |socket, event| {
        let (room, name) = (room_arg(&event, 0).unwrap_or_default(), room_arg(&event, 1).unwrap_or_default());
        let data = data_arg(&event, 2);
        let op = socket.ns().to(room.as_str()).timeout(Duration::from_secs(3));
        spawn_ack(event, async move {
            match op.emit_with_ack(&name, data).await {
                Ok(acks) => Value::Array(
                    acks.responses
                        .into_iter()
                        .map(|(_, p)| p.args.into_iter().next().unwrap_or(Value::Null))
                        .collect(),
                ),
                Err(e) => json!({"error": e.to_string()}),
            }
        });
    })
    .on("fetch", |socket, event| {
        let op = selection(socket, room_arg(&event, 0));
        spawn_ack(event, async move {
            match op.fetch_sockets().await {
                Ok(sockets) => Value::Array(
                    sockets
                        .into_iter()
                        .map(|s| json!({"id": s.id.as_str(), "rooms": s.rooms.iter().map(|r| r.as_ref()).collect::<Vec<_>>(), "data": s.data}))
                        .collect(),
                ),
                Err(e) => json!({"error": e.to_string()}),
            }
        });
    })
    .on("sockets-join", |socket, event| {
        let op = selection(socket, room_arg(&event, 0));
        let room = room_arg(&event, 1).unwrap_or_default();
        spawn_ack(event, async move { json!(op.sockets_join(room.as_str()).await.is_ok()) });
    })
    .on("sockets-leave", |socket, event| {
        let op = selection(socket, room_arg(&event, 0));
        let room = room_arg(&event, 1).unwrap_or_default();
        spawn_ack(event, async move { json!(op.sockets_leave(room.as_str()).await.is_ok()) });
    })
    .on("disconnect-room", |socket, event| {
        let op = selection(socket, room_arg(&event, 0));
        spawn_ack(event, async move { json!(op.disconnect_sockets(false).await.is_ok()) });
    })
    .on("server-emit", |socket, event| {
        let ns = socket.ns().clone();
        let name = room_arg(&event, 0).unwrap_or_default();
        let arg = event.args().get(1).cloned().unwrap_or(Value::Null);
        spawn_ack(event, async move { json!(ns.server_side_emit(&name, vec![arg]).await.is_ok()) });
    })
    .on("server-emit-ack", |socket, event| {
        let ns = socket.ns().clone();
        let name = room_arg(&event, 0).unwrap_or_default();
        let arg = event.args().get(1).cloned().unwrap_or(Value::Null);
        spawn_ack(event, async move {
            match ns.server_side_emit_with_ack(&name, vec![arg], Duration::from_secs(3)).await {
                Ok(answers) => Value::Array(answers),
                Err(e) => json!({"error": e.to_string()}),
            }
        });
    })
    .on("set-data", |socket, mut event| {
        socket.set_data(event.args().first().cloned().unwrap_or(Value::Null));
        event.ack(json!(true));
    })
    .on("node-info", move |socket, mut event| {
        let transport = match socket.transport() {
            ferrio::TransportKind::Polling => "polling",
            ferrio::TransportKind::WebSocket => "websocket",
        };
        event.ack(json!({"port": port, "transport": transport}));
    })
    .on("server-count", |socket, event| {
        let ns = socket.ns().clone();
        spawn_ack(event, async move { json!(ns.adapter().server_count().await.unwrap_or(0)) });
    })
    .on_server_event("hello", move |ns, mut event| {
        let _ = ns.broadcast().local().emit("server-event", Value::Array(event.args.clone()));
        if event.wants_ack() {
            event.ack(json!(format!("ack from {port}")));
        }
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let mode = match args.mode {
        ModeArg::Classic => Mode::Classic,
        ModeArg::Sharded => Mode::Sharded,
        ModeArg::Streams => Mode::Streams,
    };
    let builder = if args.cluster.is_empty() {
        RedisAdapter::builder(args.redis.clone())
    } else {
        RedisAdapter::cluster_builder(args.cluster.clone())
    };
    let mut builder = builder.key(args.key.clone()).mode(mode);
    if let Some(entries) = args.stream_max_len {
        builder = builder.stream_max_len(entries);
    }
    let windows: Vec<ferrio::RoomWindow> = args
        .history
        .iter()
        .map(|pattern| ferrio::RoomWindow {
            pattern: pattern.clone(),
            size: 100,
            ttl: Duration::from_secs(600),
        })
        .collect();
    // Kept in Redis too (with recovery, as `ferrio serve` does).
    if args.recovery.is_some() {
        builder = builder.history(windows.clone());
    }
    let redis = builder.connect().await?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let port = listener.local_addr()?.port();
    let with_cluster_events = args.cluster_events;
    let config = Config {
        recovery: args.recovery.map(|ms| RecoveryConfig {
            max_disconnection_duration: Duration::from_millis(ms),
            rooms: windows,
            ..RecoveryConfig::default()
        }),
        ..Config::default()
    };
    let io = Io::builder(config)
        .adapter(redis.factory())
        .ns("/", move |ns| {
            let ns = RoomEvents::default().install(ns);
            if with_cluster_events {
                cluster_events(ns, port)
            } else {
                ns
            }
        })
        .build();
    tracing::info!(mode = ?mode, recovery_ms = ?args.recovery, "listening on {}", listener.local_addr()?);
    // The tests and scripts wait for this line.
    eprintln!("listening on {}", listener.local_addr()?);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    ferrio::serve(listener, io, shutdown, Duration::from_secs(5)).await?;
    Ok(())
}
