//! WebSocket framing (RFC 6455), server side, sans-IO.
//!
//! [`FrameReader`] turns the bytes a client sent into messages: it unmasks, reassembles
//! fragmented messages, validates UTF-8 and enforces the size limit from the frame header,
//! before any payload is buffered. It keeps no buffer while idle: only a frame that arrived
//! in part is copied aside, and the copy is released as soon as the frame completes. A
//! server holding many idle connections pays nothing for their read buffers.
//!
//! [`write_frame_header`] produces the (unmasked) header of a server frame; the payload
//! follows it unchanged.

use bytes::{Bytes, BytesMut};

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
    /// A close frame, with its status code if it had one.
    Close(Option<u16>),
}

/// Why the reader gave up; each maps to the close code the server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    /// A message or frame larger than the limit (close 1009).
    #[error("message too big")]
    TooBig,
    /// Invalid UTF-8 in a text message (close 1007).
    #[error("invalid UTF-8 in a text message")]
    InvalidUtf8,
    /// Any other violation of RFC 6455: unmasked client frame, reserved bits or opcodes,
    /// a fragmented or oversized control frame, a continuation out of place (close 1002).
    #[error("WebSocket protocol error: {0}")]
    Protocol(&'static str),
}

impl WsError {
    /// The close code RFC 6455 §7.4.1 assigns.
    pub fn close_code(&self) -> u16 {
        match self {
            Self::TooBig => 1009,
            Self::InvalidUtf8 => 1007,
            Self::Protocol(_) => 1002,
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

/// Parses a client frame header; `Ok(None)` when more bytes are needed.
fn parse_header(buf: &[u8]) -> Result<Option<Header>, WsError> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err(WsError::Protocol("reserved bits set"));
    }
    let opcode = Opcode::from_bits(b0 & 0x0F).ok_or(WsError::Protocol("reserved opcode"))?;
    if b1 & 0x80 == 0 {
        return Err(WsError::Protocol("unmasked client frame"));
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
                return Err(WsError::Protocol("length with the high bit set"));
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    let Some(mask) = buf.get(size..size + 4) else {
        return Ok(None);
    };
    let mask = [mask[0], mask[1], mask[2], mask[3]];
    size += 4;
    let fin = b0 & 0x80 != 0;
    if opcode.is_control() && (!fin || len > 125) {
        return Err(WsError::Protocol("fragmented or oversized control frame"));
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
            let header = match parse_header(&self.partial)? {
                Some(h) => h,
                None => {
                    // Borrow enough bytes to finish the header, then give back what belongs
                    // to the next frame.
                    let take = data.len().min(14);
                    self.partial.extend_from_slice(&data[..take]);
                    let Some(h) = parse_header(&self.partial)? else {
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
            let mut frame = std::mem::take(&mut self.partial);
            let header = parse_header(&frame)?.ok_or(WsError::Protocol("incomplete header"))?;
            unmask(&mut frame[header.size..], header.mask);
            let payload = Bytes::from(frame).slice(header.size..);
            self.on_frame(header, payload, &mut on_message)?;
        }
        // Then every frame that is whole in this read, without copying it aside.
        while !data.is_empty() {
            let Some(header) = parse_header(data)? else {
                self.partial.extend_from_slice(data);
                return Ok(());
            };
            self.check_size(header.len)?;
            let total = header.size as u64 + header.len;
            if (data.len() as u64) < total {
                self.partial.reserve_exact(total as usize);
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
                    1 => return Err(WsError::Protocol("close payload of one byte")),
                    _ => {
                        if std::str::from_utf8(&payload[2..]).is_err() {
                            return Err(WsError::InvalidUtf8);
                        }
                        Some(u16::from_be_bytes([payload[0], payload[1]]))
                    }
                };
                on_message(Message::Close(code));
            }
            Opcode::Text | Opcode::Binary => {
                if self.fragments.is_some() {
                    return Err(WsError::Protocol("new message inside a fragmented one"));
                }
                if header.fin {
                    on_message(finish(header.opcode, payload)?);
                } else {
                    self.fragments = Some((header.opcode, BytesMut::from(&payload[..])));
                }
            }
            Opcode::Continuation => {
                let Some((opcode, mut buf)) = self.fragments.take() else {
                    return Err(WsError::Protocol("continuation without a message"));
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

/// The payload of a close frame with `code` (no reason text).
pub fn close_payload(code: u16) -> [u8; 2] {
    code.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

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
            (vec![0x81, 0x00], WsError::Protocol("unmasked client frame")),
            (
                vec![0xC1, 0x80, 0, 0, 0, 0],
                WsError::Protocol("reserved bits set"),
            ),
            (vec![0x83, 0x80, 0, 0, 0, 0], WsError::Protocol("reserved opcode")),
            (
                client_frame(false, 9, b"", M),
                WsError::Protocol("fragmented or oversized control frame"),
            ),
            (
                client_frame(true, 9, &[0; 126], M),
                WsError::Protocol("fragmented or oversized control frame"),
            ),
            (
                client_frame(true, 0, b"x", M),
                WsError::Protocol("continuation without a message"),
            ),
            (client_frame(true, 1, &[0xFF, 0xFE], M), WsError::InvalidUtf8),
            (
                client_frame(true, 8, &[3], M),
                WsError::Protocol("close payload of one byte"),
            ),
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
            Err(WsError::Protocol("new message inside a fragmented one"))
        );
        assert_eq!(WsError::TooBig.close_code(), 1009);
        assert_eq!(WsError::InvalidUtf8.close_code(), 1007);
        assert_eq!(WsError::Protocol("x").close_code(), 1002);
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
