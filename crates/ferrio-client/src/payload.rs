//! Event arguments as they travel: JSON values plus binary attachments referenced by
//! placeholders, a received [`Event`], and the [`AckSender`] that answers a server's event.

pub use ferrio_proto::payload::Payload;

use crate::socket::SocketRef;

/// An event the server sent.
pub type Event = ferrio_proto::payload::Event<AckSender>;

/// Answers one server event that asked for an acknowledgement; at most once.
#[derive(Debug)]
pub struct AckSender {
    pub(crate) socket: SocketRef,
    pub(crate) id: u64,
}

impl ferrio_proto::payload::Ack for AckSender {
    fn send_payload(self, payload: Payload) {
        self.send(payload);
    }
}

impl AckSender {
    /// Sends the acknowledgement. It is dropped if the connection the event came on is gone
    /// (the server's ack waiter ends with it).
    pub fn send(self, payload: impl Into<Payload>) {
        self.socket.send_ack(self.id, payload.into());
    }
}
