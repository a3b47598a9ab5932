//! Heartbeat supervision: a server that stops pinging is declared dead within
//! `ping_interval + ping_timeout`, and the client reconnects once it is back.

use std::time::Duration;

use ferrio::Io;
use ferrio_client::{Client, ConnectionState, DisconnectReason, Transport};
use tokio::time::Instant;

use crate::proxy::Proxy;
use crate::support::{
    ChildServer, FerrioServer, config_with_ping, connected, ferrio_binary, init_tracing, next_state,
    node_reference, repo_root, with_echo, within,
};

const INTERVAL: Duration = Duration::from_millis(300);
const TIMEOUT: Duration = Duration::from_millis(200);
/// Timer and scheduling slack on a busy machine.
const SLACK: Duration = Duration::from_millis(250);

/// Waits for the ping timeout that `stop` causes, checks it came within interval + timeout,
/// then lets the server live again (`resume`) and waits for the reconnection.
async fn detects_silence(url: &str, transports: &[Transport], stop: impl FnOnce(), resume: impl FnOnce()) {
    let client = Client::builder(url)
        .transports(transports)
        .reconnection_delay(Duration::from_millis(50))
        .reconnection_delay_max(Duration::from_millis(200))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let socket = client.socket("/").connect();
    connected(&socket).await;
    // Let a ping or two go by, to be sure the heartbeat works while the server lives.
    tokio::time::sleep(INTERVAL * 2).await;
    assert!(socket.connected());
    let mut changes = socket.state_changes();
    let stopped_at = Instant::now();
    stop();
    let change = next_state(&mut changes, "ping timeout", |s| {
        matches!(s, ConnectionState::Disconnected { .. })
    })
    .await;
    let detected = change.at - stopped_at;
    resume();
    assert_eq!(
        change.state,
        ConnectionState::Disconnected {
            reason: DisconnectReason::PingTimeout
        }
    );
    assert!(
        detected <= INTERVAL + TIMEOUT + SLACK,
        "dead server detected after {detected:?} (interval + timeout = {:?})",
        INTERVAL + TIMEOUT
    );
    eprintln!("silent server detected after {detected:?}");
    next_state(&mut changes, "reconnected", |s| *s == ConnectionState::Connected).await;
    client.close();
}

#[tokio::test]
async fn frozen_link_to_ferrio_is_detected() {
    init_tracing();
    let io = Io::builder(config_with_ping(300, 200)).ns("/", with_echo).build();
    let server = FerrioServer::start(io).await;
    for transports in [&[Transport::WebSocket][..], &[Transport::Polling][..]] {
        let proxy = Proxy::start(server.addr).await;
        // Frozen: the TCP connection stays open, nothing passes; a fresh connection after
        // the freeze is let through.
        detects_silence(
            &proxy.url(),
            transports,
            || proxy.set_frozen(true),
            || {
                proxy.set_frozen(false);
                proxy.cut_all();
            },
        )
        .await;
    }
}

/// SIGSTOP freezes the whole server process; SIGCONT lets it go on.
async fn sigstop(server: &ChildServer) {
    detects_silence(
        &server.url(),
        &[Transport::WebSocket],
        || server.signal("STOP"),
        || server.signal("CONT"),
    )
    .await;
}

#[tokio::test]
async fn stopped_node_reference_is_detected() {
    let Some(server) = node_reference(&["--ping-interval", "300", "--ping-timeout", "200"]).await else {
        return;
    };
    sigstop(&server).await;
}

#[tokio::test]
async fn stopped_ferrio_binary_is_detected() {
    let Some(bin) = ferrio_binary() else {
        eprintln!("SKIPPED: the ferrio binary is not built (cargo build --workspace builds it)");
        return;
    };
    let server = ChildServer::spawn(
        &bin,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--ping-interval",
            "300",
            "--ping-timeout",
            "200",
        ],
        &repo_root(),
        &[],
    )
    .await;
    within("sigstop test", sigstop(&server)).await;
}
