//! WebSocket framing (RFC 6455), server side, sans-IO.
//!
//! [`FrameReader`] turns the bytes a client sent into messages: it unmasks, reassembles
//! fragmented messages, validates UTF-8 and enforces the size limit from the frame header,
//! before any payload is buffered. It keeps no buffer while idle: only a frame that arrived
//! in part is copied aside, and the copy is released as soon as the frame completes. A
//! server holding many idle connections pays nothing for their read buffers.
//!
//! [`write_frame_header`] produces the (unmasked) header of a server frame; the payload
//! follows it unchanged. [`is_valid_close_code`] says which close codes may be on the wire.

use bytes::{Bytes, BytesMut};

/// The room first made for a frame that spans reads (it grows as the rest arrives).
const PARTIAL_START: usize = 16 * 1024;

/// Opcodes of RFC 6455 §5.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// A complete message from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message (valid UTF-8).
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping; the server answers with a pong carrying the same payload.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A close frame, with its status code if it had one (always a [valid
    /// one](is_valid_close_code): the reader refuses the others).
    Close(Option<u16>),
}

/// Whether `code` may be carried by a close frame (RFC 6455 §7.4): the codes the RFC and the
/// IANA registry assign (1000–1003, 1007–1014) and the ranges for libraries (3000–3999) and
/// applications (4000–4999). 1004 is reserved; 1005, 1006 and 1015 stand for "no code",
/// "closed abnormally" and "TLS failed" in APIs and must never be sent; 0–999 are not used
/// and 1016–2999 and 5000 up are unassigned. The same set as the reference's `ws`.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Every way a client can break RFC 6455, by name. Each maps to the close code the server
/// sends ([`WsError::close_code`]) and a metrics label ([`WsError::label`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    /// A message or frame larger than the limit (close 1009).
    #[error("message too big")]
    TooBig,
    /// Invalid UTF-8 in a text message or a close reason (close 1007).
    #[error("invalid UTF-8 in a text message or close reason")]
    InvalidUtf8,
    /// RSV1, RSV2 or RSV3 set, though no extension was negotiated.
    #[error("WebSocket protocol error: reserved bits set")]
    ReservedBits,
    /// An opcode RFC 6455 reserves (0x3–0x7, 0xB–0xF).
    #[error("WebSocket protocol error: reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A client frame without a mask.
    #[error("WebSocket protocol error: unmasked client frame")]
    UnmaskedFrame,
    /// A server's frame was masked (a client reading it must fail the connection).
    #[error("WebSocket protocol error: masked server frame")]
    MaskedFrame,
    /// A 64-bit payload length with the most significant bit set.
    #[error("WebSocket protocol error: length with the high bit set")]
    InvalidLength,
    /// A ping, pong or close frame without FIN.
    #[error("WebSocket protocol error: fragmented control frame")]
    FragmentedControlFrame,
    /// A ping, pong or close frame with more than 125 payload bytes.
    #[error("WebSocket protocol error: control frame over 125 bytes")]
    OversizedControlFrame,
    /// A continuation frame with no fragmented message to continue.
    #[error("WebSocket protocol error: continuation without a message")]
    UnexpectedContinuation,
    /// A text or binary frame while a fragmented message is still incomplete.
    #[error("WebSocket protocol error: new message inside a fragmented one")]
    InterleavedMessage,
    /// A close frame whose payload is a single byte (half a status code).
    #[error("WebSocket protocol error: close payload of one byte")]
    ShortClosePayload,
    /// A close frame with a code that may not be sent (see [`is_valid_close_code`]).
    #[error("WebSocket protocol error: close code {0} may not be sent")]
    InvalidCloseCode(u16),
}

impl WsError {
    /// The close code RFC 6455 §7.4.1 assigns: 1009 and 1007 for their cases, 1002 for every
    /// other violation.
    pub fn close_code(&self) -> u16 {
        match self {
            Self::TooBig => 1009,
            Self::InvalidUtf8 => 1007,
            _ => 1002,
        }
    }

