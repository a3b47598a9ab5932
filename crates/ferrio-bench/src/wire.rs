//! A lean Socket.IO v4 client over WebSocket, just enough to load a server: the upgrade
//! request, server frames read in batches from one buffer, masked client frames, Engine.IO
//! pings answered in place.
//!
//! The load generator's own cost per delivery bounds what it can measure, so nothing here
//! allocates per message: a batch of frames is parsed where it was read, and the caller sees
//! each Socket.IO text packet as a byte slice.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

/// Why a connection could not be opened or ended early; the label groups failures by cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The source address could not be bound (ports exhausted, address unavailable).
    Bind(io::ErrorKind),
    /// The TCP connection was refused or failed.
    Connect(io::ErrorKind),
    /// No answer within the handshake deadline.
    Timeout,
    /// The upgrade request was answered with something other than 101.
    Http(u16),
    /// The connection closed (or was reset) before the handshake completed.
    Closed,
    /// The server refused the namespace (CONNECT_ERROR).
    Refused,
    /// The server sent something this client does not understand.
    Protocol(&'static str),
}

impl Failure {
    /// A short stable label, as reported in the JSON line.
    pub fn cause(&self) -> String {
        match self {
            Failure::Bind(kind) => format!("bind: {kind}"),
            Failure::Connect(kind) => format!("connect: {kind}"),
            Failure::Timeout => "timeout".into(),
            Failure::Http(status) => format!("http {status}"),
            Failure::Closed => "closed".into(),
            Failure::Refused => "namespace refused".into(),
            Failure::Protocol(what) => format!("protocol: {what}"),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.cause())
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::TimedOut => Failure::Timeout,
            _ => Failure::Closed,
        }
    }
}

/// What to open: the server, the Engine.IO path and the CONNECT payload.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub target: SocketAddr,
    pub path: String,
    /// JSON sent with the CONNECT packet (`40{...}`), if any.
    pub auth: Option<String>,
    /// Deadline for the whole handshake (TCP, upgrade, Engine.IO open, namespace connect).
    pub handshake_timeout: Duration,
}

impl Endpoint {
    pub fn new(target: SocketAddr) -> Self {
        Self {
            target,
            path: "/socket.io/".into(),
            auth: None,
            handshake_timeout: Duration::from_secs(20),
        }
    }
}

/// The loopback source addresses connections are spread over, so that more than one
/// address's worth of ephemeral ports can be open or in TIME_WAIT at once.
#[derive(Debug, Clone, Copy)]
pub struct Sources {
    pub first: u8,
    pub count: u8,
}

impl Sources {
    /// The source address of connection `i`.
    pub fn of(&self, i: usize) -> Ipv4Addr {
        let offset = (i % usize::from(self.count.max(1))) as u8;
        Ipv4Addr::new(127, 0, 0, self.first.saturating_add(offset))
    }
}

/// What one call to [`Conn::drain`] saw besides the packets it handed over.
#[derive(Debug, Default, Clone, Copy)]
pub struct Drained {
    /// The server closed the WebSocket (close frame) or the Engine.IO session (`1`).
    pub closed: bool,
    /// The Engine.IO open packet arrived.
    pub opened: bool,
}

use ferrio_proto::ws::{self as frames, Opcode, Reader};

/// One Socket.IO session over a WebSocket on namespace `/`.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    rx: Vec<u8>,
    /// Parsed up to here in `rx`.
    read_at: usize,
    /// A text message that arrived in fragments, until its last fragment.
    fragments: Option<Vec<u8>>,
    tx: Vec<u8>,
    mask: u32,
    /// Bytes asked of the socket per read; the buffer is released when empty and larger.
    read_size: usize,
    /// The Engine.IO open packet arrived.
    opened: bool,
}

