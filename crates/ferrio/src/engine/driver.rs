//! One task per Engine.IO session. It owns the transport (long-polling requests or a
//! WebSocket), the heartbeat, the upgrade and the session's upper layer, and runs them in a
//! single poll loop: reads keep flowing while a write waits on a slow peer, and every
//! deadline fires from one timer.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use ferrio_proto::ProtocolError;
use ferrio_proto::engine::{self as eio, Data, PayloadEncoder};
use ferrio_proto::session::{Heartbeat, HeartbeatAction, TransportState};
use ferrio_proto::ws::{Message, Opcode};
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use super::connection::{CloseReason, Connection, Control, Frame, PollReply, PostReply, TransportKind};
use super::ws::{Messages, ReadEnd, WsConn};
use super::{Engine, SessionFactory, SessionHandler};

/// Reads from one WebSocket before the driver looks at its other duties again.
const READ_BUDGET: usize = 16;
/// Bytes encoded into a WebSocket's output buffer before it must drain (so the bound on a
/// connection's outgoing data stays the outbox's, not this buffer's).
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// Passes over all duties in one poll before yielding to other tasks.
const MAX_ROUNDS: usize = 16;
/// How long a closing polling session waits for the poll that carries the close packet.
const POLL_CLOSE_GRACE: Duration = Duration::from_secs(3);
/// How long a graceful WebSocket close may take to flush.
const WS_CLOSE_GRACE: Duration = Duration::from_secs(3);
/// The close code for Engine.IO garbage on a WebSocket: 1008 (policy violation), so that
/// 1002 keeps meaning the WebSocket framing itself was broken.
const ENGINE_IO_VIOLATION: u16 = 1008;

// Most sessions live on the WebSocket variant; boxing it would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Transport {
    Polling {
        parked: Option<oneshot::Sender<PollReply>>,
    },
    WebSocket(WsSide),
}

struct WsSide {
    ws: WsConn,
    /// Frames taken from the outbox, not yet encoded into the WebSocket's output buffer.
    pending: VecDeque<Frame>,
    /// The close frame to send when the session ends: `Some(None)` is a close frame without
    /// a status code (what the reference sends), `Some(Some(1009))` one with a code.
    close: Option<Option<u16>>,
    /// The batch being written: when its oldest frame was queued, its packets and bytes.
    batch: Option<(Option<Instant>, usize, usize)>,
}

impl WsSide {
    fn new(ws: WsConn) -> Self {
        Self {
            ws,
            pending: VecDeque::new(),
            close: None,
            batch: None,
        }
    }

    /// Encodes pending frames into the output buffer (up to the high-water mark) and writes.
    /// Ready(Ok) once everything pending is out.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        loop {
            while self.ws.buffered() < WRITE_HIGH_WATER {
                let Some(frame) = self.pending.pop_front() else {
                    break;
                };
                match &frame {
                    Frame::Text(t) => self.ws.queue(Opcode::Text, t.as_bytes()),
                    Frame::Binary(b) => self.ws.queue(Opcode::Binary, b),
                }
            }
            ready!(self.ws.poll_flush(cx))?;
            if self.pending.is_empty() {
                return Poll::Ready(Ok(()));
            }
        }
    }

    fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.ws.buffered() == 0
    }

    /// Gives back the memory an idle connection does not need.
    fn release_idle(&mut self) {
        if self.pending.is_empty() && self.pending.capacity() > 0 {
            self.pending = VecDeque::new();
        }
        self.ws.release_idle();
    }
}

enum Phase {
    Running,
    /// Flushing what was queued before a graceful close, until the deadline.
    Closing {
        reason: CloseReason,
        deadline: Instant,
    },
}

pub(crate) struct Driver<F: SessionFactory> {
    engine: Arc<Engine<F>>,
    conn: Arc<Connection>,
    handler: F::Handler,
    transport: Transport,
    state: TransportState,
    /// A WebSocket that is probing for an upgrade.
    probe: Option<WsSide>,
    heartbeat: Heartbeat,
    timer: Pin<Box<Sleep>>,
    phase: Phase,
    /// A polling POST already answered, whose packets are handled on the next pass.
    deferred_post: Option<Bytes>,
}