    /// A short, stable label for metrics and logs; the `ws_` prefix keeps it apart from the
    /// labels of [`ProtocolError`](crate::ProtocolError) in one metric.
    pub fn label(&self) -> &'static str {
        match self {
            Self::TooBig => "ws_message_too_big",
            Self::InvalidUtf8 => "ws_invalid_utf8",
            Self::ReservedBits => "ws_reserved_bits",
            Self::ReservedOpcode(_) => "ws_reserved_opcode",
            Self::UnmaskedFrame => "ws_unmasked_frame",
            Self::MaskedFrame => "ws_masked_frame",
            Self::InvalidLength => "ws_invalid_length",
            Self::FragmentedControlFrame => "ws_fragmented_control_frame",
            Self::OversizedControlFrame => "ws_oversized_control_frame",
            Self::UnexpectedContinuation => "ws_unexpected_continuation",
            Self::InterleavedMessage => "ws_interleaved_message",
            Self::ShortClosePayload => "ws_short_close_payload",
            Self::InvalidCloseCode(_) => "ws_invalid_close_code",
        }
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    fin: bool,
    opcode: Opcode,
    mask: [u8; 4],
    len: u64,
    /// Bytes the header took.
    size: usize,
}

/// Which end of a WebSocket reads the frames: a server reads masked frames, a client
/// unmasked ones (RFC 6455, 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    Server,
    Client,
}

/// A frame's header as [`read_header`] parses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    pub opcode: Opcode,
    /// The masking key (frames a client sends).
    pub mask: Option<[u8; 4]>,
    /// Payload bytes.
    pub len: u64,
    /// Bytes the header takes.
    pub size: usize,
}

/// Parses the header at the start of `buf` as `reader` must see it (reserved bits, opcodes,
/// masking, control frames checked); `Ok(None)` when more bytes are needed.
pub fn read_header(buf: &[u8], reader: Reader) -> Result<Option<FrameHeader>, WsError> {
    Ok(parse_header(buf, reader == Reader::Server)?.map(|h| FrameHeader {
        fin: h.fin,
        opcode: h.opcode,
        mask: (reader == Reader::Server).then_some(h.mask),
        len: h.len,
        size: h.size,
    }))
}

