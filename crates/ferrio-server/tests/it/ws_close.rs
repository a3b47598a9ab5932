//! WebSocket close handling of `ferrio serve` against a raw client (RFC 6455 §5.5.1, §7.4):
//! close codes a peer may not send are answered with 1002, valid ones are echoed, and
//! protocol garbage gets a close frame with a code before the TCP connection ends. Every
//! violation shows in `ferrio_protocol_errors_total{kind}`.
//!
//! The client is written here, byte by byte, because a WebSocket library would refuse to
//! send most of what these tests send.

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Connection limits off: each test opens many connections from one address in a second.
const CONFIG: &str =
    "[limits]\nconnection_rate_per_ip = 0\nmax_connections_per_ip = 0\nmax_connections = 0\n";

const MASK: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];
const FIN: u8 = 0x80;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;

/// A server frame, as the test sees it.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    Text(String),
    /// A close frame and its status code (`None` for an empty payload).
    Close(Option<u16>),
    Other {
        opcode: u8,
        payload: Vec<u8>,
    },
}

/// A masked client frame with the first header byte `first` (FIN, RSV and opcode bits).
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

fn close_frame(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    client_frame(FIN | CLOSE, &payload)
}

/// A WebSocket client that sends whatever bytes it is given.
struct RawWs {
    stream: TcpStream,
    /// Bytes read and not yet parsed into frames.
    buf: Vec<u8>,
}

impl RawWs {
    /// Handshakes on the Engine.IO endpoint and reads the open packet.
    async fn open(server: &Server) -> Self {
        let stream = tcp_from(1, server.addr).await;
        let mut ws = RawWs {
            stream,
            buf: Vec::new(),
        };
        let request = format!(
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n",
            server.addr
        );
        ws.send(request.as_bytes()).await;
        let head_end = loop {
            if let Some(i) = ws.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(ws.read_more().await > 0, "closed during the handshake");
        };
        let head = String::from_utf8_lossy(&ws.buf[..head_end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        ws.buf.drain(..head_end);
        match ws.next_frame().await {
            Some(Frame::Text(open)) if open.starts_with('0') => {}
            other => panic!("expected the open packet, got {other:?}"),
        }
        ws
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads once more; 0 at the end of the stream. A reset fails the test: the server must
    /// end the connection cleanly, after its close frame.
    async fn read_more(&mut self) -> usize {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(STEP, self.stream.read(&mut chunk))
            .await
            .expect("nothing from the server in time")
            .expect("the connection ended with an error");
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// The next server frame; `None` when the stream ended first.
    async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            if self.read_more().await == 0 {
                assert!(self.buf.is_empty(), "stream ended inside a frame: {:?}", self.buf);
                return None;
            }
        }
    }

    /// The code of the server's close frame (frames before it are skipped), after which the
    /// stream must end.
    async fn close_code_then_eof(&mut self) -> Option<u16> {
        let code = loop {
            match self.next_frame().await {
                Some(Frame::Close(code)) => break code,
                Some(_) => {}
                None => panic!("TCP closed without a close frame"),
            }
        };
        assert_eq!(self.next_frame().await, None, "nothing may follow a close frame");
        code
    }
}

/// One unmasked server frame from the start of `buf`, and the bytes it took.
fn parse_server_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    let [b0, b1, ..] = *buf else { return None };
    assert_eq!(b1 & 0x80, 0, "server frames are not masked");
    assert_eq!(b0 & 0x70, 0, "no reserved bits");
    let (len, start) = match b1 & 0x7F {
        126 => (
            usize::from(u16::from_be_bytes(buf.get(2..4)?.try_into().unwrap())),
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().unwrap()) as usize,
            10,
        ),
        n => (usize::from(n), 2),
    };
    let payload = buf.get(start..start + len)?;
    let frame = match b0 & 0x0F {
        TEXT => Frame::Text(String::from_utf8(payload.to_vec()).unwrap()),
        CLOSE => {
            assert_ne!(payload.len(), 1, "a close payload of one byte");
            let code = (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
            Frame::Close(code)
        }
        opcode => Frame::Other {
            opcode,
            payload: payload.to_vec(),
        },
    };
    Some((frame, start + len))
}

#[tokio::test]
async fn close_codes_a_peer_may_not_send_are_answered_with_1002() {
    let server = Server::start(CONFIG).await;
    for code in [
        0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        let mut ws = RawWs::open(&server).await;
        ws.send(&close_frame(code, b"")).await;
        assert_eq!(ws.close_code_then_eof().await, Some(1002), "close code {code}");
    }
}

#[tokio::test]
async fn valid_close_codes_are_echoed() {
    let server = Server::start(CONFIG).await;
    for code in [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999,
    ] {
        let mut ws = RawWs::open(&server).await;
        ws.send(&close_frame(code, "bye ✓".as_bytes())).await;
        assert_eq!(ws.close_code_then_eof().await, Some(code), "close code {code}");
    }
    // An empty close frame is answered with an empty one.
    let mut ws = RawWs::open(&server).await;
    ws.send(&client_frame(FIN | CLOSE, b"")).await;
    assert_eq!(ws.close_code_then_eof().await, None);
}

#[tokio::test]
async fn malformed_close_frames_are_answered_with_a_code() {
    let server = Server::start(CONFIG).await;
    let mut ws = RawWs::open(&server).await;
    ws.send(&client_frame(FIN | CLOSE, &[0x03])).await;
    assert_eq!(ws.close_code_then_eof().await, Some(1002), "one-byte payload");
    // Invalid UTF-8 in the reason: 1007, as the reference's `ws` answers it.
    let mut ws = RawWs::open(&server).await;
    ws.send(&close_frame(1000, &[b'o', 0xFF, b'k'])).await;
    assert_eq!(ws.close_code_then_eof().await, Some(1007), "reason not UTF-8");
}

#[tokio::test]
async fn garbage_gets_a_close_frame_with_a_code_then_eof() {
    let server = Server::start(CONFIG).await;
    let oversize = {
        // Only the header of a 2 MB frame (max_payload is 1 MB): refused from the header.
        let mut h = vec![FIN | BINARY, 0x80 | 127];
        h.extend_from_slice(&2_000_000u64.to_be_bytes());
        h.extend_from_slice(&MASK);
        h
    };
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        // Engine.IO garbage: 1008, a policy violation above the WebSocket layer.
        ("not engine.io", client_frame(FIN | TEXT, b"hello"), 1008),
        ("packet type 9", client_frame(FIN | TEXT, b"9"), 1008),
        ("empty packet", client_frame(FIN | TEXT, b""), 1008),
        ("bad base64", client_frame(FIN | TEXT, b"b!!!"), 1008),
        ("ping from a client", client_frame(FIN | TEXT, b"2"), 1008),
        // WebSocket framing: 1002, or the code RFC 6455 assigns.
        (
            "unmasked frame",
            vec![FIN | TEXT, 5, b'4', b'h', b'e', b'l', b'o'],
            1002,
        ),
        ("RSV1 set", client_frame(FIN | 0x40 | TEXT, b"4x"), 1002),
        ("reserved opcode", client_frame(FIN | 0x3, b""), 1002),
        ("fragmented ping", client_frame(PING, b"p"), 1002),
        ("oversized ping", client_frame(FIN | PING, &[0; 126]), 1002),
        ("stray continuation", client_frame(FIN, b"x"), 1002),
        ("text not UTF-8", client_frame(FIN | TEXT, &[b'4', 0xFF]), 1007),
        ("too big", oversize, 1009),
    ];
    for (name, bytes, code) in cases {
        let mut ws = RawWs::open(&server).await;
        ws.send(&bytes).await;
        assert_eq!(ws.close_code_then_eof().await, Some(code), "{name}");
    }
    // The server still serves a well-behaved client.
    let mut ws = ws_from(&server, 2, &[]).await.unwrap();
    assert!(sio_connect(&mut ws, None).await.starts_with("40"));
}

