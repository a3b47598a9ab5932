//! The WebSocket transport: one Engine.IO packet per frame, binary messages as raw binary
//! frames.

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use super::{Incoming, Link, Report, Wire};
use crate::DisconnectReason;
use crate::config::{ClientOptions, Transport};

pub(crate) type Ws = WebSocketStream<TcpStream>;

/// Opens a WebSocket: a new session (`sid` none) or the probe of an upgrade.
pub(crate) async fn open(options: &ClientOptions, sid: Option<&str>) -> Result<Ws, String> {
    let target = options.request_target(Transport::WebSocket, sid);
    let url = format!("ws://{}{target}", options.endpoint.authority);
    let mut request = url
        .into_client_request()
        .map_err(|e| format!("websocket request: {e}"))?;
    for (k, v) in &options.headers {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("header {k}: {e}"))?;
        let value = HeaderValue::from_str(v).map_err(|e| format!("header {k}: {e}"))?;
        request.headers_mut().append(name, value);
    }
    let stream = TcpStream::connect(&options.endpoint.authority)
        .await
        .map_err(|e| format!("connect {}: {e}", options.endpoint.authority))?;
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default();
    let (ws, _response) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| format!("websocket handshake: {e}"))?;
    Ok(ws)
}

/// Reads the next Engine.IO packet (for the handshake and the probe, before the tasks run).
pub(crate) async fn next_packet(ws: &mut Ws) -> Report {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Incoming::decode(text.as_str()),
            Some(Ok(Message::Binary(bytes))) => return Ok(Incoming::Binary(bytes)),
            Some(Ok(Message::Close(_))) | None => return Err(DisconnectReason::TransportClose),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(transport_error(&e)),
        }
    }
}

fn transport_error(e: &tungstenite::Error) -> DisconnectReason {
    match e {
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            DisconnectReason::TransportClose
        }
        tungstenite::Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            DisconnectReason::TransportClose
        }
        tungstenite::Error::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => {
            DisconnectReason::TransportClose
        }
        other => DisconnectReason::TransportError(other.to_string()),
    }
}

/// Runs an open WebSocket as a [`Link`].
pub(crate) fn start(ws: Ws) -> Link {
    let (sink, stream) = ws.split();
    let (report_tx, reports) = mpsc::channel(64);
    let (writer, batches) = mpsc::unbounded_channel();
    let reader_task = tokio::spawn(read(stream, report_tx.clone()));
    let writer_task = tokio::spawn(write(sink, batches, report_tx));
    Link {
        reports,
        writer: Some(writer),
        reader_task: Some(reader_task),
        writer_task: Some(writer_task),
        pause: None,
    }
}

async fn read(mut stream: SplitStream<Ws>, reports: mpsc::Sender<Report>) {
    loop {
        let report = match stream.next().await {
            Some(Ok(Message::Text(text))) => Incoming::decode(text.as_str()),
            Some(Ok(Message::Binary(bytes))) => Ok(Incoming::Binary(bytes)),
            Some(Ok(Message::Close(_))) | None => Err(DisconnectReason::TransportClose),
            Some(Ok(_)) => continue,
            Some(Err(e)) => Err(transport_error(&e)),
        };
        let end = report.is_err();
        if reports.send(report).await.is_err() || end {
            return;
        }
    }
}

async fn write(
    mut sink: SplitSink<Ws, Message>,
    mut batches: mpsc::UnboundedReceiver<Vec<Wire>>,
    reports: mpsc::Sender<Report>,
) {
    while let Some(batch) = batches.recv().await {
        let mut result = Ok(());
        // Everything already queued goes out with one flush.
        let mut next = Some(batch);
        while let Some(batch) = next.take() {
            for wire in batch {
                let message = match wire {
                    Wire::Text(text) => Message::text(text),
                    Wire::Binary(bytes) => Message::Binary(bytes),
                };
                result = sink.feed(message).await;
                if result.is_err() {
                    break;
                }
            }
            if result.is_err() {
                break;
            }
            next = batches.try_recv().ok();
        }
        if result.is_ok() {
            result = sink.flush().await;
        }
        if let Err(e) = result {
            let _ = reports.send(Err(transport_error(&e))).await;
            return;
        }
    }
    // The driver closed the queue: end the WebSocket politely.
    let _ = sink.close().await;
}