impl<F: SessionFactory> Driver<F> {
    pub(crate) fn polling(engine: Arc<Engine<F>>, conn: Arc<Connection>, handler: F::Handler) -> Self {
        Self::new(
            engine,
            conn,
            handler,
            Transport::Polling { parked: None },
            TransportState::Polling,
        )
    }

    pub(crate) fn websocket(
        engine: Arc<Engine<F>>,
        conn: Arc<Connection>,
        handler: F::Handler,
        ws: WsConn,
    ) -> Self {
        let side = WsSide::new(ws);
        Self::new(
            engine,
            conn,
            handler,
            Transport::WebSocket(side),
            TransportState::WebSocket,
        )
    }

    fn new(
        engine: Arc<Engine<F>>,
        conn: Arc<Connection>,
        handler: F::Handler,
        transport: Transport,
        state: TransportState,
    ) -> Self {
        crate::metrics::connection_opened(conn.transport());
        let now = Instant::now();
        let heartbeat = Heartbeat::new(
            now.into_std(),
            engine.config.ping_interval,
            engine.config.ping_timeout,
        );
        Self {
            engine,
            conn,
            handler,
            transport,
            state,
            probe: None,
            heartbeat,
            timer: Box::pin(tokio::time::sleep_until(now + Duration::from_secs(3600))),
            phase: Phase::Running,
            deferred_post: None,
        }
    }

    /// Queues a text packet of the engine itself (ping, noop, probe answers go elsewhere).
    fn send_control_packet(&self, text: &'static str) {
        let _ = self.conn.push(&[Frame::text(text)], false);
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut at: Option<Instant> = None;
        let mut consider = |d: Option<Instant>| {
            if let Some(d) = d {
                at = Some(at.map_or(d, |a| a.min(d)));
            }
        };
        match self.phase {
            Phase::Running => {
                consider(self.heartbeat.deadline().map(Instant::from_std));
                consider(
                    self.state
                        .upgrade_deadline(self.engine.config.upgrade_timeout)
                        .map(Instant::from_std),
                );
                consider(self.handler.deadline());
            }
            Phase::Closing { deadline, .. } => consider(Some(deadline)),
        }
        at
    }

    /// Runs timers; returns a close reason when one expired fatally.
    fn on_timers(&mut self, now: Instant) -> Result<(), CloseReason> {
        if let Phase::Closing { deadline, .. } = self.phase {
            if now >= deadline {
                return Err(CloseReason::TransportClose);
            }
            return Ok(());
        }
        match self.heartbeat.poll(now.into_std()) {
            Some(HeartbeatAction::SendPing) => self.send_control_packet("2"),
            Some(HeartbeatAction::TimedOut) => return Err(CloseReason::PingTimeout),
            None => {}
        }
        if let Some(deadline) = self.state.upgrade_deadline(self.engine.config.upgrade_timeout)
            && now.into_std() >= deadline
        {
            self.abort_probe();
        }
        if self.handler.deadline().is_some_and(|d| now >= d) {
            self.handler.on_deadline(&self.conn, now)?;
        }
        Ok(())
    }

    fn abort_probe(&mut self) {
        self.probe = None;
        self.state = self.state.on_probe_failed();
    }

    /// One Engine.IO packet from the peer, on the current transport.
    fn on_packet(&mut self, packet: eio::Packet<'_>) -> Result<(), CloseReason> {
        match packet {
            eio::Packet::Message(data) => self.handler.on_message(&self.conn, data),
            eio::Packet::Pong(_) => {
                self.heartbeat.on_pong(Instant::now().into_std());
                Ok(())
            }
            eio::Packet::Close => Err(CloseReason::TransportClose),
            // A v4 client never pings, and open/upgrade/noop mean nothing from a peer here.
            other @ (eio::Packet::Ping(_)
            | eio::Packet::Open(_)
            | eio::Packet::Upgrade
            | eio::Packet::Noop) => {
                Err(self.peer_violation(ProtocolError::UnexpectedPacket(other.packet_type())))
            }
        }
    }