impl Conn {
    /// Opens a WebSocket from `source`, waits for the Engine.IO open packet, connects
    /// namespace `/` and waits for the server's CONNECT.
    pub async fn open(endpoint: &Endpoint, source: Ipv4Addr) -> Result<Conn, Failure> {
        match timeout(endpoint.handshake_timeout, Self::open_inner(endpoint, source)).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Timeout),
        }
    }

    async fn open_inner(endpoint: &Endpoint, source: Ipv4Addr) -> Result<Conn, Failure> {
        let socket = TcpSocket::new_v4().map_err(|e| Failure::Bind(e.kind()))?;
        socket
            .bind(SocketAddr::new(IpAddr::V4(source), 0))
            .map_err(|e| Failure::Bind(e.kind()))?;
        let stream = socket
            .connect(endpoint.target)
            .await
            .map_err(|e| Failure::Connect(e.kind()))?;
        let _ = stream.set_nodelay(true);
        let mut conn = Conn {
            stream,
            rx: Vec::with_capacity(1024),
            read_at: 0,
            fragments: None,
            tx: Vec::new(),
            mask: u32::from(source.octets()[3]).wrapping_mul(0x9E37_79B9) | 1,
            read_size: 1024,
            opened: false,
        };
        let request = format!(
            "GET {path}?EIO=4&transport=websocket HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n",
            path = endpoint.path,
            host = endpoint.target,
        );
        conn.stream.write_all(request.as_bytes()).await?;
        conn.read_upgrade_response().await?;

        let mut sent_connect = false;
        loop {
            if conn.read_at >= conn.rx.len() && conn.fill().await? == 0 {
                return Err(Failure::Closed);
            }
            // The namespace's answer: CONNECT (`0...`) or CONNECT_ERROR (`4...`).
            let mut answer = None;
            let drained = conn.drain(|packet| {
                if answer.is_none() {
                    answer = packet.first().copied();
                }
            })?;
            match answer {
                Some(b'0') => {
                    conn.flush().await?;
                    return Ok(conn);
                }
                Some(b'4') => return Err(Failure::Refused),
                _ => {}
            }
            if drained.closed {
                return Err(Failure::Closed);
            }
            if conn.opened && !sent_connect {
                sent_connect = true;
                match &endpoint.auth {
                    Some(auth) => conn.queue_packet(format!("0{auth}").as_bytes()),
                    None => conn.queue_packet(b"0"),
                }
            }
            conn.flush().await?;
        }
    }

    async fn read_upgrade_response(&mut self) -> Result<(), Failure> {
        loop {
            if let Some(end) = find(&self.rx, b"\r\n\r\n") {
                let head = &self.rx[..end];
                let status = head
                    .split(|&b| b == b' ')
                    .nth(1)
                    .and_then(|s| std::str::from_utf8(s).ok())
                    .and_then(|s| s.parse::<u16>().ok())
                    .ok_or(Failure::Protocol("bad HTTP status line"))?;
                if status != 101 {
                    return Err(Failure::Http(status));
                }
                self.read_at = end + 4;
                return Ok(());
            }
            if self.rx.len() > 16 * 1024 {
                return Err(Failure::Protocol("HTTP response head too large"));
            }
            if self.fill().await? == 0 {
                return Err(Failure::Closed);
            }
        }
    }

    /// Sets how many bytes each read asks for (a large read batches many deliveries).
    pub fn set_read_size(&mut self, bytes: usize) {
        self.read_size = bytes.max(64);
    }

    /// Reads whatever the socket has (waiting for at least one byte). Returns 0 at EOF.
    /// Cancel-safe: nothing is lost if the future is dropped before it completes.
    pub async fn fill(&mut self) -> io::Result<usize> {
        if self.read_at > 0 && self.read_at >= self.rx.len() {
            self.rx.clear();
            self.read_at = 0;
            if self.rx.capacity() > 4 * self.read_size {
                self.rx = Vec::new();
            }
        }
        self.rx.reserve(self.read_size);
        self.stream.read_buf(&mut self.rx).await
    }

    /// Parses every complete frame read so far. Each Socket.IO packet (an Engine.IO
    /// `message`, without its leading `4`) goes to `on_packet`; Engine.IO pings and WebSocket
    /// pings are answered into the write buffer (send them with [`Conn::flush`]).
    pub fn drain(&mut self, mut on_packet: impl FnMut(&[u8])) -> Result<Drained, Failure> {
        let mut drained = Drained::default();
        let mut replies = 0usize;
        let mut ws_pongs: Vec<Vec<u8>> = Vec::new();
        loop {
            let buf = &self.rx[self.read_at..];
            let Some((fin, opcode, start, len)) = frame_header(buf)? else {
                break;
            };
            let body = &buf[start..start + len];
            let whole: Option<&[u8]> = match opcode {
                Opcode::Text | Opcode::Binary if fin => Some(body),
                Opcode::Text | Opcode::Binary => {
                    self.fragments = Some(body.to_vec());
                    None
                }
                Opcode::Continuation => {
                    let Some(mut text) = self.fragments.take() else {
                        return Err(Failure::Protocol("continuation without a first fragment"));
                    };
                    text.extend_from_slice(body);
                    if fin {
                        engine_packet(&text, &mut on_packet, &mut replies, &mut drained);
                    } else {
                        self.fragments = Some(text);
                    }
                    None
                }
                Opcode::Close => {
                    drained.closed = true;
                    None
                }
                Opcode::Ping => {
                    ws_pongs.push(body.to_vec());
                    None
                }
                Opcode::Pong => None,
            };
            if let Some(body) = whole
                && opcode == Opcode::Text
            {
                engine_packet(body, &mut on_packet, &mut replies, &mut drained);
            }
            self.read_at += start + len;
        }
        self.opened |= drained.opened;
        for _ in 0..replies {
            self.queue_text(b"3");
        }
        for body in ws_pongs {
            self.queue_frame(Opcode::Pong, &body);
        }
        Ok(drained)
    }

    /// Queues a Socket.IO packet (`text` without the Engine.IO `4`, which is added).
    pub fn queue_packet(&mut self, packet: &[u8]) {
        self.queue_frame_parts(Opcode::Text, b"4", packet);
    }

    /// Queues an Engine.IO text packet as it is.
    pub fn queue_text(&mut self, text: &[u8]) {
        self.queue_frame_parts(Opcode::Text, b"", text);
    }

    fn queue_frame(&mut self, opcode: Opcode, body: &[u8]) {
        self.queue_frame_parts(opcode, b"", body);
    }

    /// Frames as `ferrio_proto::ws` writes a client's.
    fn queue_frame_parts(&mut self, opcode: Opcode, head: &[u8], body: &[u8]) {
        // A fresh key per frame, as clients must; cheap (xorshift) since nobody attacks a
        // benchmark's own loopback traffic.
        self.mask ^= self.mask << 13;
        self.mask ^= self.mask >> 17;
        self.mask ^= self.mask << 5;
        frames::write_masked_frame(opcode, &[head, body], self.mask.to_be_bytes(), &mut self.tx);
    }

    /// Whether frames wait in the write buffer.
    pub fn has_pending(&self) -> bool {
        !self.tx.is_empty()
    }

    /// Writes the queued frames.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.tx.is_empty() {
            return Ok(());
        }
        let result = self.stream.write_all(&self.tx).await;
        self.tx.clear();
        if self.tx.capacity() > 64 * 1024 {
            self.tx = Vec::new();
        }
        result
    }

    /// Says goodbye the way a client's `disconnect()` does: namespace DISCONNECT, then a
    /// WebSocket close frame, then the TCP connection ends.
    pub async fn close(mut self) {
        self.queue_packet(b"1");
        self.queue_frame(Opcode::Close, &frames::close_payload(1000));
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }
}