/// Parses a frame header, masked (a client's) or not (a server's); `Ok(None)` when more
/// bytes are needed.
fn parse_header(buf: &[u8], masked: bool) -> Result<Option<Header>, WsError> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err(WsError::ReservedBits);
    }
    let opcode = Opcode::from_bits(b0 & 0x0F).ok_or(WsError::ReservedOpcode(b0 & 0x0F))?;
    match (b1 & 0x80 != 0, masked) {
        (false, true) => return Err(WsError::UnmaskedFrame),
        (true, false) => return Err(WsError::MaskedFrame),
        _ => {}
    }
    let (len, mut size) = match b1 & 0x7F {
        126 => {
            let Some(b) = buf.get(2..4) else { return Ok(None) };
            (u64::from(u16::from_be_bytes([b[0], b[1]])), 4)
        }
        127 => {
            let Some(b) = buf.get(2..10) else { return Ok(None) };
            let mut raw = [0u8; 8];
            raw.copy_from_slice(b);
            let len = u64::from_be_bytes(raw);
            if len >> 63 != 0 {
                return Err(WsError::InvalidLength);
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    let mut mask = [0; 4];
    if masked {
        let Some(key) = buf.get(size..size + 4) else {
            return Ok(None);
        };
        mask.copy_from_slice(key);
        size += 4;
    }
    let fin = b0 & 0x80 != 0;
    if opcode.is_control() {
        if !fin {
            return Err(WsError::FragmentedControlFrame);
        }
        if len > 125 {
            return Err(WsError::OversizedControlFrame);
        }
    }
    Ok(Some(Header {
        fin,
        opcode,
        mask,
        len,
        size,
    }))
}

/// XORs a whole payload with its mask, four bytes at a time.
fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let v = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (b, m) in chunks.into_remainder().iter_mut().zip(mask) {
        *b ^= m;
    }
}

/// Turns a client's bytes into messages, keeping nothing while idle.
#[derive(Debug, Default)]
pub struct FrameReader {
    /// Bytes of a frame that arrived in part (empty, with no allocation, between frames).
    partial: Vec<u8>,
    /// A fragmented data message in progress: its opcode and the payload so far.
    fragments: Option<(Opcode, BytesMut)>,
    max_message: usize,
}

impl FrameReader {
    /// Changes the largest message accepted from now on (a message already under way is held
    /// to it as its next frames arrive).
    pub fn set_max_message(&mut self, max_message: usize) {
        self.max_message = max_message;
    }

    /// A reader refusing messages larger than `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Self {
            partial: Vec::new(),
            fragments: None,
            max_message,
        }
    }

    /// Whether the reader holds no partial frame or message (and so no buffer).
    pub fn is_idle(&self) -> bool {
        self.partial.is_empty() && self.fragments.is_none()
    }

    /// Feeds bytes read from the peer; every complete message is passed to `on_message`.
    /// After an error the connection must be closed with [`WsError::close_code`].
    pub fn feed(&mut self, mut data: &[u8], mut on_message: impl FnMut(Message)) -> Result<(), WsError> {
        // Complete a frame left over from the previous read first.
        if !self.partial.is_empty() {
            let header = match parse_header(&self.partial, true)? {
                Some(h) => h,
                None => {
                    // Borrow enough bytes to finish the header, then give back what belongs
                    // to the next frame.
                    let take = data.len().min(14);
                    self.partial.extend_from_slice(&data[..take]);
                    let Some(h) = parse_header(&self.partial, true)? else {
                        return Ok(());
                    };
                    let frame_len = usize::try_from(h.size as u64 + h.len).unwrap_or(usize::MAX);
                    let excess = self.partial.len().saturating_sub(frame_len);
                    self.partial.truncate(self.partial.len() - excess);
                    data = &data[take - excess..];
                    h
                }
            };
            self.check_size(header.len)?;
            let needed = header.size as u64 + header.len;
            let missing = (needed as usize).saturating_sub(self.partial.len());
            let take = missing.min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < needed as usize {
                return Ok(());
            }
            // `header` was parsed from these same leading bytes.
            let mut frame = std::mem::take(&mut self.partial);
            unmask(&mut frame[header.size..], header.mask);
            let payload = Bytes::from(frame).slice(header.size..);
            self.on_frame(header, payload, &mut on_message)?;
        }
        // Then every frame that is whole in this read, without copying it aside.
        while !data.is_empty() {
            let Some(header) = parse_header(data, true)? else {
                self.partial.extend_from_slice(data);
                return Ok(());
            };
            self.check_size(header.len)?;
            let total = header.size as u64 + header.len;
            if (data.len() as u64) < total {
                // Grown as the frame arrives: a peer that declares a large frame and sends
                // little of it holds only what it sent.
                self.partial
                    .reserve_exact((total as usize).min(data.len().max(PARTIAL_START)));
                self.partial.extend_from_slice(data);
                return Ok(());
            }
            let (frame, rest) = data.split_at(total as usize);
            let mut payload = frame[header.size..].to_vec();
            unmask(&mut payload, header.mask);
            self.on_frame(header, Bytes::from(payload), &mut on_message)?;
            data = rest;
        }
        Ok(())
    }

    /// Refuses a frame whose payload would make its message larger than the limit.
    fn check_size(&self, payload_len: u64) -> Result<(), WsError> {
        let so_far = self.fragments.as_ref().map_or(0, |(_, b)| b.len() as u64);
        if payload_len.saturating_add(so_far) > self.max_message as u64 {
            return Err(WsError::TooBig);
        }
        Ok(())
    }

    fn on_frame(
        &mut self,
        header: Header,
        payload: Bytes,
        on_message: &mut impl FnMut(Message),
    ) -> Result<(), WsError> {
        match header.opcode {
            Opcode::Ping => on_message(Message::Ping(payload)),
            Opcode::Pong => on_message(Message::Pong(payload)),
            Opcode::Close => {
                let code = match payload.len() {
                    0 => None,
                    1 => return Err(WsError::ShortClosePayload),
                    _ => {
                        let code = u16::from_be_bytes([payload[0], payload[1]]);
                        if !is_valid_close_code(code) {
                            return Err(WsError::InvalidCloseCode(code));
                        }
                        // 1007 rather than 1002, as the reference's `ws` answers it: the frame
                        // is sound, its text is not.
                        if std::str::from_utf8(&payload[2..]).is_err() {
                            return Err(WsError::InvalidUtf8);
                        }
                        Some(code)
                    }
                };
                on_message(Message::Close(code));
            }
            Opcode::Text | Opcode::Binary => {
                if self.fragments.is_some() {
                    return Err(WsError::InterleavedMessage);
                }
                if header.fin {
                    on_message(finish(header.opcode, payload)?);
                } else {
                    self.fragments = Some((header.opcode, BytesMut::from(&payload[..])));
                }
            }
            Opcode::Continuation => {
                let Some((opcode, mut buf)) = self.fragments.take() else {
                    return Err(WsError::UnexpectedContinuation);
                };
                buf.extend_from_slice(&payload);
                if header.fin {
                    on_message(finish(opcode, buf.freeze())?);
                } else {
                    self.fragments = Some((opcode, buf));
                }
            }
        }
        Ok(())
    }
}

