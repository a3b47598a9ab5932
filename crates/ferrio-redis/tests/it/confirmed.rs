//! Confirmed publishes while another node's subscriber connection is replaced: node A
//! publishes with `emit_confirmed` every 3 ms while Redis drops node B's subscriber (B
//! reconnects and resubscribes): no publish that B missed is confirmed.

use std::collections::HashSet;
use std::time::Duration;

use ferrio_redis::Mode;
use serde_json::json;

use crate::support::{Client, Redis, have_redis, node, settle};

fn pubsub_ids(redis: &Redis) -> HashSet<String> {
    redis
        .cli(&["CLIENT", "LIST", "TYPE", "pubsub"])
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .next()?
                .strip_prefix("id=")
                .map(str::to_owned)
        })
        .collect()
}

async fn unconfirmed_while_a_node_resubscribes(mode: Mode) {
    if !have_redis() {
        return;
    }
    let redis = Redis::start().await;
    let a = node(&redis.url(), mode, |ns| ns).await;
    let before = pubsub_ids(&redis);
    let b = node(&redis.url(), mode, |ns| ns).await;
    let b_ids: Vec<String> = pubsub_ids(&redis).difference(&before).cloned().collect();
    assert_eq!(b_ids.len(), 1, "B's subscriber: {b_ids:?}");
    let mut client = Client::connect(b.addr).await;
    settle(&[&a, &b]).await;
    let ns_a = a.io.of("/").unwrap();
    let reader = tokio::spawn(async move {
        let mut got = HashSet::new();
        while let Some(ev) = client.next(Duration::from_secs(2)).await {
            if ev.name == "m" {
                got.insert(ev.args[0].as_u64().unwrap());
            }
        }
        got
    });
    let mut oks = Vec::new();
    let mut pending = Vec::new();
    for i in 0..400u64 {
        if i == 100 {
            let out = redis.cli(&["CLIENT", "KILL", "ID", &b_ids[0]]);
            assert_eq!(out.trim(), "1", "B's subscriber killed");
        }
        pending.push((i, ns_a.broadcast().emit_confirmed("m", json!(i))));
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    for (i, c) in pending {
        if c.await.is_ok() {
            oks.push(i);
        }
    }
    let got = reader.await.unwrap();
    let lost_but_ok: Vec<u64> = oks.iter().copied().filter(|i| !got.contains(i)).collect();
    assert!(
        lost_but_ok.is_empty(),
        "{mode:?}: ok for messages node B never got: {:?}",
        &lost_but_ok[..lost_but_ok.len().min(20)]
    );
    // Confirmations resume once B is back.
    assert!(
        oks.iter().any(|&i| i > 300),
        "{mode:?}: nothing confirmed after B came back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_confirms_nothing_a_resubscribing_node_missed() {
    unconfirmed_while_a_node_resubscribes(Mode::Classic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_confirms_nothing_a_resubscribing_node_missed() {
    unconfirmed_while_a_node_resubscribes(Mode::Sharded).await;
}
