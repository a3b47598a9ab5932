//! The two Engine.IO transports, each as a reader task and a writer task behind channels, so
//! the session driver treats them alike: it reads [`Incoming`] packets and writes batches of
//! [`Wire`] packets.

use bytes::Bytes;
use ferrio_proto::engine::{Data, Packet, decode_text};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::DisconnectReason;

pub(crate) mod http;
pub(crate) mod polling;
pub(crate) mod ws;

/// An Engine.IO packet to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Wire {
    /// A text packet in full (`42["a"]`, `3`, `2probe`, `5`, `1`).
    Text(String),
    /// A binary `message` (an attachment).
    Binary(Bytes),
}

/// An Engine.IO packet received, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Incoming {
    Open(String),
    Close,
    Ping(String),
    Pong(String),
    Text(String),
    Binary(Bytes),
    Upgrade,
    Noop,
}

impl Incoming {
    pub(crate) fn from_packet(packet: Packet<'_>) -> Self {
        match packet {
            Packet::Open(s) => Self::Open(s.to_owned()),
            Packet::Close => Self::Close,
            Packet::Ping(s) => Self::Ping(s.to_owned()),
            Packet::Pong(s) => Self::Pong(s.to_owned()),
            Packet::Message(Data::Text(s)) => Self::Text(s.to_owned()),
            Packet::Message(Data::Binary(b)) => Self::Binary(Bytes::from(b.into_owned())),
            Packet::Upgrade => Self::Upgrade,
            Packet::Noop => Self::Noop,
        }
    }

    /// Decodes one text packet (a WebSocket text frame or a polling record).
    pub(crate) fn decode(text: &str) -> Result<Self, DisconnectReason> {
        decode_text(text)
            .map(Self::from_packet)
            .map_err(|e| DisconnectReason::ParseError(e.to_string()))
    }
}

/// What a transport's tasks report: a packet, or the end of the transport.
pub(crate) type Report = Result<Incoming, DisconnectReason>;

/// A running transport: its reports, the way to write to it, and its tasks (aborted on drop).
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) reports: mpsc::Receiver<Report>,
    /// Batches to write; `None` after [`Link::stop_writing`].
    pub(crate) writer: Option<mpsc::UnboundedSender<Vec<Wire>>>,
    pub(crate) reader_task: Option<JoinHandle<()>>,
    pub(crate) writer_task: Option<JoinHandle<()>>,
    /// Asks a polling reader to stop after the request under way (the upgrade's pause).
    pub(crate) pause: Option<tokio::sync::watch::Sender<bool>>,
}

impl Link {
    /// Queues a batch; false if the writer is gone.
    pub(crate) fn send(&self, batch: Vec<Wire>) -> bool {
        self.writer.as_ref().is_some_and(|w| w.send(batch).is_ok())
    }

    /// Closes the writer's queue: it writes what it has and ends.
    pub(crate) fn stop_writing(&mut self) -> Option<JoinHandle<()>> {
        self.writer = None;
        self.writer_task.take()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Some(task) = self.reader_task.take() {
            task.abort();
        }
        if let Some(task) = self.writer_task.take() {
            task.abort();
        }
    }
}
