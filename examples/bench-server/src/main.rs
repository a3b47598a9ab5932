//! The benchmark peer contract, on the `ferrio` library:
//!
//! * `bcast` with one payload: the payload is emitted as `bcast` to every connected socket
//!   (encoded once, queued for each);
//! * `echo` with an ack: acknowledged with the same payload.
//!
//! `bench-server --listen 127.0.0.1:PORT` prints `listening on ADDR` when ready.

use std::time::Duration;

use clap::Parser;
use ferrio::{Config, Io};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: String,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let io = Io::builder(Config::default())
        .ns("/", |ns| {
            ns.on("bcast", |socket, event| {
                let _ = socket.ns().emit("bcast", event.payload().clone());
            })
            .on("echo", |_socket, mut event| {
                let payload = event.payload().clone();
                event.ack(payload);
            })
        })
        .build();
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    #[allow(clippy::print_stdout)] // the line the benchmark scripts wait for
    {
        println!("listening on {}", listener.local_addr()?);
    }
    let closing = io.clone();
    ferrio::serve(
        listener,
        io,
        async move {
            let _ = tokio::signal::ctrl_c().await;
            closing.close(Duration::from_secs(2)).await;
        },
        Duration::from_secs(1),
    )
    .await
}
