//! Binary attachments in both directions, over WebSocket frames and `b<base64>` polling
//! records.

use bytes::Bytes;
use ferrio::{Config, Io, Payload, Sid};
use serde_json::{Value, json};

use crate::support::{PollClient, WsClient, parse_connect_reply, start, with_echo};

fn bytes_json(b: Option<&Bytes>) -> Value {
    b.map_or(Value::Null, |b| json!(b.to_vec()))
}

fn server_io() -> Io {
    Io::builder(Config::default())
        .ns("/", |ns| {
            with_echo(ns)
                .on("bin", |socket, event| {
                    let _ = socket.emit(
                        "got",
                        Payload::args(vec![
                            bytes_json(event.binary(0)),
                            event.args().get(1).cloned().unwrap_or(Value::Null),
                            bytes_json(event.binary(1)),
                        ]),
                    );
                })
                .on("two", |socket, event| {
                    let _ = socket.emit(
                        "got",
                        Payload::args(vec![bytes_json(event.binary(0)), bytes_json(event.binary(1))]),
                    );
                })
                .on("send-me-binary", |socket, _| {
                    let _ = socket.emit("ev", Bytes::from_static(&[1, 2, 3]));
                })
        })
        .build()
}

#[tokio::test]
async fn websocket_binary_event_reaches_the_handler_with_its_bytes() {
    let server = start(server_io()).await;
    let mut c = WsClient::connect(server.addr).await;
    c.connect_ns("/").await;

    c.send(r#"451-["bin",{"_placeholder":true,"num":0},"x"]"#).await;
    c.send_binary(vec![1u8, 2, 3]).await;
    c.expect(r#"42["got",[1,2,3],"x",null]"#).await;

    // Placeholders name attachments by number, whatever their position.
    c.send(r#"452-["two",{"_placeholder":true,"num":1},{"_placeholder":true,"num":0}]"#)
        .await;
    c.send_binary(vec![0xAu8]).await;
    c.send_binary(vec![0xBu8]).await;
    c.expect(r#"42["got",[11],[10]]"#).await;
}

#[tokio::test]
async fn websocket_binary_emit_is_a_placeholder_packet_then_a_binary_frame() {
    let server = start(server_io()).await;
    let mut c = WsClient::connect(server.addr).await;
    let sid = c.connect_ns("/").await;

    c.send(r#"42["send-me-binary"]"#).await;
    c.expect(r#"451-["ev",{"_placeholder":true,"num":0}]"#).await;
    assert_eq!(c.recv_binary().await, Bytes::from_static(&[1, 2, 3]));

    // The same from outside a handler, and as a broadcast.
    let ns = server.io.of("/").expect("namespace");
    let socket = ns.socket(sid.parse::<Sid>().expect("sid")).expect("socket");
    socket
        .emit(
            "mixed",
            Payload::new()
                .arg("a")
                .binary(vec![7u8])
                .arg(1)
                .binary(vec![8u8, 9]),
        )
        .expect("emit");
    c.expect(r#"452-["mixed","a",{"_placeholder":true,"num":0},1,{"_placeholder":true,"num":1}]"#)
        .await;
    assert_eq!(c.recv_binary().await, Bytes::from_static(&[7]));
    assert_eq!(c.recv_binary().await, Bytes::from_static(&[8, 9]));

    assert_eq!(ns.emit("all", Bytes::from_static(&[0])), Ok(1));
    c.expect(r#"451-["all",{"_placeholder":true,"num":0}]"#).await;
    assert_eq!(c.recv_binary().await, Bytes::from_static(&[0]));
}

#[tokio::test]
async fn polling_binary_both_ways_uses_base64_records() {
    let server = start(server_io()).await;
    let p = PollClient::open(server.addr).await;
    p.post_ok("40").await;
    let res = p.get().await;
    assert_eq!(res.header("content-type"), Some("text/plain; charset=UTF-8"));
    assert_eq!(res.header("cache-control"), Some("no-store"));
    parse_connect_reply(&res.text(), "/");

    // Server to client: the packet, then `b` + base64 with no type digit.
    p.post_ok(r#"42["send-me-binary"]"#).await;
    let records = p.get_records().await;
    assert_eq!(
        records,
        vec![
            r#"451-["ev",{"_placeholder":true,"num":0}]"#.to_owned(),
            "bAQID".to_owned()
        ]
    );

    // Client to server: the attachment as a `b` record in the same payload.
    p.post_ok("451-[\"bin\",{\"_placeholder\":true,\"num\":0},\"x\"]\x1ebAQID")
        .await;
    let records = p.get_records().await;
    assert_eq!(records, vec![r#"42["got",[1,2,3],"x",null]"#.to_owned()]);
}
