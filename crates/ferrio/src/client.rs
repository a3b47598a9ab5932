//! The Socket.IO layer of one connection: decodes packets (reassembling binary ones),
//! enforces the namespace state rules of the reference, connects namespaces through their
//! hooks and dispatches events to sockets. Runs inside the connection's driver task.

use std::sync::Arc;
use std::time::Duration;

use std::panic::AssertUnwindSafe;

use bytes::Bytes;
use futures_util::FutureExt;
use serde_json::{Value, json};
use smallvec::SmallVec;
use tokio::time::Instant;

use ferrio_proto::engine::Data;
use ferrio_proto::socket::{Decoder, Packet, PacketType};

use crate::adapter::EncodedPacket;
use crate::engine::{CloseReason, Connection, Control, SessionHandler, UpperCommand};
use crate::socket::ConnectOutcome;

/// A namespace's connect hook finished: posted to the session's own task
/// ([`Control::Upper`]) so it is applied in order with the packets.
struct NamespaceConnect {
    nsp: Arc<str>,
    auth: Value,
    outcome: ConnectOutcome,
    /// A recovered session waiting for the hook's verdict.
    restored: Option<Claim>,
}
use crate::io::{IoShared, JoinRefusal, NamespaceTarget};
use crate::namespace::ConnectRequest;
use crate::recovery::{Claim, Restored};
use crate::socket::{Accepted, DisconnectReason, Identity};
use crate::{AckSender, Event, Handshake, Namespace, Payload, Room, Sid, Socket};

enum Slot {
    /// The connect hook is running; any other packet for this namespace breaks the rules.
    Connecting,
    Connected(Socket),
}

pub(crate) struct Client {
    io: Arc<IoShared>,
    handshake: Arc<Handshake>,
    decoder: Decoder,
    nsps: SmallVec<[(Arc<str>, Slot); 1]>,
    /// A session must connect a namespace before this.
    connect_deadline: Option<Instant>,
    /// A binary packet must receive all its attachments before this.
    attachment_deadline: Option<Instant>,
    attachment_timeout: Duration,
    /// A namespace CONNECT has succeeded on this connection.
    established: bool,
}

impl Client {
    pub(crate) fn new(io: Arc<IoShared>, handshake: Arc<Handshake>) -> Self {
        let config = &io.config;
        Self {
            decoder: Decoder::new(config.max_attachments),
            connect_deadline: Some(Instant::now() + config.connect_timeout),
            attachment_deadline: None,
            attachment_timeout: config.ping_timeout,
            established: false,
            io,
            handshake,
            nsps: SmallVec::new(),
        }
    }

    fn slot(&self, nsp: &str) -> Option<usize> {
        self.nsps.iter().position(|(n, _)| n.as_ref() == nsp)
    }

    fn on_packet(&mut self, conn: &Arc<Connection>, packet: Packet) -> Result<(), CloseReason> {
        // Sockets the server disconnected meanwhile no longer hold their namespace: the client
        // may connect to it again.
        self.nsps
            .retain(|(_, slot)| !matches!(slot, Slot::Connected(s) if !s.connected()));
        let slot = self.slot(&packet.nsp);
        match (packet.kind, slot) {
            (PacketType::Connect, None) => {
                self.connect(conn, packet);
                Ok(())
            }
            // A second CONNECT, a packet for a namespace not (yet) connected, or a
            // CONNECT_ERROR from a client: the reference closes the connection.
            (PacketType::Connect | PacketType::ConnectError, _) | (_, None) => {
                crate::metrics::protocol_error(match packet.kind {
                    PacketType::Connect => "duplicate_connect",
                    PacketType::ConnectError => "client_connect_error",
                    _ => "namespace_not_connected",
                });
                Err(CloseReason::ForcedServerClose)
            }
            (_, Some(i)) => {
                let Slot::Connected(socket) = &self.nsps[i].1 else {
                    return Err(CloseReason::ForcedServerClose);
                };
                let socket = socket.clone();
                self.on_socket_packet(&socket, packet, i);
                Ok(())
            }
        }
    }

    fn on_socket_packet(&mut self, socket: &Socket, packet: Packet, slot: usize) {
        match packet.kind {
            PacketType::Event | PacketType::BinaryEvent => {
                crate::metrics::event_received();
                let Some(name) = packet.event_name().map(|n| n.into_owned()) else {
                    // `42` with no data is an event without a name: nothing to dispatch.
                    return;
                };
                let mut args = match packet.data {
                    Some(Value::Array(args)) => args,
                    _ => Vec::new(),
                };
                if !args.is_empty() {
                    args.remove(0);
                }
                let event = Event::new(
                    name,
                    Payload {
                        args,
                        attachments: packet.attachments,
                    },
                    packet.id.map(|id| AckSender {
                        socket: socket.clone(),
                        id,
                    }),
                );
                socket.ns().dispatch(socket, event);
            }
            PacketType::Ack | PacketType::BinaryAck => {
                if let Some(id) = packet.id {
                    let args = match packet.data {
                        Some(Value::Array(args)) => args,
                        _ => Vec::new(),
                    };
                    socket.on_ack(
                        id,
                        Payload {
                            args,
                            attachments: packet.attachments,
                        },
                    );
                }
            }
            PacketType::Disconnect => {
                self.nsps.remove(slot);
                socket.on_disconnect(DisconnectReason::ClientNamespaceDisconnect);
            }
            PacketType::Connect | PacketType::ConnectError => {}
        }
    }