    /// An Engine.IO violation by the peer: counted, and on a WebSocket answered with a close
    /// frame saying so. The session ends with "parse error", as in the reference.
    fn peer_violation(&mut self, e: ProtocolError) -> CloseReason {
        tracing::debug!(error = %e, "invalid engine.io input");
        crate::metrics::protocol_error(e.label());
        if let Transport::WebSocket(side) = &mut self.transport {
            side.close.get_or_insert(Some(ENGINE_IO_VIOLATION));
        }
        CloseReason::ParseError
    }

    fn on_control(&mut self, control: Control) -> Result<(), CloseReason> {
        match control {
            Control::Poll(reply) => self.on_poll(reply),
            Control::Post(body, reply) => {
                // The reference answers the POST before its packets reach the handlers, so
                // the client sees its write complete before any reply they cause: answer now,
                // handle the packets on the next pass, after the answer's task had its turn.
                let _ = reply.send(PostReply::Ok);
                if let Some(earlier) = self.deferred_post.replace(body) {
                    self.on_post(&earlier)?;
                }
                Ok(())
            }
            Control::WebSocket(ws) => {
                self.on_websocket(*ws);
                Ok(())
            }
            Control::Upper(command) => {
                self.handler.on_command(&self.conn, command);
                Ok(())
            }
            Control::Disconnect => {
                self.handler.on_server_disconnect(&self.conn);
                Err(CloseReason::ForcedClose)
            }
        }
    }

    fn on_poll(&mut self, reply: oneshot::Sender<PollReply>) -> Result<(), CloseReason> {
        let Transport::Polling { parked } = &mut self.transport else {
            let _ = reply.send(PollReply::BadRequest);
            return Ok(());
        };
        if let Some(first) = parked.take() {
            // Overlapping polls: the reference ends the first with a close packet, refuses the
            // second, and the session is over.
            crate::metrics::protocol_error("overlapping_poll");
            let _ = first.send(PollReply::Payload(b"1".to_vec()));
            let _ = reply.send(PollReply::Overlapping);
            return Err(CloseReason::TransportError);
        }
        if self.state.is_probed() && !self.conn.has_frames() {
            // Release the client's poll so it can finish the upgrade.
            let _ = reply.send(PollReply::Payload(b"6".to_vec()));
            return Ok(());
        }
        *parked = Some(reply);
        Ok(())
    }

    fn on_post(&mut self, body: &Bytes) -> Result<(), CloseReason> {
        crate::metrics::bytes_received(TransportKind::Polling, body.len());
        let text = std::str::from_utf8(body).map_err(|_| self.peer_violation(ProtocolError::InvalidUtf8))?;
        let packets = eio::decode_payload(text).map_err(|e| self.peer_violation(e))?;
        for packet in packets {
            self.on_packet(packet)?;
        }
        Ok(())
    }

    fn on_websocket(&mut self, ws: WsConn) {
        match self.state.on_websocket_opened(Instant::now().into_std()) {
            Ok(next) if matches!(self.transport, Transport::Polling { .. }) => {
                self.state = next;
                self.probe = Some(WsSide::new(ws));
            }
            // A second WebSocket for this session: closed at once, as the reference does.
            _ => drop(ws),
        }
    }

    /// Answers the parked poll with everything queued, if there is anything.
    fn serve_parked_poll(&mut self, cx: &mut Context<'_>) -> Result<bool, CloseReason> {
        let Transport::Polling { parked } = &mut self.transport else {
            return Ok(false);
        };
        let Some(reply) = parked.as_mut() else {
            return Ok(false);
        };
        if reply.poll_closed(cx).is_ready() {
            // The client gave up on its poll: the reference treats that as a dead transport.
            *parked = None;
            return Err(CloseReason::TransportClose);
        }
        let mut frames = VecDeque::new();
        let oldest = self.conn.take_frames(&mut frames);
        if frames.is_empty() {
            if self.state.is_probed() {
                if let Some(reply) = parked.take() {
                    let _ = reply.send(PollReply::Payload(b"6".to_vec()));
                }
                return Ok(true);
            }
            return Ok(false);
        }
        let body = encode_payload(&frames);
        crate::metrics::written(
            TransportKind::Polling,
            frames.len(),
            body.len(),
            oldest.map(|t| t.elapsed()),
        );
        if let Some(reply) = parked.take() {
            let _ = reply.send(PollReply::Payload(body));
        }
        Ok(true)
    }

