//! The benchmark peer contract on socketioxide, written as its documentation suggests:
//!
//! * `bcast` with one payload: emitted as `bcast` to every connected socket of `/`;
//! * `echo` with an ack: acknowledged with the same payload.
//!
//! `socketioxide-peer --listen 127.0.0.1:PORT` prints `listening on ADDR` when ready.

use axum::serve::ListenerExt;
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Data, SocketRef};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut listen = "127.0.0.1:3000".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().expect("--listen needs ADDR:PORT"),
            other => panic!("unknown argument {other}"),
        }
    }

    let (layer, io) = SocketIo::new_layer();
    io.ns("/", async |socket: SocketRef| {
        socket.on("bcast", async |io: SocketIo, Data::<Value>(data)| {
            let _ = io.emit("bcast", &data).await;
        });
        socket.on("echo", async |Data::<Value>(data), ack: AckSender| {
            let _ = ack.send(&data);
        });
    });

    let app = axum::Router::new().layer(layer);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let addr = listener.local_addr()?;
    // Small frames go out at once, as ferrio and Node's http server do by default.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    println!("listening on {addr}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