fn finish(opcode: Opcode, payload: Bytes) -> Result<Message, WsError> {
    if opcode == Opcode::Text {
        if std::str::from_utf8(&payload).is_err() {
            return Err(WsError::InvalidUtf8);
        }
        Ok(Message::Text(payload))
    } else {
        Ok(Message::Binary(payload))
    }
}

/// Largest server frame header, in bytes.
pub const MAX_HEADER: usize = 10;

/// Writes the header of an unmasked, unfragmented server frame carrying `len` payload
/// bytes; returns how many bytes of `out` it used.
pub fn write_frame_header(opcode: Opcode, len: usize, out: &mut [u8; MAX_HEADER]) -> usize {
    out[0] = 0x80 | opcode.bits();
    if len < 126 {
        out[1] = len as u8;
        2
    } else if len <= usize::from(u16::MAX) {
        out[1] = 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// Appends a whole server frame to `out`.
pub fn write_frame(opcode: Opcode, payload: &[u8], out: &mut Vec<u8>) {
    let mut header = [0u8; MAX_HEADER];
    let n = write_frame_header(opcode, payload.len(), &mut header);
    out.extend_from_slice(&header[..n]);
    out.extend_from_slice(payload);
}

/// Appends a whole client frame to `out`: its payload is `parts` one after the other,
/// masked with `key` (a fresh one per frame, as RFC 6455 asks of clients).
pub fn write_masked_frame(opcode: Opcode, parts: &[&[u8]], key: [u8; 4], out: &mut Vec<u8>) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut header = [0u8; MAX_HEADER];
    let n = write_frame_header(opcode, len, &mut header);
    header[1] |= 0x80;
    out.extend_from_slice(&header[..n]);
    out.extend_from_slice(&key);
    let at = out.len();
    for part in parts {
        out.extend_from_slice(part);
    }
    unmask(&mut out[at..], key);
}

/// The payload of a close frame with `code` (no reason text).
pub fn close_payload(code: u16) -> [u8; 2] {
    code.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clients_frames_round_trip_through_a_server_reader_and_back() {
        let mut out = Vec::new();
        write_masked_frame(Opcode::Text, &[b"4", b"hello"], [1, 2, 3, 4], &mut out);
        assert_ne!(&out[6..], b"4hello", "masked on the wire");
        let mut got = Vec::new();
        FrameReader::new(100).feed(&out, |m| got.push(m)).unwrap();
        assert_eq!(got, vec![Message::Text(Bytes::from_static(b"4hello"))]);
        let h = read_header(&out, Reader::Server).unwrap().unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.mask, h.len, h.size),
            (true, Opcode::Text, Some([1, 2, 3, 4]), 6, 6)
        );
        // A client refuses a masked frame, a server an unmasked one.
        assert_eq!(read_header(&out, Reader::Client), Err(WsError::MaskedFrame));
        let mut server = Vec::new();
        write_frame(Opcode::Binary, &[0u8; 300], &mut server);
        let h = read_header(&server, Reader::Client).unwrap().unwrap();
        assert_eq!((h.opcode, h.mask, h.len, h.size), (Opcode::Binary, None, 300, 4));
        assert_eq!(read_header(&server, Reader::Server), Err(WsError::UnmaskedFrame));
        assert_eq!(read_header(&server[..3], Reader::Client), Ok(None));
    }

    /// A masked client frame.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        let mut p = payload.to_vec();
        unmask(&mut p, mask);
        out.extend_from_slice(&p);
        out
    }

    fn read_all(reader: &mut FrameReader, chunks: &[&[u8]]) -> Result<Vec<Message>, WsError> {
        let mut out = Vec::new();
        for chunk in chunks {
            reader.feed(chunk, |m| out.push(m))?;
        }
        Ok(out)
    }

    const M: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

    #[test]
    fn whole_frames_in_one_read() {
        let mut r = FrameReader::new(1000);
        let mut data = client_frame(true, 1, b"4hello", M);
        data.extend(client_frame(true, 2, &[1, 2, 3], M));
        data.extend(client_frame(true, 9, b"p", M));
        let msgs = read_all(&mut r, &[&data]).unwrap();
        assert_eq!(
            msgs,
            vec![
                Message::Text(Bytes::from_static(b"4hello")),
                Message::Binary(Bytes::from_static(&[1, 2, 3])),
                Message::Ping(Bytes::from_static(b"p")),
            ]
        );
        assert!(r.is_idle());
        assert_eq!(r.partial.capacity(), 0, "no buffer kept between frames");
    }

    #[test]
    fn frames_split_at_every_byte() {
        let payload: Vec<u8> = (0..300u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut data = client_frame(true, 1, &payload, M);
        data.extend(client_frame(true, 1, b"42[\"x\"]", M));
        for split in 1..data.len() {
            let mut r = FrameReader::new(1000);
            let msgs = read_all(&mut r, &[&data[..split], &data[split..]]).unwrap();
            assert_eq!(msgs.len(), 2, "split at {split}");
            assert_eq!(msgs[0], Message::Text(Bytes::from(payload.clone())));
            assert!(r.is_idle());
        }
        // One byte at a time.
        let mut r = FrameReader::new(1000);
        let chunks: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(read_all(&mut r, &chunks).unwrap().len(), 2);
        assert!(r.is_idle());
        assert_eq!(r.partial.capacity(), 0);
    }

    #[test]
    fn fragmented_messages_with_interleaved_control_frames() {
        let mut r = FrameReader::new(1000);
        let mut data = client_frame(false, 1, b"4hel", M);
        data.extend(client_frame(true, 9, b"", M));
        data.extend(client_frame(false, 0, b"lo ", M));
        data.extend(client_frame(true, 0, "wörld".as_bytes(), M));
        let msgs = read_all(&mut r, &[&data]).unwrap();
        assert_eq!(
            msgs,
            vec![
                Message::Ping(Bytes::new()),
                Message::Text(Bytes::from("4hello wörld")),
            ]
        );
        assert!(r.is_idle());
    }

    #[test]
    fn size_limit_is_enforced_from_the_header() {
        let mut r = FrameReader::new(10);
        // Only the header of an 11-byte frame: refused before the payload arrives.
        let frame = client_frame(true, 2, &[0; 11], M);
        assert_eq!(read_all(&mut r, &[&frame[..6]]), Err(WsError::TooBig));
        let mut r = FrameReader::new(10);
        assert!(read_all(&mut r, &[&client_frame(true, 2, &[0; 10], M)]).is_ok());
        // A fragmented message that grows past the limit.
        let mut r = FrameReader::new(10);
        let mut data = client_frame(false, 2, &[0; 6], M);
        data.extend(client_frame(true, 0, &[0; 6], M));
        assert_eq!(read_all(&mut r, &[&data]), Err(WsError::TooBig));
        // A 64-bit length.
        let mut huge = vec![0x82, 0xFF];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        huge.extend_from_slice(&M);
        assert_eq!(
            read_all(&mut FrameReader::new(1 << 20), &[&huge]),
            Err(WsError::TooBig)
        );
    }

    #[test]
    fn protocol_violations() {
        let cases: Vec<(Vec<u8>, WsError)> = vec![
            (vec![0x81, 0x00], WsError::UnmaskedFrame),
            (vec![0xC1, 0x80, 0, 0, 0, 0], WsError::ReservedBits),
            (vec![0x83, 0x80, 0, 0, 0, 0], WsError::ReservedOpcode(3)),
            (client_frame(false, 9, b"", M), WsError::FragmentedControlFrame),
            (
                client_frame(true, 9, &[0; 126], M),
                WsError::OversizedControlFrame,
            ),
            (client_frame(true, 0, b"x", M), WsError::UnexpectedContinuation),
            (client_frame(true, 1, &[0xFF, 0xFE], M), WsError::InvalidUtf8),
            (client_frame(true, 8, &[3], M), WsError::ShortClosePayload),
        ];
        for (data, err) in cases {
            assert_eq!(
                read_all(&mut FrameReader::new(1000), &[&data]),
                Err(err),
                "{data:?}"
            );
        }
        let mut data = client_frame(false, 1, b"a", M);
        data.extend(client_frame(true, 1, b"b", M));
        assert_eq!(
            read_all(&mut FrameReader::new(1000), &[&data]),
            Err(WsError::InterleavedMessage)
        );
        let mut huge = vec![0x82, 0xFF];
        huge.extend_from_slice(&(1u64 << 63).to_be_bytes());
        huge.extend_from_slice(&M);
        assert_eq!(
            read_all(&mut FrameReader::new(1000), &[&huge]),
            Err(WsError::InvalidLength)
        );
    }

    /// Every violation, once.
    const ALL_ERRORS: [WsError; 12] = [
        WsError::TooBig,
        WsError::InvalidUtf8,
        WsError::ReservedBits,
        WsError::ReservedOpcode(3),
        WsError::UnmaskedFrame,
        WsError::InvalidLength,
        WsError::FragmentedControlFrame,
        WsError::OversizedControlFrame,
        WsError::UnexpectedContinuation,
        WsError::InterleavedMessage,
        WsError::ShortClosePayload,
        WsError::InvalidCloseCode(1005),
    ];

    #[test]
    fn errors_map_to_close_codes_and_unique_labels() {
        assert_eq!(WsError::TooBig.close_code(), 1009);
        assert_eq!(WsError::InvalidUtf8.close_code(), 1007);
        for e in &ALL_ERRORS[2..] {
            assert_eq!(e.close_code(), 1002, "{e:?}");
        }
        for e in &ALL_ERRORS {
            assert!(is_valid_close_code(e.close_code()), "{e:?}");
            assert!(e.label().starts_with("ws_"), "{e:?}");
        }
        let mut labels: Vec<_> = ALL_ERRORS.iter().map(WsError::label).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), ALL_ERRORS.len());
    }

    #[test]
    fn close_codes_that_may_be_sent() {
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
        ] {
            assert!(is_valid_close_code(code), "{code}");
        }
        for code in [3000, 3999, 4000, 4999] {
            assert!(is_valid_close_code(code), "{code}");
        }
        for code in [
            0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!is_valid_close_code(code), "{code}");
        }
        // Exhaustively: exactly 12 registered codes and the 2000 of the two private ranges.
        assert_eq!(
            (0..=u16::MAX).filter(|&c| is_valid_close_code(c)).count(),
            12 + 2000
        );
    }

    #[test]
    fn close_frames_with_codes_that_may_not_be_sent_are_refused() {
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            let frame = client_frame(true, 8, &code.to_be_bytes(), M);
            let err = read_all(&mut FrameReader::new(1000), &[&frame]).unwrap_err();
            assert_eq!(err, WsError::InvalidCloseCode(code));
            assert_eq!(err.close_code(), 1002, "answered with a protocol error");
        }
        for code in [1000u16, 1001, 1003, 1011, 1014, 3000, 4999] {
            let frame = client_frame(true, 8, &code.to_be_bytes(), M);
            let msgs = read_all(&mut FrameReader::new(1000), &[&frame]).unwrap();
            assert_eq!(msgs, vec![Message::Close(Some(code))]);
        }
        // A reason that is not UTF-8: 1007, like the reference's `ws`.
        let frame = client_frame(true, 8, &[0x03, 0xE8, 0xC3, 0x28], M);
        let err = read_all(&mut FrameReader::new(1000), &[&frame]).unwrap_err();
        assert_eq!((err, err.close_code()), (WsError::InvalidUtf8, 1007));
    }

    #[test]
    fn close_frames() {
        let mut r = FrameReader::new(1000);
        let msgs = read_all(
            &mut r,
            &[&client_frame(true, 8, &[0x03, 0xE8, b'b', b'y', b'e'], M)],
        )
        .unwrap();
        assert_eq!(msgs, vec![Message::Close(Some(1000))]);
        let msgs = read_all(&mut r, &[&client_frame(true, 8, &[], M)]).unwrap();
        assert_eq!(msgs, vec![Message::Close(None)]);
    }

    #[test]
    fn server_headers() {
        let mut h = [0u8; MAX_HEADER];
        assert_eq!(write_frame_header(Opcode::Text, 5, &mut h), 2);
        assert_eq!(&h[..2], &[0x81, 5]);
        assert_eq!(write_frame_header(Opcode::Binary, 300, &mut h), 4);
        assert_eq!(&h[..4], &[0x82, 126, 1, 44]);
        assert_eq!(write_frame_header(Opcode::Text, 70_000, &mut h), 10);
        assert_eq!(&h[..2], &[0x81, 127]);
        assert_eq!(u64::from_be_bytes(h[2..10].try_into().unwrap()), 70_000);
        let mut out = Vec::new();
        write_frame(Opcode::Close, &close_payload(1009), &mut out);
        assert_eq!(out, vec![0x88, 2, 0x03, 0xF1]);
    }
}