    fn connect(&mut self, conn: &Arc<Connection>, packet: Packet) {
        let auth = packet.data.unwrap_or_else(|| json!({}));
        // Nothing is created here: a namespace made on demand exists only once a CONNECT to
        // it has passed its hook.
        let Some(target) = self.io.find_namespace(&packet.nsp) else {
            let reply = Packet::connect_error(packet.nsp, json!({ "message": "Invalid namespace" }));
            let _ = conn.push(EncodedPacket::new(reply).frames(), false);
            return;
        };
        let nsp: Arc<str> = Arc::from(packet.nsp);
        // A client that had a session sends its private id and the offset of the last
        // packet it got.
        let existing = match &target {
            NamespaceTarget::Existing(ns) => Some(ns.clone()),
            NamespaceTarget::OnDemand(_) => None,
        };
        let recovery = existing.as_ref().and_then(|ns| ns.recovery());
        let asks = |key: &str| auth.get(key).and_then(Value::as_str).map(str::to_owned);
        let asked = recovery.and_then(|_| Some((asks("pid")?, asks("offset")?)));
        let hook = target.handlers().connect_hook.clone();
        // A shared log (Redis streams) is asked asynchronously, like a connect hook.
        if let (Some(ns), Some((pid, offset))) = (&existing, &asked)
            && let Some(log) = recovery.and_then(|r| r.log()).cloned()
        {
            self.nsps.push((nsp.clone(), Slot::Connecting));
            let request = ConnectRequest {
                nsp: nsp.clone(),
                auth: auth.clone(),
                handshake: self.handshake.clone(),
            };
            let (ns, pid, offset, conn) = (ns.clone(), pid.clone(), offset.clone(), conn.clone());
            tokio::spawn(async move {
                let claim = restore_logged(&ns, log, pid, offset).await;
                let skip_hook =
                    claim.is_some() && ns.recovery().is_some_and(|r| r.config().skip_connect_hook);
                let outcome = match hook {
                    Some(hook) if !skip_hook => run_hook(&nsp, hook(request)).await,
                    _ => Ok(Accepted::default()),
                };
                let _ = conn.control(Control::Upper(Box::new(NamespaceConnect {
                    nsp,
                    auth,
                    outcome,
                    restored: claim,
                })));
            });
            return;
        }
        // A client that had a session sends its private id and the offset of the last
        // packet it got.
        let restored = recovery.zip(asked).and_then(|(recovery, (pid, offset))| {
            recovery
                .claim(&pid, &offset)
                .map_err(|failure| crate::metrics::recovery_failed(&nsp, failure.label()))
                .ok()
        });
        let skip_hook = restored.is_some() && recovery.is_some_and(|r| r.config().skip_connect_hook);
        match hook {
            Some(hook) if !skip_hook => {
                self.nsps.push((nsp.clone(), Slot::Connecting));
                let request = ConnectRequest {
                    nsp: nsp.clone(),
                    auth: auth.clone(),
                    handshake: self.handshake.clone(),
                };
                let conn = conn.clone();
                tokio::spawn(async move {
                    let outcome = run_hook(&nsp, hook(request)).await;
                    // The session may be gone meanwhile; then nothing is left to accept.
                    let _ = conn.control(Control::Upper(Box::new(NamespaceConnect {
                        nsp,
                        auth,
                        outcome,
                        restored,
                    })));
                });
            }
            _ => self.join(conn, nsp, auth, Accepted::default(), restored),
        }
    }

    /// Joins an accepted CONNECT to its namespace, creating it if a pattern allows and the
    /// cap of namespaces made on demand is not reached.
    fn join(
        &mut self,
        conn: &Arc<Connection>,
        nsp: Arc<str>,
        auth: Value,
        accepted: Accepted,
        restored: Option<Claim>,
    ) {
        match self.io.join_namespace(&nsp) {
            Ok(joining) => {
                // Registered before `joining` lets the namespace be removed again.
                self.finish_connect(conn, joining.namespace().clone(), auth, accepted, restored);
            }
            Err(refusal) => {
                if let Some(i) = self.slot(&nsp) {
                    self.nsps.remove(i);
                }
                let message = match refusal {
                    JoinRefusal::Invalid => "Invalid namespace",
                    JoinRefusal::TooMany => {
                        tracing::warn!("a CONNECT refused: max_dynamic_namespaces reached");
                        "too many namespaces"
                    }
                };
                let reply = Packet::connect_error(nsp.as_ref(), json!({ "message": message }));
                let _ = conn.push(EncodedPacket::new(reply).frames(), false);
            }
        }
    }