    /// Drives the probing WebSocket through `2probe` / `3probe` / `5`.
    fn poll_probe(&mut self, cx: &mut Context<'_>) -> Result<bool, CloseReason> {
        let Some(probe) = self.probe.as_mut() else {
            return Ok(false);
        };
        let mut progressed = false;
        if !probe.is_idle() {
            match probe.poll_write(cx) {
                Poll::Ready(Err(_)) => {
                    self.abort_probe();
                    return Ok(true);
                }
                Poll::Ready(Ok(())) => progressed = true,
                Poll::Pending => {}
            }
        }
        let Some(probe) = self.probe.as_mut() else {
            return Ok(progressed);
        };
        let mut msgs = Messages::new();
        match probe.ws.poll_read(cx, &mut msgs) {
            Poll::Pending => return Ok(progressed),
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(ReadEnd::Protocol(e))) => {
                crate::metrics::protocol_error(e.label());
                self.close_probe(cx, Some(e.close_code()));
                return Ok(true);
            }
            Poll::Ready(Err(_)) => {
                self.abort_probe();
                return Ok(true);
            }
        }
        let mut msgs = msgs.into_iter();
        while let Some(msg) = msgs.next() {
            let Some(probe) = self.probe.as_mut() else { break };
            match msg {
                Message::Text(t) if &t[..] == b"2probe" => match self.state.on_probe() {
                    Ok(next) => {
                        self.state = next;
                        probe.pending.push_back(Frame::text("3probe"));
                        // The parked poll is released with a noop on the next pass.
                        self.conn.wake_self();
                    }
                    Err(_) => self.fail_probe(cx, ProtocolError::UnexpectedPacket(eio::PacketType::Ping)),
                },
                Message::Text(t) if &t[..] == b"5" => match self.state.on_upgrade() {
                    Ok(next) => {
                        self.state = next;
                        if let Some(probe) = self.probe.take() {
                            if let Transport::Polling { parked } = &mut self.transport
                                && let Some(reply) = parked.take()
                            {
                                let _ = reply.send(PollReply::Payload(b"6".to_vec()));
                            }
                            self.transport = Transport::WebSocket(probe);
                            self.conn.set_transport(TransportKind::WebSocket);
                            crate::metrics::connection_upgraded();
                        }
                        // Whatever followed `5` in the same read is ordinary traffic.
                        for msg in msgs.by_ref() {
                            self.on_ws_message(msg)?;
                        }
                    }
                    Err(_) => self.fail_probe(cx, ProtocolError::UnexpectedPacket(eio::PacketType::Upgrade)),
                },
                Message::Ping(p) => probe.ws.queue(Opcode::Pong, &p),
                Message::Pong(_) => {}
                // The peer gave up the upgrade: answer its close; the session stays on polling.
                Message::Close(code) => self.close_probe(cx, code),
                // Anything else during the probe aborts the upgrade.
                Message::Text(t) => {
                    let e = std::str::from_utf8(&t)
                        .map_err(|_| ProtocolError::InvalidUtf8)
                        .and_then(eio::decode_text)
                        .map_or_else(|e| e, |p| ProtocolError::UnexpectedPacket(p.packet_type()));
                    self.fail_probe(cx, e);
                }
                Message::Binary(_) => {
                    self.fail_probe(cx, ProtocolError::UnexpectedPacket(eio::PacketType::Message))
                }
            }
        }
        Ok(true)
    }

    /// The probing WebSocket broke the upgrade's rules: counted, and closed with a code
    /// saying so. The session stays on polling, as in the reference.
    fn fail_probe(&mut self, cx: &mut Context<'_>, e: ProtocolError) {
        tracing::debug!(error = %e, "upgrade probe failed");
        crate::metrics::protocol_error(e.label());
        self.close_probe(cx, Some(ENGINE_IO_VIOLATION));
    }

    /// Ends the probing WebSocket with a close frame (`code`, or an empty one), written only
    /// if the socket takes it at once: the session goes on over polling, so nothing waits on
    /// a peer that does not read.
    fn close_probe(&mut self, cx: &mut Context<'_>, code: Option<u16>) {
        if let Some(mut probe) = self.probe.take() {
            probe.ws.queue_close(code);
            if let Poll::Ready(Ok(())) = probe.ws.poll_flush(cx) {
                let _ = probe.ws.poll_shutdown(cx);
            }
        }
        self.abort_probe();
    }

    /// One message on the session's WebSocket.
    fn on_ws_message(&mut self, msg: Message) -> Result<(), CloseReason> {
        match msg {
            Message::Text(bytes) => {
                // The frame reader validated UTF-8 already.
                let text = std::str::from_utf8(&bytes)
                    .map_err(|_| self.peer_violation(ProtocolError::InvalidUtf8))?;
                let packet = eio::decode_text(text).map_err(|e| self.peer_violation(e))?;
                self.on_packet(packet)
            }
            Message::Binary(bytes) => self
                .handler
                .on_message(&self.conn, Data::Binary(std::borrow::Cow::Borrowed(&bytes))),
            Message::Ping(payload) => {
                if let Transport::WebSocket(side) = &mut self.transport {
                    side.ws.queue(Opcode::Pong, &payload);
                }
                Ok(())
            }
            Message::Pong(_) => Ok(()),
            Message::Close(code) => {
                // Answer the close handshake with the peer's own code (the frame reader lets
                // only codes that may be sent through).
                if let Transport::WebSocket(side) = &mut self.transport {
                    side.close = Some(code);
                }
                Err(CloseReason::TransportClose)
            }
        }
    }

    /// Reads what the WebSocket has, within the budget.
    fn poll_ws_read(&mut self, cx: &mut Context<'_>) -> Result<bool, CloseReason> {
        let mut progressed = false;
        // Small until a namespace CONNECT succeeded, then max_payload.
        let max_message = self.engine.config.max_payload_for(&self.conn);
        if let Transport::WebSocket(side) = &mut self.transport {
            side.ws.set_max_message(max_message);
        }
        for _ in 0..READ_BUDGET {
            let Transport::WebSocket(side) = &mut self.transport else {
                return Ok(progressed);
            };
            let mut msgs = Messages::new();
            match side.ws.poll_read(cx, &mut msgs) {
                Poll::Pending => return Ok(progressed),
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(end)) => {
                    if let ReadEnd::Protocol(e) = &end {
                        // Like the reference's `ws`: tell the peer why (1009 for a message
                        // over max_payload).
                        side.close = Some(Some(e.close_code()));
                        crate::metrics::protocol_error(e.label());
                    }
                    return Err(read_end_reason(&end));
                }
            }
            progressed = true;
            for msg in msgs {
                self.on_ws_message(msg)?;
            }
        }
        // Budget spent: come back after the other duties.
        cx.waker().wake_by_ref();
        Ok(progressed)
    }

    /// Moves queued frames to the WebSocket and writes, without blocking on a slow peer.
    fn poll_ws_write(&mut self, cx: &mut Context<'_>) -> Result<bool, CloseReason> {
        let Transport::WebSocket(side) = &mut self.transport else {
            return Ok(false);
        };
        if side.pending.is_empty() {
            let oldest = self.conn.take_frames(&mut side.pending);
            if !side.pending.is_empty() {
                let bytes = side.pending.iter().map(Frame::len).sum();
                side.batch = Some((oldest, side.pending.len(), bytes));
            }
        }
        if side.is_idle() {
            return Ok(false);
        }
        match side.poll_write(cx) {
            Poll::Ready(Ok(())) => {
                if let Some((oldest, packets, bytes)) = side.batch.take() {
                    crate::metrics::written(
                        TransportKind::WebSocket,
                        packets,
                        bytes,
                        oldest.map(|t| t.elapsed()),
                    );
                }
                Ok(true)
            }
            Poll::Ready(Err(e)) => Err(io_error_reason(&e)),
            Poll::Pending => Ok(false),
        }
    }

    fn idle_writable(&self) -> bool {
        match &self.transport {
            Transport::Polling { parked } => parked.is_some(),
            Transport::WebSocket(side) => side.is_idle(),
        }
    }

    fn poll_running(&mut self, cx: &mut Context<'_>) -> Result<(), CloseReason> {
        if let Some(body) = self.deferred_post.take() {
            self.on_post(&body)?;
        }
        for _ in 0..MAX_ROUNDS {
            if let Some(reason) = self.conn.close_requested() {
                return Err(reason);
            }
            let mut progressed = false;
            while let Some(control) = self.conn.take_control() {
                self.on_control(control)?;
                progressed = true;
            }
            if self.deferred_post.is_some() {
                // Yield so the POST's answer is written first; come straight back.
                cx.waker().wake_by_ref();
                return Ok(());
            }
            progressed |= self.poll_probe(cx)?;
            // Deadlines first: a session past its ping timeout must not be served one more poll.
            if self.poll_timer(cx)? {
                progressed = true;
            }
            progressed |= self.poll_ws_read(cx)?;
            progressed |= self.poll_ws_write(cx)?;
            progressed |= self.serve_parked_poll(cx)?;
            if !progressed {
                if let Transport::WebSocket(side) = &mut self.transport {
                    side.release_idle();
                }
                self.conn.set_writable(self.idle_writable());
                // A writer may have queued between our last look and the flag: look again.
                if self.conn.has_frames() || self.conn.has_controls() || self.conn.close_requested().is_some()
                {
                    continue;
                }
                return Ok(());
            }
        }
        // Still busy: yield to other tasks and come back.
        cx.waker().wake_by_ref();
        Ok(())
    }

    /// Arms the timer at the next deadline; returns whether a deadline was handled.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Result<bool, CloseReason> {
        let Some(at) = self.next_deadline() else {
            return Ok(false);
        };
        if self.timer.deadline() != at {
            self.timer.as_mut().reset(at);
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            self.on_timers(Instant::now())?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Starts closing: the upper layer learns first, then the transport is flushed (graceful
    /// reasons) or dropped.
    fn begin_close(&mut self, reason: CloseReason) {
        self.conn.close(reason);
        self.handler.on_close(&self.conn, reason);
        self.probe = None;
        let graceful = reason.is_graceful();
        match &mut self.transport {
            Transport::Polling { parked } => {
                let mut frames = VecDeque::new();
                if graceful {
                    self.conn.take_frames(&mut frames);
                }
                let flush_first = graceful && !frames.is_empty() && parked.is_some();
                if let Some(reply) = parked.take_if(|_| flush_first) {
                    // What was queued goes first; the close packet follows in the next poll.
                    // Clients dispatch Socket.IO packets a tick later than they handle an
                    // Engine.IO close, so sharing one response would lose the packets.
                    let _ = reply.send(PollReply::Payload(encode_payload(&frames)));
                    self.phase = Phase::Closing {
                        reason,
                        deadline: Instant::now() + POLL_CLOSE_GRACE,
                    };
                } else if let Some(reply) = parked.take() {
                    let body = if reason == CloseReason::TransportClose {
                        // The peer closed: its pending poll is released with a noop.
                        b"6".to_vec()
                    } else {
                        b"1".to_vec()
                    };
                    let _ = reply.send(PollReply::Payload(body));
                    self.phase = Phase::Closing {
                        reason,
                        deadline: Instant::now(),
                    };
                } else if graceful {
                    // Put back what was taken: it goes out with the next poll.
                    self.conn.requeue_front(frames);
                    // The close packet goes out with the next poll, if it comes soon.
                    self.phase = Phase::Closing {
                        reason,
                        deadline: Instant::now() + POLL_CLOSE_GRACE,
                    };
                } else {
                    self.phase = Phase::Closing {
                        reason,
                        deadline: Instant::now(),
                    };
                }
            }
            Transport::WebSocket(side) => {
                let deadline = if graceful {
                    self.conn.take_frames(&mut side.pending);
                    side.close.get_or_insert(None);
                    Instant::now() + WS_CLOSE_GRACE
                } else if side.close.is_some() {
                    // Only the close frame (a protocol error's code, or the answer to the
                    // peer's close) still goes out.
                    side.pending.clear();
                    Instant::now() + WS_CLOSE_GRACE
                } else {
                    side.pending.clear();
                    Instant::now()
                };
                self.phase = Phase::Closing { reason, deadline };
            }
        }
    }

    /// Closing: finish the graceful flush, or give up at the deadline.
    fn poll_closing(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Phase::Closing { deadline, .. } = self.phase else {
            return Poll::Ready(());
        };
        if Instant::now() >= deadline {
            return Poll::Ready(());
        }
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        match &mut self.transport {
            Transport::Polling { .. } => {
                // Answer the next poll with the close packet and finish.
                while let Some(control) = self.conn.take_control() {
                    match control {
                        Control::Poll(reply) => {
                            let mut frames = VecDeque::new();
                            self.conn.take_frames(&mut frames);
                            if frames.is_empty() {
                                let _ = reply.send(PollReply::Payload(b"1".to_vec()));
                                return Poll::Ready(());
                            }
                            let _ = reply.send(PollReply::Payload(encode_payload(&frames)));
                        }
                        Control::Post(_, reply) => {
                            let _ = reply.send(PostReply::Ok);
                        }
                        Control::WebSocket(_) | Control::Upper(_) | Control::Disconnect => {}
                    }
                }
                Poll::Pending
            }
            Transport::WebSocket(side) => {
                if ready!(side.poll_write(cx)).is_err() {
                    return Poll::Ready(());
                }
                if let Some(code) = side.close.take() {
                    side.ws.queue_close(code);
                    if ready!(side.ws.poll_flush(cx)).is_err() {
                        return Poll::Ready(());
                    }
                }
                // Then the TCP connection ends with the stream.
                let _ = ready!(side.ws.poll_shutdown(cx));
                Poll::Ready(())
            }
        }
    }

    fn finish(&mut self) {
        let reason = match self.phase {
            Phase::Closing { reason, .. } => reason,
            Phase::Running => CloseReason::TransportClose,
        };
        for control in self.conn.finish() {
            match control {
                // A poll that raced the end of the session learns that it ended: a noop when
                // the client itself closed (its poll was sent first), else a close packet.
                Control::Poll(reply) => {
                    let body = if reason == CloseReason::TransportClose {
                        "6"
                    } else {
                        "1"
                    };
                    let _ = reply.send(PollReply::Payload(body.as_bytes().to_vec()));
                }
                Control::Post(_, reply) => {
                    let _ = reply.send(PostReply::BadRequest);
                }
                Control::WebSocket(_) | Control::Upper(_) | Control::Disconnect => {}
            }
        }
        crate::metrics::connection_closed(self.conn.transport(), reason);
        self.engine.remove(&self.conn.sid);
    }
}

impl<F: SessionFactory> Future for Driver<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.conn.register_waker(cx.waker());
        if let Phase::Running = this.phase {
            match this.poll_running(cx) {
                Ok(()) => return Poll::Pending,
                Err(reason) => this.begin_close(reason),
            }
        }
        ready!(this.poll_closing(cx));
        this.finish();
        Poll::Ready(())
    }
}

/// The reference reports a peer that went away (with or without a close frame) as a
/// transport close; only a broken stream is a transport error.
fn read_end_reason(end: &ReadEnd) -> CloseReason {
    match end {
        ReadEnd::Eof => CloseReason::TransportClose,
        ReadEnd::Io(e) => io_error_reason(e),
        ReadEnd::Protocol(_) => CloseReason::TransportError,
    }
}

fn io_error_reason(e: &std::io::Error) -> CloseReason {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionReset
        | ErrorKind::BrokenPipe
        | ErrorKind::UnexpectedEof
        | ErrorKind::ConnectionAborted => CloseReason::TransportClose,
        _ => CloseReason::TransportError,
    }
}

fn encode_payload(frames: &VecDeque<Frame>) -> Vec<u8> {
    let capacity = frames.iter().map(|f| f.len() + 1).sum::<usize>();
    let mut enc = PayloadEncoder::with_capacity(capacity);
    for frame in frames {
        match frame {
            Frame::Text(t) => enc.push_text(t.as_str()),
            Frame::Binary(b) => enc.push_binary(b),
        }
    }
    enc.finish()
}
