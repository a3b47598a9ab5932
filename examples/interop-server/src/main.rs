//! The server the interop and conformance suites drive; see README.md beside this file.

use std::time::Duration;

use clap::Parser;
use ferrio::builtins::RoomEvents;
use ferrio::engine_io::{EngineIo, EngineMessage};
use ferrio::{Config, ConnectError, Cors, Io, Payload, Transports};
use serde_json::{Value, json};
use tower::Layer;

#[derive(Parser, Debug)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: String,
    #[arg(long)]
    ping_interval: Option<u64>,
    #[arg(long)]
    ping_timeout: Option<u64>,
    #[arg(long)]
    max_payload: Option<usize>,
    #[arg(long)]
    connect_timeout: Option<u64>,
    /// Comma-separated: polling,websocket.
    #[arg(long)]
    transports: Option<String>,
    /// Options the official conformance suites assume.
    #[arg(long)]
    conformance: bool,
    /// Turns on connection-state recovery, keeping sessions this many milliseconds.
    #[arg(long, value_name = "MS")]
    recovery: Option<u64>,
}

fn config(args: &Args) -> Result<Config, String> {
    let mut c = Config {
        cors: Cors::Any,
        ..Config::default()
    };
    if args.conformance {
        c.ping_interval = Duration::from_millis(300);
        c.ping_timeout = Duration::from_millis(200);
        c.connect_timeout = Duration::from_millis(1000);
    }
    if let Some(ms) = args.ping_interval {
        c.ping_interval = Duration::from_millis(ms);
    }
    if let Some(ms) = args.ping_timeout {
        c.ping_timeout = Duration::from_millis(ms);
    }
    if let Some(n) = args.max_payload {
        c.max_payload = n;
    }
    if let Some(ms) = args.connect_timeout {
        c.connect_timeout = Duration::from_millis(ms);
    }
    if let Some(ms) = args.recovery {
        c.recovery = Some(ferrio::RecoveryConfig {
            max_disconnection_duration: Duration::from_millis(ms),
            ..Default::default()
        });
    }
    if let Some(t) = &args.transports {
        c.transports = Transports::parse(t)?;
    }
    Ok(c)
}

const CALL_TIMEOUT: Duration = Duration::from_millis(2000);

fn build(config: Config) -> Io {
    Io::builder(config)
        .ns("/", |ns| {
            RoomEvents::default()
                .install(ns)
                .on_connect(|socket| {
                    let _ = socket.emit("auth", socket.auth().clone());
                })
                .on("message", |socket, event| {
                    let _ = socket.emit("message-back", event.payload().clone());
                })
                .on("message-with-ack", |_, mut event| {
                    let payload = event.payload().clone();
                    event.ack(payload);
                })
                .on("call-client", |socket, event| {
                    let (_, mut payload, ack) = event.into_parts();
                    let Some(Value::String(name)) = payload.args.first().cloned() else {
                        if let Some(ack) = ack {
                            ack.send(json!({ "error": "event name expected" }));
                        }
                        return;
                    };
                    payload.args.remove(0);
                    let socket = socket.clone();
                    tokio::spawn(async move {
                        let answer = socket.emit_with_ack_timeout(&name, payload, CALL_TIMEOUT).await;
                        if let Some(ack) = ack {
                            match answer {
                                Ok(reply) => ack.send(reply),
                                Err(_) => ack.send(json!({ "error": "timeout" })),
                            }
                        }
                    });
                })
                .on("rooms", |socket, mut event| {
                    let mut rooms: Vec<String> = socket.rooms().iter().map(|r| r.to_string()).collect();
                    rooms.sort();
                    event.ack(json!(rooms));
                })
                .on("broadcast-ack", |socket, event| {
                    let room = event.arg::<String>(0).unwrap_or_default();
                    let name = event.arg::<String>(1).unwrap_or_default();
                    let (_, _, ack) = event.into_parts();
                    let op = socket.ns().to(room.as_str()).timeout(CALL_TIMEOUT);
                    tokio::spawn(async move {
                        let responses: Vec<Value> = match op.emit_with_ack(&name, Payload::new()).await {
                            Ok(acks) => acks
                                .responses
                                .into_iter()
                                .map(|(_, p)| p.args.into_iter().next().unwrap_or(Value::Null))
                                .collect(),
                            Err(_) => Vec::new(),
                        };
                        if let Some(ack) = ack {
                            ack.send(Value::Array(responses));
                        }
                    });
                })
                .on("watch", |socket, mut event| {
                    socket.join("watchers");
                    event.ack(json!({ "ok": true }));
                })
                .on("disconnect-me", |socket, event| {
                    let close = event.arg::<bool>(0).unwrap_or(false);
                    socket.disconnect(close);
                })
                .on_disconnect(|socket, reason| {
                    let _ = socket
                        .ns()
                        .to("watchers")
                        .emit("left", json!({ "id": socket.id(), "reason": reason.as_str() }));
                })
        })
        .ns("/custom", |ns| {
            ns.on_connect(|socket| {
                let _ = socket.emit("auth", socket.auth().clone());
            })
            .on("message-with-ack", |_, mut event| {
                let payload = event.payload().clone();
                event.ack(payload);
            })
        })
        .ns("/private", |ns| {
            ns.connect_hook(|req| async move {
                if req.auth.get("token").and_then(Value::as_str) == Some("secret") {
                    Ok(ferrio::Accepted::new())
                } else {
                    Err(ConnectError::new("not authorized").with_data(json!({ "reason": "no token" })))
                }
            })
            .on_connect(|socket| {
                let _ = socket.emit("welcome", json!({ "ok": true }));
            })
        })
        .dynamic_ns(is_dynamic_name, |ns| {
            ns.on("whoami", |socket, mut event| {
                let name = socket.ns().name().to_owned();
                event.ack(Value::String(name));
            })
        })
        .build()
}

/// `^/dyn-[a-z0-9]+$`
fn is_dynamic_name(name: &str) -> bool {
    name.strip_prefix("/dyn-").is_some_and(|rest| {
        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = config(&args)?;
    let engine = EngineIo::new(
        Config {
            path: "/engine.io/".into(),
            ..config.clone()
        },
        |socket, msg| {
            let _ = match msg {
                EngineMessage::Text(t) => socket.send_text(&t),
                EngineMessage::Binary(b) => socket.send_binary(b),
            };
        },
    );
    let io = build(config);
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    #[allow(clippy::print_stdout)] // the one line the test harnesses wait for
    {
        println!("listening on {}", listener.local_addr()?);
    }
    let service = io.layer().layer(engine.clone());
    let closing = io.clone();
    ferrio::serve(
        listener,
        service,
        async move {
            shutdown_signal().await;
            closing.close(Duration::from_secs(3)).await;
            engine.close(Duration::from_secs(1)).await;
        },
        Duration::from_secs(2),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn dynamic_names() {
        assert!(super::is_dynamic_name("/dyn-abc1"));
        assert!(!super::is_dynamic_name("/dyn-"));
        assert!(!super::is_dynamic_name("/dyn-ABC"));
        assert!(!super::is_dynamic_name("/random"));
    }
}