    fn finish_connect(
        &mut self,
        conn: &Arc<Connection>,
        ns: Namespace,
        auth: Value,
        accepted: Accepted,
        claim: Option<Claim>,
    ) {
        // Half the connection's queue at most may go to missed packets: the CONNECT answer and
        // what follows must fit too.
        let room_for_missed = self.io.config.max_queued_bytes / 2;
        let attached = match (claim, ns.recovery()) {
            // The missed packets are collected, and the socket put in its rooms, while no
            // packet of the namespace can be delivered: none is missed or doubled.
            (Some(claim), Some(recovery)) => recovery.resume(claim, |result| {
                let result = result.and_then(|restored| {
                    let bytes: usize = restored.missed.iter().map(EncodedPacket::wire_len).sum();
                    if bytes > room_for_missed {
                        Err(crate::recovery::Failure::TooManyMissed)
                    } else {
                        Ok(restored)
                    }
                });
                let failure = result.as_ref().err().map(|f| f.label());
                let restored = result.ok();
                let was_restore = restored.is_some();
                let attached = self.attach(conn, &ns, auth, accepted, restored);
                (attached, Some((was_restore, failure)))
            }),
            _ => (self.attach(conn, &ns, auth, accepted, None), None),
        };
        let ((socket, rejoined, answered, first), attempt) = attached;
        match attempt {
            Some((true, _)) if answered => crate::metrics::recovered(ns.name()),
            Some((true, _)) => crate::metrics::recovery_failed(ns.name(), "connection_gone"),
            Some((false, Some(label))) => crate::metrics::recovery_failed(ns.name(), label),
            _ => {}
        }
        // Observers are the application's code: never under the recovery lock.
        if first {
            for observer in &self.io.observers {
                observer.on_established(&self.handshake);
            }
        }
        if !answered {
            socket.on_disconnect(DisconnectReason::Transport(CloseReason::TransportClose));
            return;
        }
        crate::metrics::socket_connected(ns.metrics_label());
        tracing::debug!(ns = ns.name(), recovered = socket.recovered(), "socket connected");
        // A shared log holds the session from the start: it outlives this node.
        socket.session_changed();
        ns.start_session_refresh();
        ns.run_connect_handlers(&socket);
        for room in &rejoined {
            ns.run_room_handlers(&socket, room, crate::RoomChange::Joined);
        }
    }

    /// Creates the socket, registers it, restores its rooms and missed packets, and answers
    /// the CONNECT (false when the connection went away meanwhile); says whether this is the
    /// connection's first namespace. Runs under the recovery store's lock when restoring:
    /// nothing here may record, persist or run application code.
    fn attach(
        &mut self,
        conn: &Arc<Connection>,
        ns: &Namespace,
        auth: Value,
        accepted: Accepted,
        restored: Option<Restored>,
    ) -> (Socket, SmallVec<[Room; 1]>, bool, bool) {
        let identity = match &restored {
            Some(r) => Identity {
                sid: r.sid,
                pid: Some(r.pid),
                recovered: true,
            },
            None => Identity {
                sid: Sid::random(),
                pid: ns.recovery().map(|_| Sid::random()),
                recovered: false,
            },
        };
        let socket = Socket::new(
            ns.clone(),
            conn.clone(),
            self.handshake.clone(),
            auth,
            accepted,
            identity,
        );
        ns.register(&socket);
        let nsp = ns.name_arc().clone();
        match self.slot(&nsp) {
            Some(i) => self.nsps[i].1 = Slot::Connected(socket.clone()),
            None => self.nsps.push((nsp, Slot::Connected(socket.clone()))),
        }
        self.connect_deadline = None;
        let first = !std::mem::replace(&mut self.established, true);
        if first {
            conn.set_established();
        }
        // The restored rooms are the socket's at once (missed and new broadcasts reach it), and
        // reported to room watchers after the connect handlers, as joins made then.
        let mut rejoined = SmallVec::<[Room; 1]>::new();
        if let Some(restored) = restored {
            socket.set_data(restored.data);
            rejoined = ns
                .adapter()
                .add_all(socket.id(), restored.rooms.into_iter().collect());
            // As the reference does: the missed packets go out before the CONNECT answer.
            for packet in &restored.missed {
                let _ = conn.push(packet.frames(), false);
            }
        }
        let answer = match socket.pid() {
            Some(pid) => json!({ "sid": socket.id().as_str(), "pid": pid.as_str() }),
            None => json!({ "sid": socket.id().as_str() }),
        };
        let reply = Packet::connect(ns.name(), Some(answer));
        let answered = conn.push(EncodedPacket::new(reply).frames(), false).is_ok();
        (socket, rejoined, answered, first)
    }
}

