//! `ferrio-bench`: measures a Socket.IO v4 server from the outside, over WebSocket.
//!
//! Every scenario talks to the *peer contract*: on `bcast` with one payload the server emits
//! it as `bcast` to every connected socket; on `echo` with an ack it acknowledges with the
//! payload. `hold` needs nothing but namespace `/`.
//!
//! * `hold`: N idle connections opened at a ramp rate; memory per connection, handshakes;
//! * `fanout`: N subscribers, a publisher at a fixed rate or a bounded window; per-delivery
//!   latency from the intended send time, loss, duplicates, order;
//! * `echo`: request/ack round trips at a fixed offered rate over N connections;
//! * `churn`: connect/disconnect cycles; does the server's RSS return to its baseline?
//! * `plot`: latency percentile curves of one or more runs as SVG.
//!
//! A progress bar goes to stderr, a human summary too; the last line on stdout is one JSON
//! object with every figure, the load generator's own CPU time included.

mod churn;
mod echo;
mod fanout;
mod hold;
mod plot;
mod report;
mod wire;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::time::{Instant, sleep_until};

use crate::report::Server;
use crate::wire::{Conn, Endpoint, Failure, Sources};

#[derive(Parser, Debug)]
#[command(
    name = "ferrio-bench",
    about = "Load generator for Socket.IO v4 servers",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Hold N idle connections; report handshakes, drops and the server's memory per connection.
    Hold(hold::HoldArgs),
    /// N subscribers, one publisher of `bcast`; delivery latency, throughput, loss and order.
    Fanout(fanout::FanoutArgs),
    /// Request/ack round trips (`echo`) at a fixed offered rate over N connections.
    Echo(echo::EchoArgs),
    /// Connect/disconnect cycles at a rate; checks the server's RSS returns to its baseline.
    Churn(churn::ChurnArgs),
    /// Draws the latency percentile curves of earlier runs (their JSON lines) as SVG.
    Plot(plot::PlotArgs),
}

/// Options every load scenario takes.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Server address (host:port).
    #[arg(long)]
    target: SocketAddr,
    /// Engine.IO path on the server.
    #[arg(long, default_value = "/socket.io/")]
    path: String,
    /// Last octet of the first 127.0.0.x source address.
    #[arg(long, default_value_t = 1)]
    source_first: u8,
    /// How many 127.0.0.x source addresses connections are spread over.
    #[arg(long, default_value_t = 64)]
    sources: u8,
    /// The server's PID: its RSS and CPU time are read from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// A name for this run in the JSON line and plots.
    #[arg(long)]
    label: Option<String>,
    /// Also draw this run's latency percentile curve to an SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

impl Common {
    fn endpoint(&self) -> Endpoint {
        let mut endpoint = Endpoint::new(self.target);
        endpoint.path = self.path.clone();
        endpoint
    }

    fn sources(&self) -> Sources {
        Sources {
            first: self.source_first.max(1),
            count: self.sources.max(1),
        }
    }

    fn server(&self) -> Option<Server> {
        self.server_pid.map(|pid| Server { pid })
    }

    fn label(&self, scenario: &str) -> String {
        self.label
            .clone()
            .unwrap_or_else(|| format!("{scenario} {}", self.target))
    }

    fn progress(&self, len: u64, what: &str) -> ProgressBar {
        if self.quiet {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {per_sec} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(what.to_owned());
        bar
    }
}

/// Raises the soft open-files limit to the hard one: every connection is one descriptor.
fn raise_nofile() -> (u64, u64) {
    match rlimit::Resource::NOFILE.get() {
        Ok((_, hard)) => {
            let _ = rlimit::Resource::NOFILE.set(hard, hard);
            rlimit::Resource::NOFILE.get().unwrap_or((0, 0))
        }
        Err(_) => (0, 0),
    }
}

/// Connection failures grouped by cause.
pub type Failures = Rc<RefCell<BTreeMap<String, u64>>>;

pub fn count_failure(failures: &Failures, failure: &Failure) {
    *failures.borrow_mut().entry(failure.cause()).or_default() += 1;
}

/// How connections are opened: `count` of them, one every `1/rate` seconds from the start
/// (all at once if `rate` is 0), with at most `concurrency` handshakes in flight.
#[derive(Debug, Clone, Copy)]
pub struct Ramp {
    pub count: usize,
    pub rate: f64,
    pub concurrency: usize,
}

/// Opens connections as `ramp` says. Each open connection is handed to `on_open` with its
/// index and handshake time, on the task that opened it; the call returns when every attempt
/// has finished.
pub async fn connect_many<F, Fut>(
    endpoint: &Endpoint,
    sources: Sources,
    ramp: Ramp,
    failures: &Failures,
    bar: &ProgressBar,
    on_open: F,
) where
    F: Fn(usize, Conn, Duration) -> Fut + Clone + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let Ramp {
        count,
        rate,
        concurrency,
    } = ramp;
    let gate = std::sync::Arc::new(Semaphore::new(concurrency.max(1)));
    let endpoint = Rc::new(endpoint.clone());
    let started = Instant::now();
    for i in 0..count {
        if rate > 0.0 {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            if due > Instant::now() + Duration::from_millis(1) {
                sleep_until(due).await;
            }
        }
        let Ok(permit) = gate.clone().acquire_owned().await else {
            break;
        };
        let (endpoint, failures, bar, on_open) =
            (endpoint.clone(), failures.clone(), bar.clone(), on_open.clone());
        tokio::task::spawn_local(async move {
            let t0 = Instant::now();
            let opened = Conn::open(&endpoint, sources.of(i)).await;
            drop(permit);
            bar.inc(1);
            match opened {
                Ok(conn) => on_open(i, conn, t0.elapsed()).await,
                Err(failure) => count_failure(&failures, &failure),
            }
        });
    }
    // Every permit back means every handshake finished (`on_open` may go on running).
    let _ = gate.acquire_many(concurrency.max(1) as u32).await;
}

/// Prints the result line (the last line of stdout) and draws the plot if asked.
pub fn finish(common: &Common, report: Value) {
    if let Some(path) = &common.plot {
        let runs = plot::runs_of(&report);
        match plot::write_svg(path, &runs, None) {
            Ok(()) => eprintln!("plot written to {}", path.display()),
            Err(e) => eprintln!("plot {}: {e}", path.display()),
        }
    }
    #[allow(clippy::print_stdout)] // the machine-readable result line
    {
        println!("{report}");
    }
}

fn main() {
    let cli = Cli::parse();
    if let Command::Plot(args) = &cli.command {
        if let Err(e) = plot::run(args) {
            eprintln!("ferrio-bench plot: {e}");
            std::process::exit(1);
        }
        return;
    }
    let nofile = raise_nofile();
    // One thread: the load generator is pinned to one core and its state is not shared.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        match cli.command {
            Command::Hold(args) => hold::run(args, nofile).await,
            Command::Fanout(args) => fanout::run(args).await,
            Command::Echo(args) => echo::run(args).await,
            Command::Churn(args) => churn::run(args).await,
            Command::Plot(_) => {}
        }
    });
}
