//! The byte stream under a WebSocket: the bare TCP stream when ferrio's own HTTP server
//! accepted it, or hyper's generic upgraded stream when an app's HTTP stack did.
//!
//! Taking the TCP stream back from hyper matters for memory: hyper's upgraded stream keeps
//! hyper's request read buffer (8–16 KB) alive, which would double what an idle connection
//! costs.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

#[derive(Debug)]
pub(crate) enum WsIo {
    Tcp(TcpStream),
    Upgraded(TokioIo<Upgraded>),
}

impl WsIo {
    /// Unwraps hyper's upgraded stream when it is a plain TCP stream; returns the bytes the
    /// client sent after its handshake, which the WebSocket must read first.
    pub(crate) fn from_upgraded(upgraded: Upgraded) -> (Self, Vec<u8>) {
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => (WsIo::Tcp(parts.io.into_inner()), parts.read_buf.to_vec()),
            Err(upgraded) => {
                tracing::debug!("upgraded stream is not a bare TCP stream; reading through hyper");
                (WsIo::Upgraded(TokioIo::new(upgraded)), Vec::new())
            }
        }
    }
}

impl AsyncRead for WsIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WsIo::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            WsIo::Upgraded(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WsIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WsIo::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            WsIo::Upgraded(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WsIo::Tcp(s) => Pin::new(s).poll_flush(cx),
            WsIo::Upgraded(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WsIo::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            WsIo::Upgraded(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