/// Handles one Engine.IO text packet: pings are answered, close noted, messages passed on.
fn engine_packet(text: &[u8], on_packet: &mut impl FnMut(&[u8]), replies: &mut usize, drained: &mut Drained) {
    match text.first() {
        Some(b'4') => on_packet(&text[1..]),
        Some(b'2') => *replies += 1,
        Some(b'1') => drained.closed = true,
        Some(b'0') => drained.opened = true,
        _ => {}
    }
}

/// Returns `(fin, opcode, body start, body length)` of the first frame of `buf` if it is
/// complete, the header read by `ferrio_proto::ws` as a client reads a server's frames.
fn frame_header(buf: &[u8]) -> Result<Option<(bool, Opcode, usize, usize)>, Failure> {
    let Some(h) = frames::read_header(buf, Reader::Client).map_err(|e| Failure::Protocol(e.label()))? else {
        return Ok(None);
    };
    let len = usize::try_from(h.len).unwrap_or(usize::MAX);
    if buf.len() - h.size < len {
        return Ok(None);
    }
    Ok(Some((h.fin, h.opcode, h.size, len)))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The sequence number and intended send time of a broadcast, `2["bcast",[7,1234,...]]`.
pub fn broadcast_stamp(packet: &[u8]) -> Option<(u64, u64)> {
    stamp(packet.strip_prefix(br#"2["bcast",["#)?)
}

/// The sequence number and intended send time an acknowledgement echoes, `312[[7,1234]]`.
pub fn ack_stamp(packet: &[u8]) -> Option<(u64, u64)> {
    let rest = packet.strip_prefix(b"3")?;
    let id = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    stamp(rest[id..].strip_prefix(b"[[")?)
}

fn stamp(s: &[u8]) -> Option<(u64, u64)> {
    let (a, used) = number(s)?;
    let (b, _) = number(s[used..].strip_prefix(b",")?)?;
    Some((a, b))
}

fn number(s: &[u8]) -> Option<(u64, usize)> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut n = 0u64;
    for &d in &s[..digits] {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some((n, digits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sequence_and_time_from_a_broadcast_and_an_ack() {
        assert_eq!(broadcast_stamp(br#"2["bcast",[7,1234]]"#), Some((7, 1234)));
        assert_eq!(broadcast_stamp(br#"2["bcast",[7,1234,"xx"]]"#), Some((7, 1234)));
        assert_eq!(ack_stamp(b"312[[7,1234]]"), Some((7, 1234)));
        assert_eq!(ack_stamp(b"30[[0,5]]"), Some((0, 5)));
        assert_eq!(broadcast_stamp(br#"2["other",[7,1]]"#), None);
    }

    #[test]
    fn frame_headers_wait_for_the_whole_frame() {
        assert_eq!(frame_header(&[0x81]).unwrap(), None);
        assert_eq!(frame_header(&[0x81, 3, b'a']).unwrap(), None);
        assert_eq!(
            frame_header(&[0x81, 1, b'a']).unwrap(),
            Some((true, Opcode::Text, 2, 1))
        );
        let mut long = vec![0x81, 126, 0, 200];
        long.extend(std::iter::repeat_n(b'x', 200));
        assert_eq!(frame_header(&long).unwrap(), Some((true, Opcode::Text, 4, 200)));
        assert!(frame_header(&[0x81, 0x81, 0, 0, 0, 0, 0]).is_err());
    }
}
