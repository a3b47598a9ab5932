//! The state an Engine.IO session shares between its driver task and everyone who writes to
//! it: the bounded outbox of encoded frames, the control mailbox, and the close request.
//!
//! Writers (socket emits, broadcasts, HTTP handlers) take the lock only to append and then
//! wake the driver; all IO happens in the driver.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::WsStream;
use crate::Sid;

/// One Engine.IO message ready for the wire, shared by every recipient of a broadcast.
#[derive(Debug, Clone)]
pub(crate) enum Frame {
    /// A complete text packet (`4...`, `2`, `3probe`, `6`, ...).
    Text(Utf8Bytes),
    /// A binary message (an attachment).
    Binary(Bytes),
}

impl Frame {
    pub(crate) fn len(&self) -> usize {
        match self {
            Frame::Text(t) => t.len(),
            Frame::Binary(b) => b.len(),
        }
    }

    pub(crate) fn text(s: impl Into<Utf8Bytes>) -> Self {
        Frame::Text(s.into())
    }
}

/// Why a session ended, as the reference names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The transport failed (a read or write error, an aborted poll, an oversize message).
    TransportError,
    /// The peer closed the transport (or sent an Engine.IO close packet).
    TransportClose,
    /// The server closed the connection on purpose (`disconnect(true)`, connect timeout).
    ForcedClose,
    /// No pong within `ping_timeout`.
    PingTimeout,
    /// The peer sent something that does not decode, or broke the protocol's state rules.
    ParseError,
    /// The peer broke the Socket.IO state rules (a packet for a namespace it has not joined, a
    /// second CONNECT): the server closed the connection.
    ForcedServerClose,
    /// The whole server is closing.
    ServerShuttingDown,
    /// The connection could not keep up with what it was sent and its queue overflowed.
    SlowConsumer,
}

impl CloseReason {
    /// The reason's text, as the reference reports it to disconnect handlers.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::TransportError => "transport error",
            Self::TransportClose => "transport close",
            Self::ForcedClose => "forced close",
            Self::PingTimeout => "ping timeout",
            Self::ParseError => "parse error",
            Self::ForcedServerClose => "forced server close",
            Self::ServerShuttingDown => "server shutting down",
            Self::SlowConsumer => "slow consumer",
        }
    }

    /// Whether the peer is told goodbye (queued frames flushed, then a close packet) rather
    /// than dropped.
    pub(crate) fn is_graceful(&self) -> bool {
        matches!(
            self,
            Self::ForcedClose | Self::ForcedServerClose | Self::ServerShuttingDown
        )
    }
}

/// What a long-poll GET is answered with.
#[derive(Debug)]
pub(crate) enum PollReply {
    /// 200 with this payload body.
    Payload(Vec<u8>),
    /// 400 `{"code":3,"message":"Bad request"}` (the session moved to WebSocket).
    BadRequest,
    /// 400 with an empty body: a poll overlapping another, as the reference answers it.
    Overlapping,
}

/// What a polling POST is answered with.
#[derive(Debug)]
pub(crate) enum PostReply {
    Ok,
    BadRequest,
}

/// Requests to the driver from outside its task.
pub(crate) enum Control {
    /// A long-poll GET waiting for data.
    Poll(oneshot::Sender<PollReply>),
    /// A polling POST body (size already checked).
    Post(Bytes, oneshot::Sender<PostReply>),
    /// A WebSocket opened for this session (an upgrade probe).
    WebSocket(Box<WsStream>),
    /// A command for the upper layer, run in the driver's task, in order with the packets
    /// (Socket.IO: a namespace's connect hook finished). Opaque to the engine.
    Upper(UpperCommand),
    /// The server ends the connection: every namespace is told (DISCONNECT), then it closes.
    Disconnect,
}

