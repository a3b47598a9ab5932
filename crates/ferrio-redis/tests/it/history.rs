//! Rooms' histories in Redis, read through `Namespace::history`: exact trimming by size (an
//! offset just before the trimmed ones is complete, one among them is not), expiry by ttl,
//! a room stream holding a newer id goes on with ids of its own, and paging with `since`.

use std::time::Duration;

use ferrio::{Config, History, Io, RecoveryConfig, RoomWindow};
use ferrio_redis::{Mode, RedisAdapter};
use serde_json::{Value, json};

use crate::support::{Redis, have_redis, serve};

async fn history_node(redis: &Redis, mode: Mode, ttl: Duration) -> crate::support::Node {
    let rooms = vec![RoomWindow {
        pattern: "h:*".into(),
        size: 3,
        ttl,
    }];
    let factory = RedisAdapter::builder(redis.url())
        .mode(mode)
        .history(rooms.clone())
        .connect()
        .await
        .expect("connect to redis");
    let config = Config {
        recovery: Some(RecoveryConfig {
            rooms,
            ..RecoveryConfig::default()
        }),
        ..Config::default()
    };
    let io = Io::builder(config)
        .adapter(factory.factory())
        .ns("/", |ns| ns)
        .build();
    serve(io, factory).await
}

fn numbers(h: &History) -> Vec<u64> {
    h.messages
        .iter()
        .map(|m| match &m.packet.data {
            Some(Value::Array(args)) => args[1].as_u64().unwrap(),
            other => panic!("{other:?}"),
        })
        .collect()
}

async fn emit_all(node: &crate::support::Node, room: &str, range: std::ops::RangeInclusive<u64>) {
    let ns = node.io.of("/").unwrap();
    for n in range {
        ns.to(room.to_owned())
            .emit_confirmed("m", json!(n))
            .await
            .expect("confirmed");
    }
}

async fn trims_exactly(mode: Mode) {
    let redis = Redis::start().await;
    let node = history_node(&redis, mode, Duration::from_secs(600)).await;
    let ns = node.io.of("/").unwrap();
    emit_all(&node, "h:1", 1..=5).await;
    let all = ns.history("h:1", None, 10).await.unwrap();
    assert_eq!(numbers(&all), vec![3, 4, 5], "{mode:?}");
    assert!(all.complete);
    // 1 and 2 were trimmed: after 2's offset nothing is missing, after 1's the 2 is.
    let first = ns.history("h:1", None, 1).await.unwrap();
    assert_eq!(numbers(&first), vec![5]);
    let offsets: Vec<String> = all.messages.iter().map(|m| m.offset.clone()).collect();
    let after_3 = ns.history("h:1", Some(&offsets[0]), 10).await.unwrap();
    assert_eq!((numbers(&after_3), after_3.complete), (vec![4, 5], true));
    emit_all(&node, "h:1", 6..=6).await;
    // 3 is gone now: after it, complete; before it (any older offset), not.
    let after_3 = ns.history("h:1", Some(&offsets[0]), 10).await.unwrap();
    assert_eq!(
        (numbers(&after_3), after_3.complete),
        (vec![4, 5, 6], true),
        "{mode:?}"
    );
    let before_3 = ns.history("h:1", Some("1-0"), 10).await.unwrap();
    assert_eq!(
        (numbers(&before_3), before_3.complete),
        (vec![4, 5, 6], false),
        "{mode:?}"
    );
    assert!(ns.history("h:1", Some("not-an-offset"), 10).await.is_err());
}

#[tokio::test]
async fn classic_trims_each_room_exactly() {
    if have_redis() {
        trims_exactly(Mode::Classic).await;
    }
}

#[tokio::test]
async fn streams_trims_each_room_exactly() {
    if have_redis() {
        trims_exactly(Mode::Streams).await;
    }
}

#[tokio::test]
async fn messages_past_their_ttl_are_gone_and_said_to_be() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start().await;
    let node = history_node(&redis, Mode::Sharded, Duration::from_millis(400)).await;
    let ns = node.io.of("/").unwrap();
    emit_all(&node, "h:t", 1..=2).await;
    let kept = ns.history("h:t", None, 10).await.unwrap();
    assert_eq!(numbers(&kept), vec![1, 2]);
    let since = kept.messages[0].offset.clone();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let later = ns.history("h:t", Some(&since), 10).await.unwrap();
    assert!(later.messages.is_empty());
    assert!(!later.complete, "2 expired after the offset");
    let all = ns.history("h:t", None, 10).await.unwrap();
    assert!(all.messages.is_empty() && all.complete);
}

#[tokio::test]
async fn a_room_stream_holding_a_newer_id_still_takes_every_broadcast_in_order() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start().await;
    let node = history_node(&redis, Mode::Streams, Duration::from_secs(600)).await;
    let ns = node.io.of("/").unwrap();
    emit_all(&node, "h:x", 1..=1).await;
    let one = ns.history("h:x", None, 10).await.unwrap();
    let since = one.messages[0].offset.clone();
    // Something wrote an id from the future into the room's stream: the main stream's ids
    // are older from now on, the room's stream goes on with ids of its own.
    let key = "{socket.io}:history:1:/:h:x";
    let out = redis.cli(&["XADD", key, "99999999999999-0", "junk", "1"]);
    assert!(out.contains("99999999999999-0"), "{out}");
    emit_all(&node, "h:x", 2..=3).await;
    let after = ns.history("h:x", Some(&since), 10).await.unwrap();
    assert_eq!((numbers(&after), after.complete), (vec![2, 3], true));
    let last = after.messages[0].offset.clone();
    emit_all(&node, "h:x", 4..=4).await;
    let next = ns.history("h:x", Some(&last), 10).await.unwrap();
    assert_eq!((numbers(&next), next.complete), (vec![3, 4], true));
    // A key that is not a stream: the broadcast is refused whole (nothing half-written).
    redis.cli(&["SET", "{socket.io}:history:1:/:h:y", "x"]);
    let refused = ns.to("h:y").emit_confirmed("m", json!(5)).await;
    assert!(refused.is_err(), "{refused:?}");
    let len = redis.cli(&["XLEN", "socket.io"]);
    assert_eq!(len.trim(), "4", "the main stream did not take it either");
}

/// With `since`, the first `limit` after it (so a reader pages forward); without, the newest.
#[tokio::test]
async fn since_pages_forward_and_no_since_reads_the_newest() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start().await;
    let node = history_node(&redis, Mode::Classic, Duration::from_secs(600)).await;
    let ns = node.io.of("/").unwrap();
    emit_all(&node, "h:p", 1..=3).await;
    let newest = ns.history("h:p", None, 2).await.unwrap();
    assert_eq!(numbers(&newest), vec![2, 3]);
    let first = ns.history("h:p", None, 3).await.unwrap().messages[0]
        .offset
        .clone();
    let page = ns.history("h:p", Some(&first), 1).await.unwrap();
    assert_eq!((numbers(&page), page.complete), (vec![2], true));
    let page = ns
        .history("h:p", Some(&page.messages[0].offset), 1)
        .await
        .unwrap();
    assert_eq!(numbers(&page), vec![3]);
}
