//! Servers to test against (ferrio in-process, the `ferrio` binary, Node's reference
//! server), with timeouts on every wait and child processes killed by PID on drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use ferrio::{Config, Io, NamespaceBuilder};
use ferrio_client::{ConnectionState, Socket, StateChanges};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The longest a single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `fut`, failing the test after [`WAIT`].
pub async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    within_for(WAIT, what, fut).await
}

/// Awaits `fut`, failing the test after `limit`.
pub async fn within_for<F: std::future::Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// Waits for the socket to be connected.
pub async fn connected(socket: &Socket) {
    within("socket connected", socket.wait_connected())
        .await
        .unwrap_or_else(|reason| panic!("socket did not connect: {reason}"));
}

/// Waits for the next transition matching `pred` and returns its state.
pub async fn next_state(
    changes: &mut StateChanges,
    what: &str,
    mut pred: impl FnMut(&ConnectionState) -> bool,
) -> ferrio_client::StateChange {
    within(what, async {
        loop {
            let change = changes.next().await.expect("state stream ended");
            if pred(&change.state) {
                return change;
            }
        }
    })
    .await
}

/// Default server options with a given heartbeat.
pub fn config_with_ping(interval_ms: u64, timeout_ms: u64) -> Config {
    Config {
        ping_interval: Duration::from_millis(interval_ms),
        ping_timeout: Duration::from_millis(timeout_ms),
        ..Config::default()
    }
}

/// `echo`: acknowledges with the event's own arguments; `message`: emits `message-back`
/// with the same arguments.
pub fn with_echo(ns: NamespaceBuilder) -> NamespaceBuilder {
    ns.on("echo", |_, mut event| {
        let payload = event.payload().clone();
        event.ack(payload);
    })
    .on("message", |socket, event| {
        let _ = socket.emit("message-back", event.payload().clone());
    })
}

/// A ferrio server in this process.
#[derive(Debug)]
pub struct FerrioServer {
    pub addr: SocketAddr,
    pub io: Io,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl FerrioServer {
    /// Serves `io` on an ephemeral loopback port.
    pub async fn start(io: Io) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), io).await
    }

    /// Serves `io` on `addr` (retrying briefly while the port is still held).
    pub async fn start_on(addr: SocketAddr, io: Io) -> Self {
        let listener = within("bind", async {
            loop {
                match TcpListener::bind(addr).await {
                    Ok(l) => return l,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
        .await;
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let service = io.clone();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            let _ = ferrio::serve(listener, service, shutdown, Duration::from_millis(100)).await;
        });
        Self {
            addr,
            io,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every connection and stops listening.
    pub async fn stop(mut self) {
        self.io.close(Duration::from_millis(500)).await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = &mut self.task;
        within("server stopped", task).await.unwrap();
    }
}

impl Drop for FerrioServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ------------------------------------------------------------------------------------------
// Child processes

/// A server process; killed (by PID) and reaped when dropped, even when a test fails.
#[derive(Debug)]
pub struct ChildServer {
    child: Child,
    pub addr: SocketAddr,
}

impl ChildServer {
    /// Starts `program args...` and waits for its `listening on ADDR` line.
    pub async fn spawn(program: &Path, args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = oneshot::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("listening on ")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        // The guard kills the child if the wait below fails.
        let mut server = Self {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
        };
        let line = within("server prints its address", rx)
            .await
            .unwrap_or_else(|_| panic!("{} exited before listening", program.display()));
        server.addr = line.parse().unwrap_or_else(|_| panic!("bad address {line:?}"));
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends a signal (`STOP`, `CONT`, ...) with `kill(1)`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {}", self.pid());
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        // A stopped process must be continued to die of SIGKILL promptly on every system.
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("repo root")
        .to_path_buf()
}

/// The `ferrio` binary next to this test's target directory, if it was built
/// (`cargo build --workspace` builds it; `scripts/test` does so before the tests).
pub fn ferrio_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/debug/deps/it-<hash> → target/debug/ferrio
    let bin = exe.parent()?.parent()?.join("ferrio");
    bin.is_file().then_some(bin)
}

/// Whether Node and the interop packages are usable; installs the packages from the
/// committed lockfile on first use. Prints why not when they are not.
pub fn node_ready() -> bool {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let node = Command::new("node").arg("--version").output();
        if !node.is_ok_and(|o| o.status.success()) {
            return Err("`node` is not installed".into());
        }
        let interop = repo_root().join("tests/interop");
        if interop.join("node_modules/socket.io/package.json").is_file() {
            return Ok(());
        }
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&interop)
            .stdout(Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(format!("`npm ci` in tests/interop failed ({s})")),
            Err(e) => Err(format!("`npm` could not run: {e}")),
        }
    });
    match ready {
        Ok(()) => true,
        Err(why) => {
            eprintln!("SKIPPED: {why}; the tests against the Node reference server need it");
            false
        }
    }
}

/// Starts `tests/interop/<script>` with Node (None when Node is unavailable).
pub async fn node_server(script: &str, args: &[&str]) -> Option<ChildServer> {
    if !node_ready() {
        return None;
    }
    let interop = repo_root().join("tests/interop");
    let script = interop.join(script);
    let mut full = vec![script.to_str().expect("utf-8 path")];
    full.extend_from_slice(args);
    let node_path = interop.join("node_modules");
    let node_path = node_path.to_str().expect("utf-8 path").to_owned();
    Some(ChildServer::spawn(Path::new("node"), &full, &interop, &[("NODE_PATH", &node_path)]).await)
}

/// Starts Node's reference server (`tests/interop/reference-server.js`).
pub async fn node_reference(args: &[&str]) -> Option<ChildServer> {
    let mut full = vec!["--listen", "127.0.0.1:0"];
    full.extend_from_slice(args);
    node_server("reference-server.js", &full).await
}

/// A tracing subscriber for debugging a test (`RUST_LOG=ferrio_client=debug`).
pub fn init_tracing() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
    });
}