/// What the upper layer posts to itself through [`Control::Upper`].
pub(crate) type UpperCommand = Box<dyn std::any::Any + Send>;

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Control::Poll(_) => f.write_str("Poll"),
            Control::Post(b, _) => write!(f, "Post({} bytes)", b.len()),
            Control::WebSocket(_) => f.write_str("WebSocket"),
            Control::Upper(_) => f.write_str("Upper"),
            Control::Disconnect => f.write_str("Disconnect"),
        }
    }
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The connection is closed or closing.
    #[error("the connection is closed")]
    Closed,
    /// A volatile packet was dropped because the connection was not ready for it.
    #[error("volatile packet dropped")]
    Dropped,
    /// The outgoing queue overflowed; the connection is being closed as a slow consumer.
    #[error("outgoing queue full: slow consumer disconnected")]
    SlowConsumer,
    /// The event name is reserved (`connect`, `disconnect`, ...); clients would drop the
    /// connection on receiving it.
    #[error("reserved event name")]
    ReservedEvent,
}

/// Which transport a session uses, readable without the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Polling,
    WebSocket,
}

#[derive(Debug, Default)]
struct Shared {
    frames: VecDeque<Frame>,
    queued_bytes: usize,
    /// When the oldest queued frame was queued (for the delivery latency metric).
    oldest: Option<tokio::time::Instant>,
    controls: VecDeque<Control>,
    close: Option<CloseReason>,
    /// The driver is idle with nothing queued and a transport ready to write at once.
    writable: bool,
    /// The driver has finished; nothing is accepted any more.
    closed: bool,
}

/// An Engine.IO session's shared half.
#[derive(Debug)]
pub(crate) struct Connection {
    pub sid: Sid,
    /// A namespace CONNECT has succeeded: the peer may send messages up to `max_payload`.
    established: std::sync::atomic::AtomicBool,
    /// A polling POST is being read or handled (the reference allows one at a time).
    post_in_flight: std::sync::atomic::AtomicBool,
    shared: Mutex<Shared>,
    waker: AtomicWaker,
    /// Wakes the requests still in flight when the session starts closing, so none outlives it.
    finished: tokio::sync::Notify,
    transport: AtomicU8,
    max_packets: usize,
    max_bytes: usize,
}

impl Connection {
    pub(crate) fn new(sid: Sid, transport: TransportKind, max_packets: usize, max_bytes: usize) -> Self {
        Self {
            sid,
            post_in_flight: std::sync::atomic::AtomicBool::new(false),
            established: std::sync::atomic::AtomicBool::new(false),
            shared: Mutex::new(Shared::default()),
            waker: AtomicWaker::new(),
            finished: tokio::sync::Notify::new(),
            transport: AtomicU8::new(transport as u8),
            max_packets,
            max_bytes,
        }
    }

    /// The session's first namespace CONNECT succeeded.
    pub(crate) fn set_established(&self) {
        self.established.store(true, Ordering::Release);
    }

    pub(crate) fn is_established(&self) -> bool {
        self.established.load(Ordering::Acquire)
    }

    /// Claims the session's one POST slot; false when another POST holds it.
    pub(crate) fn begin_post(&self) -> bool {
        !self.post_in_flight.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn end_post(&self) {
        self.post_in_flight.store(false, Ordering::Release);
    }

    /// Completes once the session is closing or has finished (at once if it is).
    pub(crate) async fn ending(&self) {
        loop {
            let notified = self.finished.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let s = self.shared.lock();
                if s.closed || s.close.is_some() {
                    return;
                }
            }
            notified.await;
        }
    }

    pub(crate) fn transport(&self) -> TransportKind {
        if self.transport.load(Ordering::Relaxed) == TransportKind::WebSocket as u8 {
            TransportKind::WebSocket
        } else {
            TransportKind::Polling
        }
    }

    pub(crate) fn set_transport(&self, kind: TransportKind) {
        self.transport.store(kind as u8, Ordering::Relaxed);
    }

