//! The client side of an Engine.IO v4 session: the handshake, heartbeat supervision, the
//! polling to WebSocket upgrade, and one driver task that owns the transport.
//!
//! Heartbeat supervision reuses `ferrio_proto`'s [`Heartbeat`] mirrored: the server's ping
//! is "due" `ping_interval` after the last one, and may be `ping_timeout` late. Restarting
//! the machine on every ping gives exactly the reference client's rule: no ping within
//! `ping_interval + ping_timeout` means the connection is dead.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use ferrio_proto::session::{Heartbeat, HeartbeatAction, TransportState};
use futures_util::SinkExt;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::DisconnectReason;
use crate::config::{ClientOptions, Transport};
use crate::transport::{Incoming, Link, Wire, polling, ws};

/// The `open` packet's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OpenInfo {
    pub(crate) sid: String,
    pub(crate) upgrades: Vec<String>,
    pub(crate) ping_interval: Duration,
    pub(crate) ping_timeout: Duration,
    pub(crate) max_payload: usize,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OpenJson {
    sid: String,
    #[serde(default)]
    upgrades: Vec<String>,
    ping_interval: u64,
    ping_timeout: u64,
    #[serde(default = "default_max_payload")]
    max_payload: usize,
}

fn default_max_payload() -> usize {
    1_000_000
}

impl OpenInfo {
    pub(crate) fn parse(json: &str) -> Result<Self, String> {
        let open: OpenJson = serde_json::from_str(json).map_err(|e| format!("bad open packet: {e}"))?;
        Ok(Self {
            sid: open.sid,
            upgrades: open.upgrades,
            ping_interval: Duration::from_millis(open.ping_interval),
            ping_timeout: Duration::from_millis(open.ping_timeout),
            max_payload: open.max_payload,
        })
    }
}

/// An Engine.IO message for the Socket.IO layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EngineMessage {
    Text(String),
    Binary(Bytes),
}

/// What a session reports to its owner.
#[derive(Debug)]
pub(crate) enum EngineEvent {
    Message(EngineMessage),
    /// The session ended (not sent when the owner closed it).
    Closed(DisconnectReason),
}

/// What the owner asks of a session.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// Messages to send, in order, together.
    Send(Vec<Wire>),
    /// Say goodbye (`1`) and end.
    Close,
}

/// An open session: its events, its outbound queue, and its driver (aborted on drop).
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) info: OpenInfo,
    pub(crate) events: mpsc::Receiver<EngineEvent>,
    pub(crate) outbound: mpsc::UnboundedSender<Outbound>,
    task: JoinHandle<()>,
}

