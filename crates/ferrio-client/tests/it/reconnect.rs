//! Reconnection after a server restart: growing, jittered delays within the backoff bounds,
//! the offline queue flushed in order, the auth callback run again.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ferrio::{Accepted, Config, ConnectRequest, Io};
use ferrio_client::{Backoff, Client, ConnectionState};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::support::{FerrioServer, connected, init_tracing, next_state, with_echo, within, within_for};

/// A server that records the notes it is sent and the auth payloads it is shown.
fn recording_io(notes: Arc<Mutex<Vec<u64>>>, auths: Arc<Mutex<Vec<Value>>>) -> Io {
    Io::builder(Config::default())
        .ns("/", move |ns| {
            let notes = notes.clone();
            let auths = auths.clone();
            with_echo(ns)
                .connect_hook(move |req: ConnectRequest| {
                    auths.lock().push(req.auth.clone());
                    async { Ok(Accepted::new()) }
                })
                .on("note", move |_, event| {
                    notes.lock().push(event.arg::<u64>(0).unwrap());
                })
        })
        .build()
}

#[tokio::test]
async fn server_restart_backoff_offline_queue_and_fresh_auth() {
    init_tracing();
    let notes = Arc::new(Mutex::new(Vec::new()));
    let auths = Arc::new(Mutex::new(Vec::new()));
    let server = FerrioServer::start(recording_io(notes.clone(), auths.clone())).await;
    let addr = server.addr;

    let backoff = Backoff {
        initial: Duration::from_millis(100),
        factor: 2.0,
        max: Duration::from_millis(800),
        randomization: 0.5,
        max_attempts: None,
    };
    let client = Client::builder(&server.url()).backoff(backoff).build().unwrap();
    let fetched = Arc::new(AtomicUsize::new(0));
    let f = fetched.clone();
    let socket = client
        .socket("/")
        .auth_with(move || {
            let n = f.fetch_add(1, Ordering::SeqCst);
            async move { json!({ "token": format!("token-{n}") }) }
        })
        .connect();
    connected(&socket).await;
    for i in 0..5u64 {
        socket.emit("note", i).unwrap();
    }
    within("first notes", async {
        while notes.lock().len() < 5 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    // The server goes away; a listener that accepts and hangs up holds its port, so every
    // reconnection attempt is seen (and fails) at a known instant.
    let mut changes = socket.state_changes();
    server.stop().await;
    let lost = next_state(&mut changes, "disconnected", |s| {
        matches!(s, ConnectionState::Disconnected { .. })
    })
    .await;
    let dead = within("bind the dead port", async {
        loop {
            match TcpListener::bind(addr).await {
                Ok(l) => return l,
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    })
    .await;
    let accepts = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let recorder = {
        let accepts = accepts.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = dead.accept().await {
                accepts.lock().push(Instant::now());
                drop(stream);
            }
        })
    };

    // Emits while away wait in the offline queue.
    for i in 5..25u64 {
        socket.emit("note", i).unwrap();
    }
    let acked = socket.emit_with_ack("echo", "queued with an ack");
    assert_eq!(socket.queued(), 21);

    const ATTEMPTS: u32 = 5;
    let mut attempts = Vec::new();
    while attempts.len() < ATTEMPTS as usize {
        let change = next_state(&mut changes, "reconnection attempt", |s| {
            matches!(s, ConnectionState::Reconnecting { .. })
        })
        .await;
        let ConnectionState::Reconnecting { attempt } = change.state else {
            unreachable!()
        };
        assert_eq!(
            attempt as usize,
            attempts.len() + 1,
            "attempts are numbered from 1"
        );
        attempts.push(change.at);
    }
    within("the dead port saw every attempt", async {
        while accepts.lock().len() < ATTEMPTS as usize {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    recorder.abort();
    let _ = recorder.await;

    // Delay before attempt n is within backoff.bounds(n - 1). An attempt itself (a refused
    // HTTP request) takes a few ms; allow that and scheduling as slack above the bound.
    let slack = Duration::from_millis(200);
    let mut starts = vec![lost.at];
    starts.extend(&attempts);
    let accept_times = accepts.lock().clone();
    let mut gaps = Vec::new();
    for n in 0..ATTEMPTS as usize {
        let (low, high) = backoff.bounds(n as u32);
        let gap = starts[n + 1] - starts[n];
        assert!(
            gap >= low && gap <= high + slack,
            "attempt {}: waited {gap:?}, bounds {low:?}..={high:?}",
            n + 1
        );
        if n > 0 {
            let seen = accept_times[n] - accept_times[n - 1];
            assert!(
                seen + Duration::from_millis(10) >= low && seen <= high + slack,
                "attempt {} seen by the server {seen:?} after the previous, bounds {low:?}..={high:?}",
                n + 1
            );
        }
        gaps.push(gap);
    }
    // Growing: the last wait exceeds the largest possible first one.
    assert!(
        gaps[ATTEMPTS as usize - 1] > backoff.bounds(0).1,
        "delays grow: {gaps:?}"
    );
    // Jittered: not every delay is the nominal one.
    let nominal = |n: usize| Duration::from_millis(100 << n).min(backoff.max);
    assert!(
        (0..4).any(|n| gaps[n].abs_diff(nominal(n)) > Duration::from_millis(3)),
        "delays are jittered: {gaps:?}"
    );
    eprintln!("reconnection delays: {gaps:?}");

    // The server comes back on the same port.
    let server = FerrioServer::start_on(addr, recording_io(notes.clone(), auths.clone())).await;
    within_for(Duration::from_secs(5), "reconnected", socket.wait_connected())
        .await
        .unwrap();
    within("queued ack answered", acked).await.unwrap();
    within("queued notes", async {
        while notes.lock().len() < 25 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(
        *notes.lock(),
        (0..25).collect::<Vec<u64>>(),
        "flushed in order, once"
    );
    assert_eq!(socket.queued(), 0);
    // The auth callback ran again for the new connection (failed attempts never got as far
    // as a CONNECT).
    assert_eq!(fetched.load(Ordering::SeqCst), 2);
    assert_eq!(
        *auths.lock(),
        vec![json!({"token": "token-0"}), json!({"token": "token-1"})]
    );
    // Backoff is reset on success: the next loss starts over at the first delay.
    let mut changes = socket.state_changes();
    server.stop().await;
    let lost = next_state(&mut changes, "lost again", |s| {
        matches!(s, ConnectionState::Disconnected { .. })
    })
    .await;
    let first = next_state(&mut changes, "first attempt again", |s| {
        matches!(s, ConnectionState::Reconnecting { .. })
    })
    .await;
    assert_eq!(first.state, ConnectionState::Reconnecting { attempt: 1 });
    let (low, high) = backoff.bounds(0);
    let gap = first.at - lost.at;
    assert!(gap >= low && gap <= high + slack, "after a reset: {gap:?}");
    client.close();
}

#[tokio::test]
async fn gives_up_after_the_maximum_attempts() {
    // Nothing listens on this port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = Client::builder(&format!("http://127.0.0.1:{port}"))
        .reconnection_delay(Duration::from_millis(5))
        .reconnection_delay_max(Duration::from_millis(10))
        .reconnection_attempts(3)
        .build()
        .unwrap();
    let socket = client.socket("/").connect();
    let reason = within("gave up", socket.wait_connected()).await.unwrap_err();
    assert_eq!(reason, ferrio_client::DisconnectReason::ReconnectFailed);
}

#[tokio::test]
async fn without_reconnection_a_loss_is_final() {
    let notes = Arc::new(Mutex::new(Vec::new()));
    let server = FerrioServer::start(recording_io(notes, Arc::new(Mutex::new(Vec::new())))).await;
    let proxy = crate::proxy::Proxy::start(server.addr).await;
    let client = Client::builder(&proxy.url())
        .reconnection(false)
        .reconnection_delay(Duration::from_millis(5))
        .build()
        .unwrap();
    let socket = client.socket("/").connect();
    connected(&socket).await;
    let mut changes = socket.state_changes();
    proxy.cut_all();
    next_state(&mut changes, "lost", |s| {
        matches!(s, ConnectionState::Disconnected { .. })
    })
    .await;
    let opened = proxy.accepted();
    let reason = within("no reconnection coming", socket.wait_connected())
        .await
        .unwrap_err();
    assert!(
        matches!(
            reason,
            ferrio_client::DisconnectReason::TransportClose
                | ferrio_client::DisconnectReason::TransportError(_)
        ),
        "{reason:?}"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), changes.next())
            .await
            .is_err(),
        "no reconnection attempt"
    );
    assert_eq!(proxy.accepted(), opened, "no new TCP connection");
    // An explicit connect() opens a new connection.
    socket.connect();
    connected(&socket).await;
    assert!(proxy.accepted() > opened);
}
