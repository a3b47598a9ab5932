//! Selecting recipients (`to`, `except`, `local`, `volatile`, `timeout`) and acting on them:
//! emit, emit with acknowledgements, fetch, join, leave, disconnect.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::adapter::{AdapterError, BoxFuture, BroadcastOptions, IntoRooms, Room, SocketInfo};
use crate::{Namespace, Payload, Sid};

/// A selection of sockets in one namespace. Built by [`Namespace::broadcast`],
/// [`Namespace::to`], [`crate::Socket::to`] and [`crate::Socket::broadcast`].
#[derive(Debug, Clone)]
pub struct BroadcastOperator {
    ns: Namespace,
    opts: BroadcastOptions,
}

/// A confirmed emit that the cluster may not have received.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error} (delivered to {local} local sockets)")]
pub struct EmitError {
    /// Why the other nodes may not have it.
    pub error: AdapterError,
    /// How many sockets of this node it was queued for all the same.
    pub local: usize,
}

/// What [`BroadcastOperator::emit_confirmed`] returns: the emit is already made; this
/// resolves once the cluster has it, or with why it may not.
#[must_use = "the emit is made either way; await this to know whether the cluster has it"]
pub struct Confirmation(BoxFuture<'static, Result<usize, EmitError>>);

impl std::fmt::Debug for Confirmation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Confirmation")
    }
}

impl std::future::Future for Confirmation {
    type Output = Result<usize, EmitError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

/// The answers to a broadcast that asked for acknowledgements.
#[derive(Debug, Clone, Default)]
pub struct BroadcastAcks {
    /// Each answer, with the id of the socket that sent it.
    pub responses: Vec<(Sid, Payload)>,
    /// How many answers were expected.
    pub expected: usize,
}

impl BroadcastAcks {
    /// Whether some recipient did not answer in time.
    pub fn timed_out(&self) -> bool {
        self.responses.len() < self.expected
    }
}

impl BroadcastOperator {
    pub(crate) fn new(ns: Namespace) -> Self {
        Self {
            ns,
            opts: BroadcastOptions::default(),
        }
    }

    /// Also targets `rooms` (sockets in any of the rooms, each once).
    pub fn to(mut self, rooms: impl IntoRooms) -> Self {
        for room in rooms.into_rooms() {
            if !self.opts.rooms.contains(&room) {
                self.opts.rooms.push(room);
            }
        }
        self
    }

    /// Same as [`BroadcastOperator::to`].
    pub fn within(self, rooms: impl IntoRooms) -> Self {
        self.to(rooms)
    }

    /// Leaves out sockets in `rooms`.
    pub fn except(mut self, rooms: impl IntoRooms) -> Self {
        self.opts.except.extend(rooms.into_rooms());
        self
    }

    /// Only this node's sockets.
    pub fn local(mut self) -> Self {
        self.opts.flags.local = true;
        self
    }

    /// Recipients not ready to receive right now miss the packet.
    pub fn volatile(mut self) -> Self {
        self.opts.flags.volatile = true;
        self
    }

    /// How long [`BroadcastOperator::emit_with_ack`] waits for answers.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.opts.flags.timeout = Some(timeout);
        self
    }

    /// The selection, as an adapter sees it.
    pub fn options(&self) -> &BroadcastOptions {
        &self.opts
    }

    /// Emits to the selection (encoded once for all). Returns how many local sockets it was
    /// queued for. Other nodes get it without waiting: an error says the cluster could not
    /// take it, `Ok` does not prove that it did (see [`BroadcastOperator::emit_confirmed`]).
    pub fn emit(&self, event: &str, payload: impl Into<Payload>) -> Result<usize, AdapterError> {
        if crate::socket::is_reserved(event) {
            return Err(AdapterError::ReservedEvent);
        }
        let adapter = self.ns.adapter();
        self.ns
            .encode_and(event, payload.into(), None, &self.opts, |packet| {
                adapter.broadcast(packet, &self.opts)
            })
    }

    /// Emits like [`BroadcastOperator::emit`] (at once: emits keep their order whether or not
    /// the result is awaited) and returns what resolves once every node of the cluster has
    /// the packet: `Ok(local)` when the cluster adapter handed it on to all of them (on a
    /// single node, at once), otherwise the reason and how many local sockets got it anyway.
    pub fn emit_confirmed(&self, event: &str, payload: impl Into<Payload>) -> Confirmation {
        let sent = if crate::socket::is_reserved(event) {
            None
        } else {
            let adapter = self.ns.adapter();
            Some(
                self.ns
                    .encode_and(event, payload.into(), None, &self.opts, |packet| {
                        adapter.broadcast_confirmed(packet, &self.opts)
                    }),
            )
        };
        Confirmation(Box::pin(async move {
            let Some(sent) = sent else {
                return Err(EmitError {
                    error: AdapterError::ReservedEvent,
                    local: 0,
                });
            };
            match sent.cluster.await {
                Ok(()) => Ok(sent.local),
                Err(error) => Err(EmitError {
                    error,
                    local: sent.local,
                }),
            }
        }))
    }

    /// Emits to the selection and collects every recipient's acknowledgement, until all
    /// answered or the timeout (default: the namespace's ack timeout) passed.
    pub async fn emit_with_ack(
        &self,
        event: &str,
        payload: impl Into<Payload>,
    ) -> Result<BroadcastAcks, AdapterError> {
        if crate::socket::is_reserved(event) {
            return Err(AdapterError::ReservedEvent);
        }
        let id = self.ns.next_ack_id();
        let packet = self
            .ns
            .encode_and(event, payload.into(), Some(id), &self.opts, Clone::clone);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let timeout = self.opts.flags.timeout.unwrap_or(self.ns.ack_timeout());
        let deadline = tokio::time::Instant::now() + timeout;
        // The adapter needs the effective timeout to wait for other nodes' answers.
        let mut opts = self.opts.clone();
        opts.flags.timeout = Some(timeout);
        let expected = self.ns.adapter().broadcast_with_ack(&packet, &opts, tx).await?;
        let mut acks = BroadcastAcks {
            responses: Vec::with_capacity(expected),
            expected,
        };
        while acks.responses.len() < expected {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(answer)) => acks.responses.push(answer),
                // Every recipient disconnected or timed out.
                Ok(None) | Err(_) => break,
            }
        }
        Ok(acks)
    }

    /// The selected sockets, on every node.
    pub async fn fetch_sockets(&self) -> Result<Vec<SocketInfo>, AdapterError> {
        self.ns.adapter().fetch_sockets(self.opts.clone()).await
    }

    /// Makes the selected sockets join `rooms`, on every node.
    pub async fn sockets_join(&self, rooms: impl IntoRooms) -> Result<(), AdapterError> {
        let rooms: Vec<Room> = rooms.into_rooms().into_vec();
        self.ns.adapter().add_sockets(self.opts.clone(), rooms).await
    }

    /// Makes the selected sockets leave `rooms`, on every node.
    pub async fn sockets_leave(&self, rooms: impl IntoRooms) -> Result<(), AdapterError> {
        let rooms: Vec<Room> = rooms.into_rooms().into_vec();
        self.ns.adapter().del_sockets(self.opts.clone(), rooms).await
    }

    /// Disconnects the selected sockets, on every node (`close` also closes their
    /// connections).
    pub async fn disconnect_sockets(&self, close: bool) -> Result<(), AdapterError> {
        self.ns
            .adapter()
            .disconnect_sockets(self.opts.clone(), close)
            .await
    }
}