impl Session {
    /// Asks the session to close and waits (briefly) for its goodbye to be written.
    pub(crate) async fn close(mut self) {
        let _ = self.outbound.send(Outbound::Close);
        // Dropping `self` afterwards aborts the driver if it has not finished.
        let _ = timeout(Duration::from_secs(1), &mut self.task).await;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens a session with the first configured transport.
pub(crate) async fn open(options: &ClientOptions) -> Result<Session, String> {
    let first = *options.transports.first().ok_or("no transport configured")?;
    let (info, link, leftover, state) = match first {
        Transport::WebSocket => {
            let mut socket = ws::open(options, None).await?;
            let info = match ws::next_packet(&mut socket).await {
                Ok(Incoming::Open(json)) => OpenInfo::parse(&json)?,
                Ok(other) => return Err(format!("expected an open packet, got {other:?}")),
                Err(reason) => return Err(reason.to_string()),
            };
            (info, ws::start(socket), Vec::new(), TransportState::WebSocket)
        }
        Transport::Polling => {
            let (mut packets, conn) = polling::handshake(options).await?;
            if packets.is_empty() {
                return Err("empty handshake response".into());
            }
            let info = match packets.remove(0) {
                Incoming::Open(json) => OpenInfo::parse(&json)?,
                other => return Err(format!("expected an open packet, got {other:?}")),
            };
            let link = polling::start(options, &info.sid, conn, info.max_payload);
            (info, link, packets, TransportState::Polling)
        }
    };
    let (events_tx, events) = mpsc::channel(1024);
    let (outbound, outbound_rx) = mpsc::unbounded_channel();
    let may_upgrade = state == TransportState::Polling
        && options.upgrade
        && options.transports.contains(&Transport::WebSocket)
        && info.upgrades.iter().any(|u| u == "websocket");
    let driver = Driver {
        options: options.clone(),
        info: info.clone(),
        link,
        state,
        heartbeat: Heartbeat::new(now(), info.ping_interval, info.ping_timeout),
        events: events_tx,
        held: None,
    };
    let task = tokio::spawn(driver.run(leftover, outbound_rx, may_upgrade));
    Ok(Session {
        info,
        events,
        outbound,
        task,
    })
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

type Probe = Pin<Box<dyn Future<Output = Result<ws::Ws, String>> + Send>>;

/// Opens the probe WebSocket of an upgrade and exchanges `2probe` / `3probe`.
async fn probe(options: ClientOptions, sid: String) -> Result<ws::Ws, String> {
    let run = async {
        let mut socket = ws::open(&options, Some(&sid)).await?;
        socket
            .send(WsMessage::text("2probe"))
            .await
            .map_err(|e| format!("probe: {e}"))?;
        match ws::next_packet(&mut socket).await {
            Ok(Incoming::Pong(p)) if p == "probe" => Ok(socket),
            Ok(other) => Err(format!("unexpected probe answer {other:?}")),
            Err(reason) => Err(reason.to_string()),
        }
    };
    timeout(options.upgrade_timeout, run)
        .await
        .map_err(|_| "probe timed out".to_owned())?
}

/// Why the driver stopped.
enum Stop {
    /// The owner closed the session.
    Closed,
    /// The session died.
    Lost(DisconnectReason),
}

struct Driver {
    options: ClientOptions,
    info: OpenInfo,
    link: Link,
    state: TransportState,
    heartbeat: Heartbeat,
    events: mpsc::Sender<EngineEvent>,
    /// While an upgrade pauses polling, what would have been written waits here.
    held: Option<Vec<Wire>>,
}

impl Driver {
    async fn run(
        mut self,
        leftover: Vec<Incoming>,
        mut outbound: mpsc::UnboundedReceiver<Outbound>,
        may_upgrade: bool,
    ) {
        let stop = self.drive(leftover, &mut outbound, may_upgrade).await;
        match stop {
            Stop::Closed => {
                // Goodbye: `1`, then let the writer finish.
                self.link.send(vec![Wire::Text("1".into())]);
                if let Some(writer) = self.link.stop_writing() {
                    let _ = timeout(Duration::from_millis(500), writer).await;
                }
            }
            Stop::Lost(reason) => {
                tracing::debug!(%reason, sid = %self.info.sid, "engine.io session lost");
                let _ = self.events.send(EngineEvent::Closed(reason)).await;
            }
        }
    }

    async fn drive(
        &mut self,
        leftover: Vec<Incoming>,
        outbound: &mut mpsc::UnboundedReceiver<Outbound>,
        may_upgrade: bool,
    ) -> Stop {
        for packet in leftover {
            if let Err(stop) = self.on_packet(packet).await {
                return stop;
            }
        }
        let mut probe_fut: Option<Probe> = None;
        if may_upgrade && let Ok(next) = self.state.on_websocket_opened(now()) {
            self.state = next;
            probe_fut = Some(Box::pin(probe(self.options.clone(), self.info.sid.clone())));
        }
        loop {
            let deadline = self.heartbeat.deadline().map(Instant::from_std);
            let probing = async {
                match probe_fut.as_mut() {
                    Some(p) => p.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                report = self.link.reports.recv() => {
                    let result = match report {
                        Some(Ok(packet)) => self.on_packet(packet).await,
                        Some(Err(reason)) => Err(Stop::Lost(reason)),
                        None => Err(Stop::Lost(DisconnectReason::TransportClose)),
                    };
                    if let Err(stop) = result {
                        return stop;
                    }
                }
                out = outbound.recv() => match out {
                    Some(Outbound::Send(batch)) => {
                        if !self.link.send(batch) {
                            return Stop::Lost(DisconnectReason::TransportClose);
                        }
                    }
                    Some(Outbound::Close) | None => return Stop::Closed,
                },
                () = async {
                    match deadline {
                        Some(at) => sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    if self.heartbeat.poll(now()) == Some(HeartbeatAction::TimedOut) {
                        return Stop::Lost(DisconnectReason::PingTimeout);
                    }
                }
                probed = probing => {
                    probe_fut = None;
                    match probed {
                        Ok(socket) => {
                            if let Err(stop) = self.upgrade(socket).await {
                                return stop;
                            }
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "websocket upgrade failed, staying on polling");
                            self.state = self.state.on_probe_failed();
                        }
                    }
                }
            }
        }
    }

    async fn on_packet(&mut self, packet: Incoming) -> Result<(), Stop> {
        match packet {
            Incoming::Ping(_) => {
                self.heartbeat = Heartbeat::new(now(), self.info.ping_interval, self.info.ping_timeout);
                self.write(vec![Wire::Text("3".into())])?;
            }
            Incoming::Text(text) => self.deliver(EngineMessage::Text(text)).await?,
            Incoming::Binary(bytes) => self.deliver(EngineMessage::Binary(bytes)).await?,
            Incoming::Close => return Err(Stop::Lost(DisconnectReason::TransportClose)),
            Incoming::Open(_) | Incoming::Pong(_) | Incoming::Upgrade | Incoming::Noop => {}
        }
        Ok(())
    }

    async fn deliver(&mut self, message: EngineMessage) -> Result<(), Stop> {
        self.events
            .send(EngineEvent::Message(message))
            .await
            .map_err(|_| Stop::Closed)
    }

    fn write(&mut self, batch: Vec<Wire>) -> Result<(), Stop> {
        if let Some(held) = &mut self.held {
            held.extend(batch);
            return Ok(());
        }
        if self.link.send(batch) {
            Ok(())
        } else {
            Err(Stop::Lost(DisconnectReason::TransportClose))
        }
    }

    /// Finishes an upgrade whose probe succeeded: pause polling (the writer finishes its
    /// POST, the reader its GET, which the server releases with a noop), then `5` on the
    /// WebSocket, which becomes the transport. Packets read meanwhile are handled in order.
    async fn upgrade(&mut self, mut socket: ws::Ws) -> Result<(), Stop> {
        self.state = self
            .state
            .on_probe()
            .map_err(|e| Stop::Lost(DisconnectReason::TransportError(e.to_string())))?;
        let limit = self.options.upgrade_timeout;
        let lost = |what: &str| Stop::Lost(DisconnectReason::TransportError(format!("upgrade: {what}")));
        self.held = Some(Vec::new());
        if let Some(writer) = self.link.stop_writing() {
            timeout(limit, writer)
                .await
                .map_err(|_| lost("polling writer did not finish"))?
                .map_err(|_| lost("polling writer failed"))?;
        }
        if let Some(pause) = &self.link.pause {
            let _ = pause.send(true);
        }
        let drained = timeout(limit, async {
            while let Some(report) = self.link.reports.recv().await {
                match report {
                    Ok(packet) => self.on_packet(packet).await?,
                    Err(reason) => return Err(Stop::Lost(reason)),
                }
            }
            Ok(())
        })
        .await;
        match drained {
            Ok(result) => result?,
            Err(_) => return Err(lost("the last poll did not return")),
        }
        socket
            .send(WsMessage::text("5"))
            .await
            .map_err(|e| lost(&e.to_string()))?;
        self.link = ws::start(socket);
        self.state = self
            .state
            .on_upgrade()
            .map_err(|e| Stop::Lost(DisconnectReason::TransportError(e.to_string())))?;
        tracing::debug!(sid = %self.info.sid, "upgraded to websocket");
        if let Some(held) = self.held.take()
            && !held.is_empty()
            && !self.link.send(held)
        {
            return Err(Stop::Lost(DisconnectReason::TransportClose));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_open_packet() {
        let info = OpenInfo::parse(
            r#"{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#,
        )
        .unwrap();
        assert_eq!(info.sid, "lv_VI97HAXpY6yYWAAAC");
        assert_eq!(info.upgrades, vec!["websocket".to_owned()]);
        assert_eq!(info.ping_interval, Duration::from_secs(25));
        assert_eq!(info.ping_timeout, Duration::from_secs(20));
        assert_eq!(info.max_payload, 1_000_000);
        assert!(OpenInfo::parse("{}").is_err());
    }

    #[test]
    fn mirrored_heartbeat_allows_interval_plus_timeout() {
        // The rule the driver applies: restart on every ping; dead at interval + timeout.
        let t0 = now();
        let (i, t) = (Duration::from_millis(300), Duration::from_millis(200));
        let mut hb = Heartbeat::new(t0, i, t);
        assert_eq!(hb.poll(t0 + i), Some(HeartbeatAction::SendPing));
        assert_eq!(hb.poll(t0 + i + t - Duration::from_millis(1)), None);
        assert_eq!(hb.poll(t0 + i + t), Some(HeartbeatAction::TimedOut));
        // A ping at 450 ms restarts it: no timeout at 500 ms.
        let mut hb = Heartbeat::new(t0 + Duration::from_millis(450), i, t);
        assert_eq!(hb.poll(t0 + i + t), None);
    }
}
