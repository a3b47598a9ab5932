//! Event arguments as they travel: JSON values plus binary attachments referenced by
//! placeholders, the received [`Event`], and the [`AckSender`] that answers it.

pub use ferrio_proto::payload::Payload;

use crate::Socket;

/// An event a client sent.
pub type Event = ferrio_proto::payload::Event<AckSender>;

/// Answers one client event that asked for an acknowledgement. It may be moved to another
/// task and used later; it answers at most once.
#[derive(Debug)]
pub struct AckSender {
    pub(crate) socket: Socket,
    pub(crate) id: u64,
}

impl ferrio_proto::payload::Ack for AckSender {
    fn send_payload(self, payload: Payload) {
        self.send(payload);
    }
}

impl AckSender {
    /// Sends the acknowledgement.
    pub fn send(self, payload: impl Into<Payload>) {
        self.socket.send_ack(self.id, payload.into());
    }
}
