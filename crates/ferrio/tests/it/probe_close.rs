//! A probing WebSocket (an upgrade in progress) that breaks the rules is closed with a close
//! frame whose code says why, and the session goes on over polling.

use ferrio::{Config, Io};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::support::{PollClient, WsClient, parse_connect_reply, start, with_echo, ws_open};

fn io() -> Io {
    Io::builder(Config::default()).ns("/", with_echo).build()
}

/// A polling session with `/` connected, and a WebSocket probing to upgrade it.
async fn probing(server: &crate::support::Server) -> (PollClient, WsClient) {
    let p = PollClient::open(server.addr).await;
    p.post_ok("40").await;
    parse_connect_reply(&p.get_records().await[0], "/");
    let ws = ws_open(
        server.addr,
        &format!("EIO=4&transport=websocket&sid={}", p.sid),
        &[],
    )
    .await
    .expect("probe");
    (p.clone(), WsClient::from_upgrade(ws, &p.sid))
}

/// The session still answers over polling.
async fn polling_goes_on(p: &PollClient) {
    p.post_ok(r#"421["echo","polling"]"#).await;
    let mut records = Vec::new();
    while !records.iter().any(|r: &String| r.starts_with("43")) {
        records.extend(p.get_records().await.into_iter().filter(|r| r != "6"));
    }
    assert_eq!(records, vec![r#"431["polling"]"#.to_owned()]);
}

#[tokio::test]
async fn engine_io_garbage_on_a_probe_is_closed_with_1008() {
    let server = start(io()).await;
    for garbage in ["hello", "4hi", "2probe"] {
        let (p, mut probe) = probing(&server).await;
        if garbage == "2probe" {
            // A second `2probe` breaks the upgrade's order.
            probe.send("2probe").await;
            probe.expect("3probe").await;
        }
        probe.send(garbage).await;
        probe.expect_closed().await;
        assert_eq!(probe.close_code, Some(1008), "{garbage}");
        polling_goes_on(&p).await;
    }
}

#[tokio::test]
async fn framing_errors_on_a_probe_get_their_close_code() {
    let server = start(io()).await;
    let (p, mut probe) = probing(&server).await;
    // A close code no peer may send (RFC 6455 §7.4.1) breaks the WebSocket layer: 1002.
    let frame = CloseFrame {
        code: 1005.into(),
        reason: "".into(),
    };
    probe.ws.send(Message::Close(Some(frame))).await.unwrap();
    probe.expect_closed().await;
    assert_eq!(probe.close_code, Some(1002));
    polling_goes_on(&p).await;
}
