//! ferrio-client's `recovered()` against a two-node cluster in each mode, through a proxy the
//! test points at one node or the other: back on the same node the client recovers every
//! message published on the other node meanwhile; on the other node it recovers in streams
//! mode, and is told `recovered() == false` (with nothing stale) in classic and sharded mode,
//! whose sessions live in one node's memory.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferrio::builtins::RoomEvents;
use ferrio::{Config, RecoveryConfig};
use ferrio_client::{Client, Transport};
use ferrio_redis::Mode;
use parking_lot::Mutex;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

use crate::support::{Redis, WAIT, eventually, have_redis, node_with, within};

/// A TCP proxy whose upstream can change; while closed it drops every new connection.
struct Proxy {
    addr: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
    open: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let proxy = Self {
            addr,
            upstream: Arc::new(Mutex::new(upstream)),
            open: Arc::new(AtomicBool::new(true)),
            links: Arc::default(),
        };
        let (to, open, links) = (proxy.upstream.clone(), proxy.open.clone(), proxy.links.clone());
        tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                if !open.load(Ordering::Acquire) {
                    continue;
                }
                let target = *to.lock();
                links.lock().push(tokio::spawn(async move {
                    if let Ok(mut up) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                }));
            }
        });
        proxy
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cuts every link and refuses new ones until [`Proxy::reopen`].
    fn cut(&self) {
        self.open.store(false, Ordering::Release);
        for link in self.links.lock().drain(..) {
            link.abort();
        }
    }

    fn reopen(&self, upstream: SocketAddr) {
        *self.upstream.lock() = upstream;
        self.open.store(true, Ordering::Release);
    }
}

fn recovery_config() -> Config {
    Config {
        recovery: Some(RecoveryConfig {
            max_disconnection_duration: Duration::from_secs(30),
            ..RecoveryConfig::default()
        }),
        ..Config::default()
    }
}

async fn publish(publisher: &ferrio_client::Socket, n: u64) {
    let answer = within(
        "publish",
        publisher.emit_with_ack("publish", json!({"room": "news", "event": "news", "data": n})),
    )
    .await
    .expect("publish answered");
    assert_eq!(answer.args, vec![json!({"ok": true})], "publish {n}");
}

/// Connected again (the test saw it disconnected first).
async fn reconnected(socket: &ferrio_client::Socket) {
    eventually("reconnected", WAIT, || socket.connected()).await;
}

async fn truthful_recovery(mode: Mode) {
    if !have_redis() {
        return;
    }
    let redis = Redis::start().await;
    let declare = |ns| RoomEvents::default().install(ns);
    let n1 = node_with(&redis.url(), mode, recovery_config(), declare).await;
    let n2 = node_with(&redis.url(), mode, recovery_config(), declare).await;
    let proxy = Proxy::start(n1.addr).await;

    let got = Arc::new(Mutex::new(Vec::<u64>::new()));
    let sink = got.clone();
    let client = Client::builder(&proxy.url())
        .transports(&[Transport::WebSocket])
        .reconnection_delay(Duration::from_millis(20))
        .reconnection_delay_max(Duration::from_millis(50))
        .build()
        .expect("client");
    let socket = client
        .socket("/")
        .on("news", move |event| {
            sink.lock().push(event.arg::<u64>(0).expect("a number"));
        })
        .connect();
    let publisher_client = Client::builder(&format!("http://{}", n2.addr))
        .transports(&[Transport::WebSocket])
        .build()
        .expect("client");
    let publisher = publisher_client.socket("/").connect();
    eventually("connected", WAIT, || socket.connected() && publisher.connected()).await;
    assert!(!socket.recovered());
    let joined = within("join", socket.emit_with_ack("join", "news"))
        .await
        .expect("join");
    assert_eq!(joined.args, vec![json!({"ok": true})]);
    crate::support::settle(&[&n1, &n2]).await;
    let id = socket.id().expect("an id");
    publish(&publisher, 0).await;
    eventually("first message", WAIT, || got.lock().len() == 1).await;

    // Away, then back on the same node: recovered, whichever mode.
    proxy.cut();
    eventually("disconnected", WAIT, || !socket.connected()).await;
    for n in 1..=5 {
        publish(&publisher, n).await;
    }
    proxy.reopen(n1.addr);
    reconnected(&socket).await;
    assert!(socket.recovered(), "{mode:?}: back on the same node");
    assert_eq!(socket.id(), Some(id.clone()));
    eventually("missed messages", WAIT, || got.lock().len() == 6).await;
    assert_eq!(*got.lock(), (0..=5).collect::<Vec<_>>());

    // Away, then on the other node.
    proxy.cut();
    eventually("disconnected", WAIT, || !socket.connected()).await;
    for n in 6..=8 {
        publish(&publisher, n).await;
    }
    proxy.reopen(n2.addr);
    reconnected(&socket).await;
    if mode == Mode::Streams {
        assert!(socket.recovered(), "streams: recovered on another node");
        assert_eq!(socket.id(), Some(id));
        eventually("missed messages", WAIT, || got.lock().len() == 9).await;
        assert_eq!(*got.lock(), (0..=8).collect::<Vec<_>>());
    } else {
        assert!(
            !socket.recovered(),
            "{mode:?}: another node cannot prove the replay complete"
        );
        assert_ne!(socket.id(), Some(id));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(*got.lock(), (0..=5).collect::<Vec<_>>(), "nothing replayed");
    }
    drop(client);
    drop(publisher_client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_recovers_on_the_same_node_only() {
    truthful_recovery(Mode::Classic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_recovers_on_the_same_node_only() {
    truthful_recovery(Mode::Sharded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_recovers_on_any_node() {
    truthful_recovery(Mode::Streams).await;
}
