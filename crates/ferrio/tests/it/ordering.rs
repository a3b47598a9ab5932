//! Ordering across the polling → WebSocket upgrade, in both directions, with the upgrade
//! (`2probe` / `3probe` / `6` / `5`) done by hand in the middle of the stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferrio::{Config, Io, TransportKind};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::mpsc;

use crate::support::{
    Frame, PollClient, WsClient, eventually, parse_connect_reply, start, with_echo, within, ws_open,
};

const COUNT: i64 = 1000;

struct Fixture {
    io: Io,
    received: Arc<Mutex<Vec<i64>>>,
    emit_errors: Arc<Mutex<Vec<String>>>,
}

fn fixture() -> Fixture {
    let received = Arc::new(Mutex::new(Vec::new()));
    let emit_errors = Arc::new(Mutex::new(Vec::new()));
    let (r, e) = (received.clone(), emit_errors.clone());
    let io = Io::builder(Config::default())
        .ns("/", move |ns| {
            with_echo(ns)
                .on("n", move |_, event| {
                    r.lock().push(event.arg::<i64>(0).unwrap_or(-1));
                })
                .on("start", move |socket, _| {
                    let socket = socket.clone();
                    let errors = e.clone();
                    tokio::spawn(async move {
                        for i in 1..=COUNT {
                            if let Err(err) = socket.emit("seq", json!(i)) {
                                errors.lock().push(format!("emit {i}: {err}"));
                                return;
                            }
                            if i % 5 == 0 {
                                tokio::time::sleep(Duration::from_millis(1)).await;
                            }
                        }
                    });
                })
        })
        .build();
    Fixture {
        io,
        received,
        emit_errors,
    }
}

/// `42["seq",N]` → N.
fn seq(record: &str) -> i64 {
    record
        .strip_prefix(r#"42["seq","#)
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected packet {record:?}"))
}

#[tokio::test]
async fn server_to_client_order_survives_the_upgrade() {
    let f = fixture();
    let server = start(f.io.clone()).await;
    let p = PollClient::open(server.addr).await;
    assert_eq!(p.open["upgrades"], json!(["websocket"]));
    p.post_ok("40").await;
    let records = p.get_records().await;
    parse_connect_reply(&records[0], "/");
    p.post_ok(r#"42["start"]"#).await;

    // A poll is always in flight, as a real client keeps one.
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<String>>();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (p, stop) = (p.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let records = p.get_records().await;
                if tx.send(records).is_err() {
                    return;
                }
            }
        })
    };
    let mut got: Vec<i64> = Vec::new();
    let mut noops = 0;
    let take = |records: Vec<String>, got: &mut Vec<i64>, noops: &mut usize| {
        for r in records {
            if r == "6" {
                *noops += 1;
            } else {
                got.push(seq(&r));
            }
        }
    };
    while got.len() < 100 {
        let records = within("poll", rx.recv()).await.expect("poller alive");
        take(records, &mut got, &mut noops);
    }

    // Upgrade in the middle of the stream.
    let ws = ws_open(
        server.addr,
        &format!("EIO=4&transport=websocket&sid={}", p.sid),
        &[],
    )
    .await
    .expect("upgrade");
    let mut w = WsClient::from_upgrade(ws, &p.sid);
    w.send("2probe").await;
    w.expect("3probe").await;
    // Pause polling: the poll in flight is released (with data, or a noop).
    stop.store(true, Ordering::SeqCst);
    within("poller stops", poller).await.expect("poller");
    while let Ok(records) = rx.try_recv() {
        take(records, &mut got, &mut noops);
    }
    let via_polling = got.len();
    assert!(
        (via_polling as i64) < COUNT,
        "the emitter finished before the upgrade; the test proves nothing"
    );
    w.send("5").await;

    while (got.len() as i64) < COUNT {
        match w.recv().await {
            Frame::Text(t) => got.push(seq(&t)),
            Frame::Binary(b) => panic!("unexpected binary {b:?}"),
        }
    }
    let expected: Vec<i64> = (1..=COUNT).collect();
    assert_eq!(got, expected, "every event exactly once, in order");
    assert!(f.emit_errors.lock().is_empty(), "{:?}", f.emit_errors.lock());
    w.expect_silence(Duration::from_millis(100)).await;

    // Polling is over for this session; the WebSocket is the transport.
    let res = p.get().await;
    assert_eq!(res.status, 400);
    assert_eq!(res.text(), r#"{"code":3,"message":"Bad request"}"#);
    let sockets = server
        .io
        .of("/")
        .expect("ns")
        .broadcast()
        .fetch_sockets()
        .await
        .expect("fetch");
    assert_eq!(sockets.len(), 1);
    assert_eq!(
        sockets[0].local.as_ref().map(ferrio::Socket::transport),
        Some(TransportKind::WebSocket)
    );
}

#[tokio::test]
async fn client_to_server_order_survives_the_upgrade() {
    let f = fixture();
    let server = start(f.io.clone()).await;
    let p = PollClient::open(server.addr).await;
    p.post_ok("40").await;
    parse_connect_reply(&p.get_records().await[0], "/");

    let batch = |range: std::ops::RangeInclusive<i64>| {
        range
            .map(|i| format!(r#"42["n",{i}]"#))
            .collect::<Vec<_>>()
            .join("\x1e")
    };
    for start_at in (1..=400).step_by(50) {
        p.post_ok(&batch(start_at..=start_at + 49)).await;
    }

    let ws = ws_open(
        server.addr,
        &format!("EIO=4&transport=websocket&sid={}", p.sid),
        &[],
    )
    .await
    .expect("upgrade");
    let mut w = WsClient::from_upgrade(ws, &p.sid);
    w.send("2probe").await;
    w.expect("3probe").await;
    // Polling still carries data until the upgrade completes.
    p.post_ok(&batch(401..=500)).await;
    let res = p.get().await;
    assert_eq!(
        (res.status, res.text().as_str()),
        (200, "6"),
        "a poll during the probe gets a noop"
    );
    w.send("5").await;
    for i in 501..=COUNT {
        w.send(format!(r#"42["n",{i}]"#)).await;
    }
    eventually("all events handled", || f.received.lock().len() as i64 >= COUNT).await;
    let expected: Vec<i64> = (1..=COUNT).collect();
    assert_eq!(*f.received.lock(), expected);
    w.send(r#"421["echo","done"]"#).await;
    w.expect(r#"431["done"]"#).await;
}