    /// Queues the frames of one packet (all or none, so a packet's attachments never
    /// interleave with another packet).
    pub(crate) fn push(&self, frames: &[Frame], volatile: bool) -> Result<(), SendError> {
        let bytes: usize = frames.iter().map(Frame::len).sum();
        {
            let mut s = self.shared.lock();
            if s.closed || s.close.is_some() {
                return Err(SendError::Closed);
            }
            if volatile && !s.writable {
                crate::metrics::volatile_dropped();
                return Err(SendError::Dropped);
            }
            // The bound is on backlog: one packet larger than the bound still goes to an idle
            // connection.
            let backlog = !s.frames.is_empty();
            if backlog
                && (s.frames.len() + frames.len() > self.max_packets
                    || s.queued_bytes + bytes > self.max_bytes)
            {
                if volatile {
                    crate::metrics::volatile_dropped();
                    return Err(SendError::Dropped);
                }
                s.close = Some(CloseReason::SlowConsumer);
                drop(s);
                self.waker.wake();
                self.finished.notify_waiters();
                return Err(SendError::SlowConsumer);
            }
            if s.frames.is_empty() {
                s.oldest = Some(tokio::time::Instant::now());
            }
            s.frames.extend(frames.iter().cloned());
            s.queued_bytes += bytes;
            s.writable = false;
        }
        self.waker.wake();
        Ok(())
    }

    /// Sends a request to the driver. Returns it back if the driver is gone.
    pub(crate) fn control(&self, control: Control) -> Result<(), Control> {
        {
            let mut s = self.shared.lock();
            if s.closed {
                return Err(control);
            }
            s.controls.push_back(control);
        }
        self.waker.wake();
        Ok(())
    }

    /// Asks the driver to close the session (the first reason wins).
    pub(crate) fn close(&self, reason: CloseReason) {
        {
            let mut s = self.shared.lock();
            if s.closed || s.close.is_some() {
                return;
            }
            s.close = Some(reason);
        }
        self.waker.wake();
        self.finished.notify_waiters();
    }

    // ---- the driver's side ----

    pub(crate) fn register_waker(&self, waker: &std::task::Waker) {
        self.waker.register(waker);
    }

    /// Moves every queued frame into `out`; returns when the oldest of them was queued.
    pub(crate) fn take_frames(&self, out: &mut VecDeque<Frame>) -> Option<tokio::time::Instant> {
        let mut s = self.shared.lock();
        let oldest = s.oldest.take();
        if out.is_empty() {
            std::mem::swap(out, &mut s.frames);
        } else {
            out.append(&mut s.frames);
        }
        s.queued_bytes = 0;
        oldest
    }

    /// Puts frames taken by [`Connection::take_frames`] back at the head of the queue.
    pub(crate) fn requeue_front(&self, mut frames: VecDeque<Frame>) {
        let mut s = self.shared.lock();
        s.queued_bytes += frames.iter().map(Frame::len).sum::<usize>();
        frames.append(&mut s.frames);
        s.frames = frames;
    }

    pub(crate) fn has_frames(&self) -> bool {
        !self.shared.lock().frames.is_empty()
    }

    pub(crate) fn has_controls(&self) -> bool {
        !self.shared.lock().controls.is_empty()
    }

    /// Makes the driver run another pass.
    pub(crate) fn wake_self(&self) {
        self.waker.wake();
    }

    pub(crate) fn take_control(&self) -> Option<Control> {
        self.shared.lock().controls.pop_front()
    }

    pub(crate) fn close_requested(&self) -> Option<CloseReason> {
        self.shared.lock().close
    }

    /// The driver says whether it could write a packet immediately (volatile packets are
    /// dropped otherwise). Only set when the queue is empty.
    pub(crate) fn set_writable(&self, writable: bool) {
        let mut s = self.shared.lock();
        s.writable = writable && s.frames.is_empty();
    }

    /// Marks the session finished and returns what was still queued (controls included) so
    /// the caller can answer pending requests.
    pub(crate) fn finish(&self) -> VecDeque<Control> {
        let mut s = self.shared.lock();
        s.closed = true;
        s.close.get_or_insert(CloseReason::TransportClose);
        s.frames = VecDeque::new();
        s.queued_bytes = 0;
        let controls = std::mem::take(&mut s.controls);
        drop(s);
        self.finished.notify_waiters();
        controls
    }
}
