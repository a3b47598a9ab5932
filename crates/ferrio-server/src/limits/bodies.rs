//! Request body bytes per client address. The library bounds each body (size, deadline,
//! minimum rate) and all of them together; this bounds what one address may hold at once, so
//! one client cannot take the whole shared budget from everyone else. Each body passes
//! through a [`MeteredBody`] that counts the bytes it has delivered against its address until
//! the request ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use parking_lot::Mutex;

/// Body bytes in flight per client address.
#[derive(Debug)]
pub struct BodyBytesPerIp {
    max: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

impl BodyBytesPerIp {
    /// At most `max` bytes per address (0: unbounded).
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            held: Mutex::new(HashMap::new()),
        })
    }

    fn take(&self, ip: IpAddr, n: usize) -> bool {
        let mut held = self.held.lock();
        let entry = held.entry(ip).or_default();
        if self.max > 0 && *entry + n > self.max {
            if *entry == 0 {
                held.remove(&ip);
            }
            return false;
        }
        *entry += n;
        true
    }

    fn give_back(&self, ip: IpAddr, n: usize) {
        let mut held = self.held.lock();
        if let Some(entry) = held.get_mut(&ip) {
            *entry = entry.saturating_sub(n);
            if *entry == 0 {
                held.remove(&ip);
            }
        }
    }

    /// Addresses holding body bytes now.
    pub fn addresses(&self) -> usize {
        self.held.lock().len()
    }
}

/// The error a [`MeteredBody`] ends with when its address holds too much.
#[derive(Debug)]
pub struct TooManyBodyBytes;

impl std::fmt::Display for TooManyBodyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("too many request body bytes in flight from this address")
    }
}

impl std::error::Error for TooManyBodyBytes {}

/// A request body whose bytes count against its client address while the request lives.
#[derive(Debug)]
pub struct MeteredBody<B> {
    inner: B,
    meter: Arc<BodyBytesPerIp>,
    ip: IpAddr,
    counted: usize,
}

impl<B> MeteredBody<B> {
    pub fn new(inner: B, meter: Arc<BodyBytesPerIp>, ip: IpAddr) -> Self {
        Self {
            inner,
            meter,
            ip,
            counted: 0,
        }
    }
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        self.meter.give_back(self.ip, self.counted);
    }
}

impl<B> Body for MeteredBody<B>
where
    B: Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, Buf::remaining);
                if n > 0 && !this.meter.take(this.ip, n) {
                    return Poll::Ready(Some(Err(Box::new(TooManyBodyBytes))));
                }
                this.counted += n;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn an_address_holds_at_most_its_share_until_its_requests_end() {
        let meter = BodyBytesPerIp::new(8);
        let ip: IpAddr = [127, 0, 0, 2].into();
        let first = MeteredBody::new(Full::new(Bytes::from_static(b"12345")), meter.clone(), ip);
        let first = first.collect().await;
        assert!(first.is_ok());
        // Collected and dropped: the bytes are given back.
        assert_eq!(meter.addresses(), 0);

        let mut held = MeteredBody::new(Full::new(Bytes::from_static(b"123456")), meter.clone(), ip);
        let frame = held.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap().len(), 6);
        let over = MeteredBody::new(Full::new(Bytes::from_static(b"123")), meter.clone(), ip);
        assert!(over.collect().await.is_err(), "6 + 3 is more than 8");
        let other = MeteredBody::new(
            Full::new(Bytes::from_static(b"123")),
            meter.clone(),
            [127, 0, 0, 3].into(),
        );
        assert!(other.collect().await.is_ok(), "another address has its own share");
        drop(held);
        assert_eq!(meter.addresses(), 0);
    }
}