/// Runs a connect hook; one that panics refuses the client instead of leaving it waiting.
async fn run_hook(
    nsp: &Arc<str>,
    hook: crate::adapter::BoxFuture<'static, crate::ConnectOutcome>,
) -> crate::ConnectOutcome {
    AssertUnwindSafe(hook).catch_unwind().await.unwrap_or_else(|_| {
        tracing::error!(nsp = ?nsp, "connect hook panicked");
        Err(crate::ConnectError::new("server error"))
    })
}

/// Takes a session back from a shared log, with what it missed; `None` (counted and logged)
/// when it cannot be.
async fn restore_logged(
    ns: &Namespace,
    log: Arc<dyn crate::SessionLog>,
    pid: String,
    offset: String,
) -> Option<Claim> {
    let recovery = ns.recovery()?;
    let claim = match pid.parse::<Sid>() {
        Err(_) => Err(crate::recovery::Failure::UnknownSession),
        Ok(pid) => {
            let cached = recovery.cache_holds(&offset);
            let max = recovery.config().max_missed_packets;
            match log.restore(pid, offset.clone(), cached, max).await {
                Ok(session) => recovery.claim_logged(pid, &offset, session),
                Err(refusal) => Err(refusal.into()),
            }
        }
    };
    claim
        .map_err(|failure| crate::metrics::recovery_failed(ns.name(), failure.label()))
        .ok()
}

impl SessionHandler for Client {
    fn on_message(&mut self, conn: &Arc<Connection>, data: Data<'_>) -> Result<(), CloseReason> {
        let decoded = match data {
            Data::Text(text) => self.decoder.decode_text(text),
            Data::Binary(bytes) => self.decoder.decode_binary(Bytes::copy_from_slice(&bytes)),
        };
        match decoded {
            Err(e) => {
                // The reference closes the connection itself on a decode error: "forced close".
                tracing::debug!(error = %e, "invalid socket.io packet");
                crate::metrics::protocol_error(e.label());
                Err(CloseReason::ForcedClose)
            }
            Ok(None) => {
                if self.attachment_deadline.is_none() {
                    self.attachment_deadline = Some(Instant::now() + self.attachment_timeout);
                }
                Ok(())
            }
            Ok(Some(packet)) => {
                self.attachment_deadline = None;
                self.on_packet(conn, packet)
            }
        }
    }

    fn on_command(&mut self, conn: &Arc<Connection>, command: UpperCommand) {
        let Ok(result) = command.downcast::<NamespaceConnect>() else {
            return;
        };
        let result = *result;
        let Some(i) = self.slot(&result.nsp) else { return };
        if !matches!(self.nsps[i].1, Slot::Connecting) {
            return;
        }
        match result.outcome {
            Ok(accepted) => self.join(conn, result.nsp, result.auth, accepted, result.restored),
            Err(refusal) => {
                self.nsps.remove(i);
                let reply = Packet::connect_error(result.nsp.as_ref(), refusal.to_json());
                let _ = conn.push(EncodedPacket::new(reply).frames(), false);
            }
        }
    }

    fn on_server_disconnect(&mut self, _conn: &Arc<Connection>) {
        for (_, slot) in self.nsps.drain(..) {
            if let Slot::Connected(socket) = slot {
                socket.disconnect(false);
            }
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match (self.connect_deadline, self.attachment_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_deadline(&mut self, _conn: &Arc<Connection>, now: Instant) -> Result<(), CloseReason> {
        if self.attachment_deadline.is_some_and(|d| now >= d) {
            tracing::debug!("binary packet never completed");
            return Err(CloseReason::ForcedClose);
        }
        if self.connect_deadline.is_some_and(|d| now >= d) {
            self.connect_deadline = None;
            if !self.nsps.iter().any(|(_, s)| matches!(s, Slot::Connected(_))) {
                tracing::debug!("no namespace connected in time");
                return Err(CloseReason::ForcedClose);
            }
        }
        Ok(())
    }

    fn on_close(&mut self, _conn: &Arc<Connection>, reason: CloseReason) {
        for observer in &self.io.observers {
            observer.on_close(&self.handshake, reason);
        }
        for (_, slot) in self.nsps.drain(..) {
            if let Slot::Connected(socket) = slot {
                socket.on_disconnect(DisconnectReason::Transport(reason));
            }
        }
    }
}
