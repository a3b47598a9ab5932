//! Connection limits with raw clients from several 127.0.0.x source addresses: per address,
//! per node, new connections per second, `X-Forwarded-For` from trusted proxies only; and
//! the HTTP server's limits against a slowloris handshake and a 100 KB header.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::support::*;

/// Dev mode (loopback), every connection limit off but those given as `key = value` lines.
fn config(limits: &str) -> String {
    let mut lines: Vec<String> = limits.lines().map(str::to_owned).collect();
    for key in [
        "connection_rate_per_ip",
        "max_connections_per_ip",
        "max_connections",
    ] {
        if !limits.contains(key) {
            lines.push(format!("{key} = 0"));
        }
    }
    format!("[limits]\n{}\n", lines.join("\n"))
}

async fn handshake_status(server: &Server, source: u8, headers: &[&str]) -> u16 {
    get(server, source, POLLING, headers)
        .await
        .expect("no response")
        .status
}

#[tokio::test]
async fn connections_per_address_apply_per_address() {
    let server = Server::start(&config("max_connections_per_ip = 3")).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(ws_from(&server, 2, &[]).await.expect("within the limit"));
    }
    assert_eq!(
        ws_from(&server, 2, &[]).await.err(),
        Some(429),
        "the fourth from 127.0.0.2"
    );
    let refused = get(&server, 2, POLLING, &[]).await.unwrap();
    assert_eq!(refused.status, 429);
    assert_eq!(
        refused.json()["message"],
        "too many connections from this address"
    );
    assert!(refused.header("retry-after").is_some());

    // Other addresses are not affected.
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(
            ws_from(&server, 3, &[])
                .await
                .expect("127.0.0.3 has its own count"),
        );
    }

    // One of 127.0.0.2's connections goes: a place opens again.
    let mut gone = held.pop().unwrap();
    let _ = gone.close(None).await;
    drop(gone);
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        match ws_from(&server, 2, &[]).await {
            Ok(ws) => {
                held.push(ws);
                break;
            }
            Err(429) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("still refused: {status}"),
        }
    }
    let log = server.stop().await;
    assert!(log.contains("limits.max_connections_per_ip="), "counted: {log}");
}

#[tokio::test]
async fn new_connections_per_second_per_address() {
    let server = Server::start(&config("connection_rate_per_ip = 1\nconnection_burst_per_ip = 3")).await;
    for _ in 0..3 {
        assert_eq!(handshake_status(&server, 4, &[]).await, 200);
    }
    let refused = get(&server, 4, POLLING, &[]).await.unwrap();
    assert_eq!(refused.status, 429);
    assert_eq!(
        refused.json()["message"],
        "too many new connections from this address"
    );
    assert_eq!(refused.header("retry-after").as_deref(), Some("1"));
    assert_eq!(
        ws_from(&server, 4, &[]).await.err(),
        Some(429),
        "WebSocket handshakes count too"
    );
    assert_eq!(handshake_status(&server, 5, &[]).await, 200, "another address");
}

#[tokio::test]
async fn connections_per_node() {
    let server = Server::start(&config("max_connections = 2")).await;
    // Connections count once they have connected a namespace (authenticated).
    let mut a = ws_from(&server, 6, &[]).await.unwrap();
    assert!(sio_connect(&mut a, None).await.starts_with("40"));
    let mut b = ws_from(&server, 7, &[]).await.unwrap();
    assert!(sio_connect(&mut b, None).await.starts_with("40"));
    let refused = get(&server, 8, POLLING, &[]).await.unwrap();
    assert_eq!(refused.status, 503);
    assert_eq!(refused.json()["message"], "server at capacity");
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let server = Server::start(&config(
        "max_connections_per_ip = 1\ntrusted_proxies = [\"127.0.0.9/32\"]",
    ))
    .await;
    // Through the proxy: each forwarded client has its own count.
    let xff = |ip: &str| format!("X-Forwarded-For: {ip}, 127.0.0.9");
    assert_eq!(handshake_status(&server, 9, &[&xff("203.0.113.7")]).await, 200);
    assert_eq!(handshake_status(&server, 9, &[&xff("203.0.113.7")]).await, 429);
    assert_eq!(handshake_status(&server, 9, &[&xff("203.0.113.8")]).await, 200);
    // A forged header from an untrusted peer is ignored: the peer's address counts.
    assert_eq!(
        handshake_status(&server, 10, &["X-Forwarded-For: 198.51.100.1"]).await,
        200
    );
    assert_eq!(
        handshake_status(&server, 10, &["X-Forwarded-For: 198.51.100.2"]).await,
        429
    );
}

#[tokio::test]
async fn slowloris_handshake_is_cut_off() {
    let server = Server::start(&config("handshake_timeout = \"600ms\"")).await;
    let started = tokio::time::Instant::now();
    let mut slow = tcp_from(11, server.addr).await;
    slow.write_all(format!("GET {POLLING} HTTP/1.1\r\nHost: x\r\n").as_bytes())
        .await
        .unwrap();
    // Keep dribbling a header line; the server must hang up long before this loop ends.
    let mut cut = false;
    for i in 0..100 {
        if slow
            .write_all(format!("X-Slow-{i}: a\r\n").as_bytes())
            .await
            .is_err()
        {
            cut = true;
            break;
        }
        if i % 5 == 0 {
            // A request on another connection is served meanwhile.
            assert_eq!(handshake_status(&server, 12, &[]).await, 200);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !cut {
        // The server may have answered (408) instead of resetting: the connection is closed.
        cut = read_response(&mut slow).await.is_none_or(|r| r.status == 408);
    }
    assert!(cut, "the slow client was not disconnected");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_100_kb_header_is_refused() {
    let server = Server::start(&config("")).await;
    let big = format!("X-Big: {}", "a".repeat(100 * 1024));
    let res = get(&server, 13, POLLING, &[&big]).await.expect("an answer");
    assert_eq!(res.status, 431, "{res:?}");
    let cookie = format!("Cookie: {}", "c=1; ".repeat(20 * 1024));
    let res = get(&server, 13, POLLING, &[&cookie]).await.expect("an answer");
    assert_eq!(res.status, 431);
    assert_eq!(
        handshake_status(&server, 13, &[]).await,
        200,
        "the server still serves"
    );
}
