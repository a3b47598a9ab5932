//! Mounting ferrio beside an axum app's own routes on one port.
//!
//! ```sh
//! cargo run -p axum-embed -- 127.0.0.1:3000
//! curl http://127.0.0.1:3000/health          # the app's route
//! # Socket.IO clients connect to http://127.0.0.1:3000 (path /socket.io/)
//! ```

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use ferrio::{Config, Io};
use serde_json::json;

fn app(io: &Io) -> Router {
    let counter = io.clone();
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/stats",
            get(move || {
                let io = counter.clone();
                async move { axum::Json(json!({ "connections": io.connection_count() })) }
            }),
        )
        // Requests under /socket.io/ go to ferrio, everything else to the routes above.
        .layer(io.layer())
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:3000".into());
    let io = Io::builder(Config::default())
        .ns("/", |ns| {
            ns.on("echo", |socket, event| {
                let _ = socket.emit("echo", event.payload().clone());
            })
        })
        .build();
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!("listening on {}", listener.local_addr()?);
    let closing = io.clone();
    axum::serve(listener, app(&io))
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            closing.close(Duration::from_secs(5)).await;
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    async fn start() -> (std::net::SocketAddr, Io) {
        let io = Io::builder(Config::default())
            .ns("/", |ns| {
                ns.on("echo", |socket, event| {
                    let _ = socket.emit("echo", event.payload().clone());
                })
            })
            .build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = app(&io);
        tokio::spawn(async move { axum::serve(listener, router).await });
        (addr, io)
    }

    #[tokio::test]
    async fn app_routes_and_socketio_share_one_port() {
        let (addr, _io) = start().await;
        let (mut ws, _) =
            tokio_tungstenite::connect_async(format!("ws://{addr}/socket.io/?EIO=4&transport=websocket"))
                .await
                .unwrap();
        let open = ws.next().await.unwrap().unwrap();
        assert!(open.to_text().unwrap().starts_with("0{\"sid\""));
        ws.send(Message::text("40")).await.unwrap();
        let connected = ws.next().await.unwrap().unwrap();
        assert!(connected.to_text().unwrap().starts_with("40{\"sid\""));
        ws.send(Message::text(r#"42["echo","hi"]"#)).await.unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed.to_text().unwrap(), r#"42["echo","hi"]"#);

        // The app's own route on the same port.
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        tcp.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.ends_with("ok"), "{out}");
    }
}
