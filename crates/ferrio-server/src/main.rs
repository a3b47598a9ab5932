//! `ferrio`: the standalone Socket.IO v4 server.
//!
//! `ferrio serve` runs with no configuration: it listens on 127.0.0.1:3000 and offers the
//! built-in room events (`join`, `leave`, `publish`) on namespace `/`, so an app without a
//! backend of its own works at once.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ferrio::builtins::RoomEvents;
use ferrio::{Config, Io, Transports};
use tracing::info;

#[derive(Parser, Debug)]
#[command(name = "ferrio", version, about = "A Socket.IO v4 server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the server.
    Serve(ServeArgs),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address and port to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:3000", env = "FERRIO_LISTEN")]
    listen: SocketAddr,
    /// URL path of the Socket.IO endpoint.
    #[arg(long, default_value = "/socket.io/", env = "FERRIO_PATH")]
    path: String,
    /// Milliseconds between server pings.
    #[arg(long, default_value_t = 25_000, env = "FERRIO_PING_INTERVAL")]
    ping_interval: u64,
    /// Milliseconds a ping may go unanswered.
    #[arg(long, default_value_t = 20_000, env = "FERRIO_PING_TIMEOUT")]
    ping_timeout: u64,
    /// Largest message or polling body, in bytes.
    #[arg(long, default_value_t = 1_000_000, env = "FERRIO_MAX_PAYLOAD")]
    max_payload: usize,
    /// Milliseconds a connection may take to join a namespace.
    #[arg(long, default_value_t = 45_000, env = "FERRIO_CONNECT_TIMEOUT")]
    connect_timeout: u64,
    /// Transports to accept: polling,websocket.
    #[arg(long, default_value = "polling,websocket", env = "FERRIO_TRANSPORTS")]
    transports: String,
    /// Seconds to wait for clients to go on shutdown.
    #[arg(long, default_value_t = 10, env = "FERRIO_SHUTDOWN_TIMEOUT")]
    shutdown_timeout: u64,
}

impl ServeArgs {
    fn config(&self) -> Result<Config, String> {
        if self.ping_interval == 0 || self.ping_timeout == 0 {
            return Err("--ping-interval and --ping-timeout must be positive".into());
        }
        if self.max_payload == 0 {
            return Err("--max-payload must be positive".into());
        }
        Ok(Config {
            path: self.path.clone(),
            ping_interval: Duration::from_millis(self.ping_interval),
            ping_timeout: Duration::from_millis(self.ping_timeout),
            max_payload: self.max_payload,
            connect_timeout: Duration::from_millis(self.connect_timeout),
            transports: Transports::parse(&self.transports)?,
            ..Config::default()
        })
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending().await,
            }
        } => {}
    }
}

async fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let config = args.config()?;
    let io = Io::builder(config)
        .ns("/", |ns| {
            RoomEvents::default()
                .install(ns)
                .on_connect(
                    |socket| tracing::debug!(id = %socket.id(), transport = ?socket.transport(), "connected"),
                )
                .on_disconnect(|socket, reason| tracing::debug!(id = %socket.id(), %reason, "disconnected"))
        })
        .build();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    #[allow(clippy::print_stdout)] // scripts and tests wait for this line
    {
        println!("listening on {addr}");
    }
    info!(%addr, path = %io.config().path, "ferrio serving");

    let stats = io.clone();
    let reporter = tokio::spawn(async move {
        let mut last = usize::MAX;
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let now = stats.connection_count();
            if now != last {
                info!(connections = now, "summary");
                last = now;
            }
        }
    });

    let closing = io.clone();
    let grace = Duration::from_secs(args.shutdown_timeout);
    ferrio::serve(
        listener,
        io.clone(),
        async move {
            shutdown_signal().await;
            info!(connections = closing.connection_count(), "shutting down");
            let left = closing.close(grace).await;
            info!(left, "connections closed");
        },
        Duration::from_secs(2),
    )
    .await?;
    reporter.abort();
    Ok(())
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args).await,
    };
    if let Err(e) = result {
        tracing::error!("{e}");
        std::process::exit(1);
    }
}