/// The value of one series on /metrics (`name{labels}` exactly as rendered).
async fn metric(server: &Server, series: &str) -> Option<f64> {
    let text = get(server, 1, "/metrics", &[]).await.expect("metrics").body;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Waits (bounded) until `series` reads `value`.
async fn expect_metric(server: &Server, series: &str, value: f64) {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let now = metric(server, series).await;
        if now == Some(value) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} is {now:?}, expected {value}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn protocol_errors_are_counted_by_kind() {
    let server = Server::start(CONFIG).await;
    let series = |kind: &str| format!("ferrio_protocol_errors_total{{kind=\"{kind}\"}}");
    assert_eq!(metric(&server, &series("invalid_packet_type")).await, None);

    let ws_cases: [(&[u8], &str); 5] = [
        (&client_frame(FIN | TEXT, b"hello"), "invalid_packet_type"),
        (&client_frame(FIN | TEXT, b"2"), "unexpected_packet"),
        (&[FIN | TEXT, 1, b'4'], "ws_unmasked_frame"),
        (&close_frame(1005, b""), "ws_invalid_close_code"),
        (&client_frame(FIN | PING, &[0; 126]), "ws_oversized_control_frame"),
    ];
    for (bytes, kind) in ws_cases {
        let mut ws = RawWs::open(&server).await;
        ws.send(bytes).await;
        ws.close_code_then_eof().await;
        expect_metric(&server, &series(kind), 1.0).await;
    }
    // Twice the same violation counts twice.
    let mut ws = RawWs::open(&server).await;
    ws.send(&client_frame(FIN | TEXT, b"hi")).await;
    ws.close_code_then_eof().await;
    expect_metric(&server, &series("invalid_packet_type"), 2.0).await;

    // A Socket.IO packet that does not decode.
    let mut ws = RawWs::open(&server).await;
    ws.send(&client_frame(FIN | TEXT, b"4abc")).await;
    ws.close_code_then_eof().await;
    expect_metric(&server, &series("invalid_socket_packet_type"), 1.0).await;

    // A polling payload that does not decode.
    let open = get(&server, 1, POLLING, &[]).await.unwrap();
    let sid = serde_json::from_str::<Value>(&open.body[1..]).unwrap()["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    request(&server, 1, "POST", &format!("{POLLING}&sid={sid}"), &[], "b!!!")
        .await
        .unwrap();
    expect_metric(&server, &series("invalid_base64"), 1.0).await;

    // Breaking the Socket.IO state rules: an event for a namespace not connected.
    let mut ws = RawWs::open(&server).await;
    ws.send(&client_frame(FIN | TEXT, b"42/admin,[\"x\"]")).await;
    ws.close_code_then_eof().await;
    expect_metric(&server, &series("namespace_not_connected"), 1.0).await;

    // A v3 client's binary polling POST.
    let open = get(&server, 1, POLLING, &[]).await.unwrap();
    let sid = serde_json::from_str::<Value>(&open.body[1..]).unwrap()["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let binary = ["Content-Type: application/octet-stream"];
    request(&server, 1, "POST", &format!("{POLLING}&sid={sid}"), &binary, "x")
        .await
        .unwrap();
    expect_metric(&server, &series("binary_post"), 1.0).await;
}
