//! A TCP proxy between a client and a server that the test controls: cut every connection,
//! refuse new ones, freeze traffic without closing anything (a dead peer), or cut
//! connections at random after a short life (a flaky link).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

#[derive(Debug)]
struct Control {
    upstream: SocketAddr,
    /// When false, new connections are accepted and closed at once.
    open: AtomicBool,
    /// Bumped to cut every connection that exists.
    cut: watch::Sender<u64>,
    /// While true, nothing is forwarded (and nothing is closed).
    frozen: watch::Sender<bool>,
    /// Random lifetime of each connection (ms range), for a flaky link.
    flaky: Mutex<Option<(u64, u64)>>,
    /// Refuses WebSocket handshakes with 403, like a proxy that only passes plain HTTP.
    block_websocket: AtomicBool,
    blocked: AtomicUsize,
    accepted: AtomicUsize,
    cuts: AtomicU64,
}

/// The proxy; it stops when dropped.
#[derive(Debug)]
pub struct Proxy {
    pub addr: SocketAddr,
    control: Arc<Control>,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.control.cut.send_modify(|n| *n += 1);
    }
}

impl Proxy {
    /// Listens on an ephemeral loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let control = Arc::new(Control {
            upstream,
            open: AtomicBool::new(true),
            cut: watch::channel(0).0,
            frozen: watch::channel(false).0,
            flaky: Mutex::new(None),
            block_websocket: AtomicBool::new(false),
            blocked: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
            cuts: AtomicU64::new(0),
        });
        let ctl = control.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                ctl.accepted.fetch_add(1, Ordering::SeqCst);
                if !ctl.open.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                tokio::spawn(pipe(client, ctl.clone()));
            }
        });
        Self { addr, control, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cuts every connection open now.
    pub fn cut_all(&self) {
        self.control.cut.send_modify(|n| *n += 1);
    }

    /// Whether new connections are let through.
    pub fn set_open(&self, open: bool) {
        self.control.open.store(open, Ordering::SeqCst);
    }

    /// Stops (or resumes) forwarding, keeping connections open.
    pub fn set_frozen(&self, frozen: bool) {
        self.control.frozen.send_replace(frozen);
    }

    /// Cuts each new connection after a random life in `min_ms..max_ms`.
    pub fn set_flaky(&self, range: Option<(u64, u64)>) {
        *self.control.flaky.lock() = range;
    }

    /// Whether WebSocket handshakes are refused (plain HTTP still passes).
    pub fn set_block_websocket(&self, block: bool) {
        self.control.block_websocket.store(block, Ordering::SeqCst);
    }

    /// WebSocket handshakes refused so far.
    pub fn blocked(&self) -> usize {
        self.control.blocked.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.control.accepted.load(Ordering::SeqCst)
    }

    /// Connections cut by the flaky mode so far.
    pub fn random_cuts(&self) -> u64 {
        self.control.cuts.load(Ordering::SeqCst)
    }
}

/// Whether the request head at the start of `client` asks for a WebSocket. Peeks, so the
/// bytes are still there to forward.
async fn is_websocket_handshake(client: &TcpStream) -> bool {
    let mut head = [0u8; 2048];
    for _ in 0..50 {
        let Ok(n) = client.peek(&mut head).await else {
            return false;
        };
        let text = String::from_utf8_lossy(&head[..n]).to_ascii_lowercase();
        if text.contains("\r\n\r\n") || n == head.len() {
            return text.contains("upgrade: websocket");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    false
}

async fn pipe(mut client: TcpStream, control: Arc<Control>) {
    if control.block_websocket.load(Ordering::SeqCst) && is_websocket_handshake(&client).await {
        control.blocked.fetch_add(1, Ordering::SeqCst);
        let _ = client
            .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
        return;
    }
    let Ok(mut server) = TcpStream::connect(control.upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut cut = control.cut.subscribe();
    cut.mark_unchanged();
    let mut frozen = control.frozen.subscribe();
    let life = *control.flaky.lock();
    let death =
        life.map(|(min, max)| Instant::now() + Duration::from_millis(rand::rng().random_range(min..max)));
    let mut a = [0u8; 16 * 1024];
    let mut b = [0u8; 16 * 1024];
    loop {
        // While frozen, forward nothing; cuts still apply.
        if *frozen.borrow_and_update() {
            tokio::select! {
                _ = frozen.wait_for(|f| !*f) => continue,
                _ = cut.changed() => return,
            }
        }
        tokio::select! {
            n = client.read(&mut a) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if server.write_all(&a[..n]).await.is_err() { return },
            },
            n = server.read(&mut b) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if client.write_all(&b[..n]).await.is_err() { return },
            },
            _ = cut.changed() => return,
            _ = frozen.changed() => {},
            () = async {
                match death {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                control.cuts.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
    }
}
