//! HTTP long-polling: a reader that keeps one GET outstanding, and a writer that POSTs what
//! is queued as one payload (records joined by `\x1e`, binary as `b<base64>`).

use std::collections::VecDeque;

use bytes::Bytes;
use ferrio_proto::engine::{PayloadEncoder, payload_records};
use http::{Method, StatusCode};
use tokio::sync::{mpsc, watch};

use super::http::HttpConn;
use super::{Incoming, Link, Report, Wire};
use crate::DisconnectReason;
use crate::config::{ClientOptions, Transport};

/// Decodes a polling response body into packets.
pub(crate) fn decode_body(body: &[u8]) -> Result<Vec<Incoming>, DisconnectReason> {
    let text =
        std::str::from_utf8(body).map_err(|_| DisconnectReason::ParseError("body is not UTF-8".into()))?;
    payload_records(text)
        .map(|record| {
            record
                .map(Incoming::from_packet)
                .map_err(|e| DisconnectReason::ParseError(e.to_string()))
        })
        .collect()
}

fn status_error(status: StatusCode, body: &[u8]) -> String {
    let body = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    format!("HTTP {status}: {body}")
}

/// The handshake GET: the packets of the first response (an `open` first) and the
/// connection it came on.
pub(crate) async fn handshake(options: &ClientOptions) -> Result<(Vec<Incoming>, HttpConn), String> {
    let mut conn = HttpConn::new(options);
    let target = options.request_target(Transport::Polling, None);
    let response = conn.request(Method::GET, &target, None).await?;
    if response.status != StatusCode::OK {
        return Err(status_error(response.status, &response.body));
    }
    let packets = decode_body(&response.body).map_err(|e| e.to_string())?;
    Ok((packets, conn))
}

/// Runs a polling session as a [`Link`]; `get_conn` is the handshake's connection.
pub(crate) fn start(options: &ClientOptions, sid: &str, get_conn: HttpConn, max_payload: usize) -> Link {
    let target = options.request_target(Transport::Polling, Some(sid));
    let (report_tx, reports) = mpsc::channel(64);
    let (writer, batches) = mpsc::unbounded_channel();
    let (pause, paused) = watch::channel(false);
    let reader_task = tokio::spawn(read(get_conn, target.clone(), paused, report_tx.clone()));
    let writer_task = tokio::spawn(write(
        HttpConn::new(options),
        target,
        batches,
        report_tx,
        max_payload,
    ));
    Link {
        reports,
        writer: Some(writer),
        reader_task: Some(reader_task),
        writer_task: Some(writer_task),
        pause: Some(pause),
    }
}

async fn read(
    mut conn: HttpConn,
    target: String,
    paused: watch::Receiver<bool>,
    reports: mpsc::Sender<Report>,
) {
    loop {
        if *paused.borrow() {
            return;
        }
        let packets = match conn.request(Method::GET, &target, None).await {
            Ok(r) if r.status == StatusCode::OK => decode_body(&r.body),
            Ok(r) => Err(DisconnectReason::TransportError(status_error(r.status, &r.body))),
            Err(e) => Err(DisconnectReason::TransportError(e)),
        };
        match packets {
            Ok(packets) => {
                for packet in packets {
                    let close = packet == Incoming::Close;
                    if reports.send(Ok(packet)).await.is_err() || close {
                        return;
                    }
                }
            }
            Err(reason) => {
                let _ = reports.send(Err(reason)).await;
                return;
            }
        }
    }
}

async fn write(
    mut conn: HttpConn,
    target: String,
    mut batches: mpsc::UnboundedReceiver<Vec<Wire>>,
    reports: mpsc::Sender<Report>,
    max_payload: usize,
) {
    let mut pending: VecDeque<Wire> = VecDeque::new();
    loop {
        if pending.is_empty() {
            match batches.recv().await {
                Some(batch) => pending.extend(batch),
                None => return,
            }
        }
        while let Ok(batch) = batches.try_recv() {
            pending.extend(batch);
        }
        let mut payload = PayloadEncoder::default();
        while let Some(wire) = pending.front() {
            let size = match wire {
                Wire::Text(t) => t.len(),
                Wire::Binary(b) => 1 + b.len().div_ceil(3) * 4,
            };
            // At least one packet per POST, however large; then stay under maxPayload.
            if !payload.is_empty() && payload.len() + 1 + size > max_payload {
                break;
            }
            match pending.pop_front() {
                Some(Wire::Text(t)) => payload.push_text(&t),
                Some(Wire::Binary(b)) => payload.push_binary(&b),
                None => break,
            }
        }
        let body = Bytes::from(payload.finish());
        let result = match conn.request(Method::POST, &target, Some(body)).await {
            Ok(r) if r.status == StatusCode::OK => Ok(()),
            Ok(r) => Err(status_error(r.status, &r.body)),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            let _ = reports.send(Err(DisconnectReason::TransportError(e))).await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_bodies() {
        let packets = decode_body(b"0{\"sid\":\"x\"}\x1e40{\"sid\":\"y\"}\x1ebAQI=").unwrap();
        assert_eq!(
            packets,
            vec![
                Incoming::Open("{\"sid\":\"x\"}".into()),
                Incoming::Text("0{\"sid\":\"y\"}".into()),
                Incoming::Binary(Bytes::from_static(&[1, 2])),
            ]
        );
        assert!(matches!(decode_body(b"9"), Err(DisconnectReason::ParseError(_))));
        assert!(matches!(
            decode_body(&[0xff]),
            Err(DisconnectReason::ParseError(_))
        ));
    }
}
