//! A flaky link: a proxy that cuts connections at random. 10,000 acknowledged emits with
//! retries all arrive, each handled once by a deduplicating handler, in order.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ferrio::{Config, Io};
use ferrio_client::{Client, Overflow, QueueLimits, Transport};
use futures_util::future::join_all;
use parking_lot::Mutex;
use serde_json::json;
use tokio::time::Instant;

use crate::proxy::Proxy;
use crate::support::{FerrioServer, connected, init_tracing, within_for};

const MESSAGES: u64 = 10_000;

#[derive(Debug, Default)]
struct Ledger {
    seen: HashSet<u64>,
    /// Ids in the order they were first handled.
    order: Vec<u64>,
    duplicates: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_acked_emits_survive_a_flaky_link() {
    init_tracing();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let l = ledger.clone();
    let io = Io::builder(Config::default())
        .ns("/", move |ns| {
            let ledger = l.clone();
            // The handler deduplicates on the id the client put in the payload: a retried
            // packet carries the same arguments, so the same id.
            ns.on("work", move |_, mut event| {
                let id: u64 = event.arg::<serde_json::Value>(0).unwrap()["id"].as_u64().unwrap();
                let mut ledger = ledger.lock();
                if ledger.seen.insert(id) {
                    ledger.order.push(id);
                } else {
                    ledger.duplicates += 1;
                }
                drop(ledger);
                event.ack(json!({ "ok": true }));
            })
        })
        .build();
    let server = FerrioServer::start(io).await;
    let proxy = Proxy::start(server.addr).await;
    proxy.set_flaky(Some((20, 250)));

    let client = Client::builder(&proxy.url())
        .transports(&[Transport::WebSocket])
        .reconnection_delay(Duration::from_millis(5))
        .reconnection_delay_max(Duration::from_millis(20))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let socket = client
        .socket("/")
        .retries(1_000)
        .ack_timeout(Duration::from_millis(300))
        .queue(QueueLimits {
            capacity: MESSAGES as usize,
            overflow: Overflow::Error,
        })
        .connect();
    connected(&socket).await;

    let started = Instant::now();
    let acks: Vec<_> = (0..MESSAGES)
        .map(|id| socket.emit_with_ack("work", json!({ "id": id })))
        .collect();
    let results = within_for(Duration::from_secs(50), "every ack", join_all(acks)).await;
    let elapsed = started.elapsed();
    for (id, result) in results.iter().enumerate() {
        let answer = result
            .as_ref()
            .unwrap_or_else(|e| panic!("emit {id} failed: {e}"));
        assert_eq!(answer.args, vec![json!({"ok": true})]);
    }
    let ledger = ledger.lock();
    assert_eq!(ledger.seen.len(), MESSAGES as usize, "every emit arrived");
    assert_eq!(
        ledger.order,
        (0..MESSAGES).collect::<Vec<_>>(),
        "each handled once, in order"
    );
    assert!(proxy.random_cuts() > 0, "the link was cut at least once");
    eprintln!(
        "{MESSAGES} acked emits in {elapsed:?} over {} connections ({} cut at random), {} duplicates deduplicated",
        proxy.accepted(),
        proxy.random_cuts(),
        ledger.duplicates
    );
    assert_eq!(socket.retry_queued(), 0);
    client.close();
}
