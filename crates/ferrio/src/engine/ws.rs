//! A server WebSocket over a byte stream: [`ferrio_proto::ws::FrameReader`] for reading, an
//! output buffer for writing, and nothing allocated while the connection is idle.
//!
//! Reads go through a buffer on the stack; only a frame that arrived in part is copied to
//! the heap. The output buffer is released once it has been written out and the connection
//! has nothing more to send. An idle connection therefore holds no read or write buffer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use ferrio_proto::ws::{self, FrameReader, Message, Opcode, WsError};
use smallvec::SmallVec;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::ws_io::WsIo;

/// Bytes read from the socket per call.
const READ_CHUNK: usize = 4096;

/// Messages decoded from one read, kept on the stack in the common case.
pub(crate) type Messages = SmallVec<[Message; 4]>;

/// Why reading stopped.
#[derive(Debug)]
pub(crate) enum ReadEnd {
    /// The peer closed the TCP stream.
    Eof,
    Io(io::Error),
    /// The peer broke RFC 6455; the close frame to send has this code.
    Protocol(WsError),
}

#[derive(Debug)]
pub(crate) struct WsConn {
    io: WsIo,
    reader: FrameReader,
    /// Encoded frames waiting to be written, from `out_pos` on.
    out: Vec<u8>,
    out_pos: usize,
    /// A close frame was queued; nothing else may follow it.
    close_sent: bool,
    /// Bytes the client sent right after its handshake, read before the socket.
    pre_read: Vec<u8>,
}

impl WsConn {
    /// A connection whose client already sent `pre_read` (bytes that followed its handshake).
    pub(crate) fn new(io: WsIo, pre_read: Vec<u8>, max_message: usize) -> Self {
        Self {
            io,
            reader: FrameReader::new(max_message),
            out: Vec::new(),
            out_pos: 0,
            close_sent: false,
            pre_read,
        }
    }

    /// The largest message accepted from now on.
    pub(crate) fn set_max_message(&mut self, max: usize) {
        self.reader.set_max_message(max);
    }

    /// Reads once and decodes every message the bytes complete. `Ready(Ok)` with nothing in
    /// `out` means the bytes only advanced a partial frame.
    pub(crate) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Messages,
    ) -> Poll<Result<(), ReadEnd>> {
        if !self.pre_read.is_empty() {
            let early = std::mem::take(&mut self.pre_read);
            return Poll::Ready(
                self.reader
                    .feed(&early, |m| out.push(m))
                    .map_err(ReadEnd::Protocol),
            );
        }
        let mut chunk = [0u8; READ_CHUNK];
        let mut buf = ReadBuf::new(&mut chunk);
        match ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf)) {
            Err(e) => Poll::Ready(Err(ReadEnd::Io(e))),
            Ok(()) if buf.filled().is_empty() => Poll::Ready(Err(ReadEnd::Eof)),
            Ok(()) => Poll::Ready({
                crate::metrics::bytes_received(super::TransportKind::WebSocket, buf.filled().len());
                self.reader
                    .feed(buf.filled(), |m| out.push(m))
                    .map_err(ReadEnd::Protocol)
            }),
        }
    }

    /// Bytes queued and not yet written.
    pub(crate) fn buffered(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Queues a frame (ignored after a close frame).
    pub(crate) fn queue(&mut self, opcode: Opcode, payload: &[u8]) {
        if self.close_sent {
            return;
        }
        if self.out.is_empty() {
            self.out.reserve(payload.len() + ws::MAX_HEADER);
        }
        ws::write_frame(opcode, payload, &mut self.out);
        if opcode == Opcode::Close {
            self.close_sent = true;
        }
    }

    /// Queues a close frame: with `code`, or empty (the reference's `ws` sends none).
    pub(crate) fn queue_close(&mut self, code: Option<u16>) {
        // 1005, 1006, 1015 and unassigned codes must never be on the wire (RFC 6455 §7.4.1).
        // The reader refuses them from peers, so only a bug gets here; an empty close frame
        // still ends the handshake correctly.
        debug_assert!(
            code.is_none_or(ws::is_valid_close_code),
            "close code {code:?} may not be sent"
        );
        match code.filter(|&c| ws::is_valid_close_code(c)) {
            Some(code) => self.queue(Opcode::Close, &ws::close_payload(code)),
            None => self.queue(Opcode::Close, &[]),
        }
    }

    /// Writes what is queued. `Ready(Ok)` once everything is out.
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        self.out.clear();
        self.out_pos = 0;
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        Poll::Ready(Ok(()))
    }

    /// Closes the write side of the stream (after the close frame went out).
    pub(crate) fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    /// Frees the output buffer once it is empty: an idle connection keeps no buffer.
    pub(crate) fn release_idle(&mut self) {
        if self.out.is_empty() && self.out.capacity() > 0 {
            self.out = Vec::new();
        }
    }
}
