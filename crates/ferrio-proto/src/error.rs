//! Every way a peer can break the protocol, by name.
//!
//! WebSocket framing has its own error, [`WsError`](crate::ws::WsError), with labels of its
//! own (`ws_*`), so one metric can count both.

/// A protocol violation found while decoding or driving a session.
///
/// Each variant maps to a close reason (see [`ProtocolError::close_reason`]) and a metrics
/// label (see [`ProtocolError::label`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// An Engine.IO packet was empty.
    #[error("empty engine.io packet")]
    EmptyPacket,
    /// An Engine.IO packet type digit outside 0..=6.
    #[error("invalid engine.io packet type {0:?}")]
    InvalidPacketType(char),
    /// A `b<base64>` record (polling, or a WebSocket text frame) whose base64 is invalid.
    #[error("invalid base64 in a `b` binary record")]
    InvalidBase64,
    /// A text frame or polling body that is not UTF-8.
    #[error("payload is not valid UTF-8")]
    InvalidUtf8,
    /// A well-formed Engine.IO packet a v4 client never sends (`open`, `ping`, `upgrade` or
    /// `noop` outside an upgrade).
    #[error("unexpected engine.io packet {0:?} from a client")]
    UnexpectedPacket(crate::engine::PacketType),
    /// A Socket.IO packet type digit outside 0..=6.
    #[error("invalid socket.io packet type")]
    InvalidSocketPacketType,
    /// The attachment count prefix (`N-`) is malformed.
    #[error("invalid attachment count")]
    InvalidAttachmentCount,
    /// More attachments announced than the decoder allows.
    #[error("too many attachments ({0})")]
    TooManyAttachments(usize),
    /// An ack id larger than [`MAX_ACK_ID`](crate::socket::MAX_ACK_ID).
    #[error("ack id out of range")]
    InvalidAckId,
    /// The JSON payload does not parse (or nests deeper than allowed).
    #[error("invalid JSON payload")]
    InvalidJson,
    /// The payload has the wrong shape for the packet type (e.g. an EVENT whose data is not a
    /// non-empty array starting with an event name).
    #[error("invalid payload for packet type")]
    InvalidPayload,
    /// An EVENT whose name is reserved (`connect`, `disconnect`, ...).
    #[error("reserved event name")]
    ReservedEventName,
    /// A binary attachment arrived when none was expected.
    #[error("unexpected binary attachment")]
    UnexpectedAttachment,
    /// A text packet arrived while attachments of the previous packet were still expected.
    #[error("attachment count mismatch")]
    AttachmentCountMismatch,
    /// A placeholder refers to an attachment that does not exist.
    #[error("invalid binary placeholder")]
    InvalidPlaceholder,
}

impl ProtocolError {
    /// The Engine.IO / Socket.IO close reason the reference reports for this violation.
    ///
    /// Engine.IO decode errors close the session with "parse error". A text frame that is not
    /// UTF-8 fails in the WebSocket layer below ("transport error"). A Socket.IO decode error
    /// makes the reference close the Engine.IO connection itself, which its sockets see as
    /// "forced close".
    pub fn close_reason(&self) -> &'static str {
        match self {
            Self::InvalidUtf8 => "transport error",
            _ if self.is_socket_io() => "forced close",
            _ => "parse error",
        }
    }

    /// Whether the violation is in the Socket.IO layer (the Engine.IO packets were sound).
    pub fn is_socket_io(&self) -> bool {
        !matches!(
            self,
            Self::EmptyPacket
                | Self::InvalidPacketType(_)
                | Self::InvalidBase64
                | Self::InvalidUtf8
                | Self::UnexpectedPacket(_)
        )
    }

    /// A short, stable label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::EmptyPacket => "empty_packet",
            Self::InvalidPacketType(_) => "invalid_packet_type",
            Self::InvalidBase64 => "invalid_base64",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::UnexpectedPacket(_) => "unexpected_packet",
            Self::InvalidSocketPacketType => "invalid_socket_packet_type",
            Self::InvalidAttachmentCount => "invalid_attachment_count",
            Self::TooManyAttachments(_) => "too_many_attachments",
            Self::InvalidAckId => "invalid_ack_id",
            Self::InvalidJson => "invalid_json",
            Self::InvalidPayload => "invalid_payload",
            Self::ReservedEventName => "reserved_event_name",
            Self::UnexpectedAttachment => "unexpected_attachment",
            Self::AttachmentCountMismatch => "attachment_count_mismatch",
            Self::InvalidPlaceholder => "invalid_placeholder",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ProtocolError as E;
    use crate::engine::PacketType;

    /// The Engine.IO violations first, then the Socket.IO ones.
    const ALL: [E; 15] = [
        E::EmptyPacket,
        E::InvalidPacketType('x'),
        E::InvalidBase64,
        E::InvalidUtf8,
        E::UnexpectedPacket(PacketType::Ping),
        E::InvalidSocketPacketType,
        E::InvalidAttachmentCount,
        E::TooManyAttachments(11),
        E::InvalidAckId,
        E::InvalidJson,
        E::InvalidPayload,
        E::ReservedEventName,
        E::UnexpectedAttachment,
        E::AttachmentCountMismatch,
        E::InvalidPlaceholder,
    ];

    #[test]
    fn labels_are_unique() {
        let mut labels: Vec<_> = ALL.iter().map(E::label).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), ALL.len());
        // Apart from the WebSocket layer's, which share the metric.
        assert!(labels.iter().all(|l| !l.starts_with("ws_")));
    }

    #[test]
    fn close_reasons_follow_the_layer() {
        assert_eq!(E::EmptyPacket.close_reason(), "parse error");
        assert_eq!(E::InvalidPacketType('a').close_reason(), "parse error");
        assert_eq!(E::InvalidBase64.close_reason(), "parse error");
        assert_eq!(E::InvalidUtf8.close_reason(), "transport error");
        assert_eq!(
            E::UnexpectedPacket(PacketType::Noop).close_reason(),
            "parse error"
        );
        for e in &ALL[5..] {
            assert!(e.is_socket_io(), "{e:?}");
            assert_eq!(e.close_reason(), "forced close", "{e:?}");
        }
        for e in &ALL[..5] {
            assert!(!e.is_socket_io(), "{e:?}");
        }
    }

    #[test]
    fn messages_name_the_violation() {
        assert_eq!(
            E::InvalidPacketType('9').to_string(),
            "invalid engine.io packet type '9'"
        );
        assert_eq!(E::TooManyAttachments(11).to_string(), "too many attachments (11)");
    }
}
