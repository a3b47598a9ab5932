//! A terminal chat client on ferrio-client, for `ferrio serve`'s built-in room events.
//!
//! ```text
//! cargo run --bin ferrio -- serve                       # in one terminal
//! cargo run -p chat-client -- --name ann --room lobby   # in two others
//! ```
//!
//! Type a line to send it to the room. `/join ROOM` switches rooms, `/quit` leaves.
//! Messages typed while the server is away are held and sent when it is back; the room is
//! joined again after every reconnection (unless the session was recovered, which keeps it).

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ferrio_client::{Client, ConnectionState, Overflow, QueueLimits, Socket, Transport};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Mutex;

#[derive(Parser, Debug)]
#[command(
    name = "chat-client",
    about = "Chat in a room of a ferrio (or any Socket.IO) server"
)]
struct Args {
    /// Server URL.
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    url: String,
    /// Your name.
    #[arg(long, default_value = "anonymous")]
    name: String,
    /// The room to join.
    #[arg(long, default_value = "lobby")]
    room: String,
    /// Use WebSocket only (no long-polling).
    #[arg(long)]
    websocket_only: bool,
}

/// What travels in a room.
#[derive(Debug, Serialize, Deserialize)]
struct ChatMessage {
    from: String,
    text: String,
}

/// Writes a line to the terminal.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Joins `room` and reports the server's answer.
async fn join(socket: &Socket, room: &str) {
    match socket
        .emit_with_ack_timeout("join", room, Duration::from_secs(5))
        .await
    {
        Ok(answer) if answer.args.first() == Some(&json!({"ok": true})) => {
            say(&format!("* joined {room}"));
        }
        Ok(answer) => say(&format!("* could not join {room}: {:?}", answer.args)),
        Err(e) => say(&format!("* join {room}: {e}")),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut builder = Client::builder(&args.url);
    if args.websocket_only {
        builder = builder.transports(&[Transport::WebSocket]);
    }
    let client = builder.build()?;
    let socket = client
        .socket("/")
        .queue(QueueLimits {
            capacity: 100,
            overflow: Overflow::DropOldest,
        })
        .on_typed("message", |msg: ChatMessage| {
            say(&format!("<{}> {}", msg.from, msg.text))
        })
        .connect();

    let room = Arc::new(Mutex::new(args.room.clone()));

    // Report state changes; (re)join the room on every fresh connection.
    let watcher = {
        let socket = socket.clone();
        let room = room.clone();
        let mut changes = socket.state_changes();
        tokio::spawn(async move {
            if socket.state().is_connected() {
                join(&socket, &room.lock().await).await;
            }
            while let Some(change) = changes.next().await {
                match change.state {
                    ConnectionState::Connected => {
                        if socket.recovered() {
                            say("* reconnected (session recovered)");
                        } else {
                            say("* connected");
                            join(&socket, &room.lock().await).await;
                        }
                    }
                    ConnectionState::Connecting => say("* connecting..."),
                    ConnectionState::Reconnecting { attempt } => {
                        say(&format!("* reconnecting (attempt {attempt})..."))
                    }
                    ConnectionState::Disconnected { reason } => {
                        say(&format!("* disconnected: {reason}"));
                        if reason.is_final() {
                            return;
                        }
                    }
                }
            }
        })
    };

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "/quit" {
            break;
        }
        if let Some(next) = line.strip_prefix("/join ") {
            let next = next.trim().to_owned();
            let previous = std::mem::replace(&mut *room.lock().await, next.clone());
            let _ = socket.emit("leave", previous.as_str());
            join(&socket, &next).await;
            continue;
        }
        let message = ChatMessage {
            from: args.name.clone(),
            text: line.to_owned(),
        };
        let publish = json!({ "room": &*room.lock().await, "event": "message", "data": message });
        // Held in the offline queue while disconnected; sent in order on reconnection.
        if let Err(e) = socket.emit("publish", publish) {
            say(&format!("* not sent: {e}"));
        } else if !socket.connected() {
            say(&format!("* queued ({} waiting)", socket.queued()));
        }
    }
    socket.disconnect();
    client.close();
    watcher.abort();
    Ok(())
}
