//! Request bodies read under a bound in size, time and shared memory.
//!
//! A peer decides how fast a body arrives. Left alone, a client can declare a large body, send
//! most of it and stop, holding a request, a descriptor and the bytes received for as long as
//! the TCP connection lives. [`read_body`] reads a body chunk by chunk and ends it when it is
//! larger than allowed, when it is not complete within its deadline, when it arrives slower than
//! a minimum rate, when the bytes held by every body in flight would pass a shared budget
//! ([`BodyBudget`]), or when the caller's own `cancel` future completes (the session it belongs
//! to closed).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::time::Instant;

/// How long a body is given before the minimum rate applies: a short body from a slow network
/// must not be judged on its first round trips.
const RATE_GRACE: Duration = Duration::from_secs(2);

/// The bounds one body is read under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Largest body, in bytes.
    pub max_bytes: usize,
    /// The whole body must have arrived within this long.
    pub timeout: Duration,
    /// After the first two seconds, a body still incomplete must have averaged at least this
    /// many bytes per second since it started (0: no minimum).
    pub min_rate: usize,
}

/// Why a body was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the body did not arrive within {0:?}")]
    TimedOut(Duration),
    #[error("the body arrived slower than {0} bytes per second")]
    TooSlow(usize),
    #[error("too many request bodies in flight on this server")]
    Busy,
    #[error("the request ended with what it belonged to")]
    Cancelled,
    #[error("the body could not be read: {0}")]
    Unreadable(String),
}

impl BodyError {
    /// A label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::TooLarge(_) => "too_large",
            Self::TimedOut(_) => "timed_out",
            Self::TooSlow(_) => "too_slow",
            Self::Busy => "busy",
            Self::Cancelled => "cancelled",
            Self::Unreadable(_) => "unreadable",
        }
    }

    /// The HTTP status a request refused for this reason is answered with.
    pub fn status(&self) -> http::StatusCode {
        match self {
            Self::TooLarge(_) => http::StatusCode::PAYLOAD_TOO_LARGE,
            Self::TimedOut(_) | Self::TooSlow(_) => http::StatusCode::REQUEST_TIMEOUT,
            Self::Busy => http::StatusCode::SERVICE_UNAVAILABLE,
            Self::Cancelled | Self::Unreadable(_) => http::StatusCode::BAD_REQUEST,
        }
    }
}

/// The bytes every body in flight holds, together, at most. Shared by every reader of one
/// server; a body that would take it past the cap is refused with [`BodyError::Busy`].
#[derive(Debug)]
pub struct BodyBudget {
    cap: usize,
    held: AtomicUsize,
}

impl BodyBudget {
    /// A budget of `cap` bytes (0: unbounded).
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap,
            held: AtomicUsize::new(0),
        })
    }

    /// The bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    fn take(&self, n: usize) -> bool {
        if self.cap == 0 {
            self.held.fetch_add(n, Ordering::Relaxed);
            return true;
        }
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(n).filter(|&total| total <= self.cap)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Bytes taken from a [`BodyBudget`], given back when dropped: a body's bytes count until the
/// caller is done with them.
#[derive(Debug)]
pub struct BudgetShare {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

impl BudgetShare {
    fn new(budget: Arc<BodyBudget>) -> Self {
        Self { budget, bytes: 0 }
    }

    fn grow(&mut self, n: usize) -> bool {
        if !self.budget.take(n) {
            return false;
        }
        self.bytes += n;
        true
    }
}

impl Drop for BudgetShare {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

/// The `Content-Length` a request declares, if any.
pub fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Reads `body` whole under `limits`, holding its bytes in `budget` until the returned share
/// is dropped. `declared` is the request's `Content-Length`: a body declared larger than
/// allowed is refused before a byte is read, and the buffer grows with what arrives, never
/// reserved up front beyond a small first chunk.
pub async fn read_body<B>(
    body: B,
    declared: Option<u64>,
    limits: BodyLimits,
    budget: &Arc<BodyBudget>,
    cancel: impl Future<Output = ()>,
) -> Result<(Bytes, BudgetShare), BodyError>
where
    B: http_body::Body<Data: Send>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if declared.is_some_and(|n| n > limits.max_bytes as u64) {
        return Err(BodyError::TooLarge(limits.max_bytes));
    }
    let started = Instant::now();
    let deadline = started + limits.timeout;
    let mut share = BudgetShare::new(budget.clone());
    let mut buf = BytesMut::new();
    tokio::pin!(body);
    tokio::pin!(cancel);
    loop {
        // The next rate check: the body must have averaged `min_rate` by then.
        let checkpoint = if limits.min_rate == 0 {
            deadline
        } else {
            let earned = Duration::from_secs_f64(buf.len() as f64 / limits.min_rate as f64);
            (started + RATE_GRACE + earned).min(deadline)
        };
        let frame = tokio::select! {
            biased;
            () = &mut cancel => return Err(BodyError::Cancelled),
            frame = body.frame() => frame,
            () = tokio::time::sleep_until(checkpoint) => {
                return Err(if checkpoint >= deadline {
                    BodyError::TimedOut(limits.timeout)
                } else {
                    BodyError::TooSlow(limits.min_rate)
                });
            }
        };
        let data = match frame {
            None => break,
            Some(Err(e)) => return Err(BodyError::Unreadable(e.into().to_string())),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                // Trailers carry nothing ferrio reads.
                Err(_) => continue,
            },
        };
        let chunk = bytes::Buf::remaining(&data);
        if buf.len() + chunk > limits.max_bytes {
            return Err(BodyError::TooLarge(limits.max_bytes));
        }
        if !share.grow(chunk) {
            return Err(BodyError::Busy);
        }
        bytes::BufMut::put(&mut buf, data);
    }
    Ok((buf.freeze(), share))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    fn limits() -> BodyLimits {
        BodyLimits {
            max_bytes: 100,
            timeout: Duration::from_secs(10),
            min_rate: 10,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_whole_body_is_read_and_counted_until_released() {
        let budget = BodyBudget::new(1000);
        let (bytes, share) = read_body(
            Full::new(Bytes::from_static(b"hello")),
            Some(5),
            limits(),
            &budget,
            std::future::pending(),
        )
        .await
        .unwrap();
        assert_eq!(&bytes[..], b"hello");
        assert_eq!(budget.held(), 5);
        drop(share);
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_declared_oversize_body_is_refused_unread() {
        let budget = BodyBudget::new(1000);
        let err = read_body(
            Full::new(Bytes::from_static(b"x")),
            Some(101),
            limits(),
            &budget,
            std::future::pending(),
        )
        .await
        .unwrap_err();
        assert_eq!(err, BodyError::TooLarge(100));
    }

    type Chunks = StreamBody<
        futures_util::stream::BoxStream<'static, Result<http_body::Frame<Bytes>, std::convert::Infallible>>,
    >;

    /// A body that sends `first` and then nothing, forever.
    fn stalled(first: &'static [u8]) -> Chunks {
        use futures_util::StreamExt;
        let s =
            futures_util::stream::once(async move { Ok(http_body::Frame::data(Bytes::from_static(first))) })
                .chain(futures_util::stream::pending());
        StreamBody::new(s.boxed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_ends_at_its_deadline_and_gives_its_bytes_back() {
        let budget = BodyBudget::new(1000);
        let limits = BodyLimits {
            min_rate: 0,
            ..limits()
        };
        let started = Instant::now();
        let err = read_body(stalled(b"abc"), Some(50), limits, &budget, std::future::pending())
            .await
            .unwrap_err();
        assert_eq!(err, BodyError::TimedOut(Duration::from_secs(10)));
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_below_the_minimum_rate_ends_early() {
        let budget = BodyBudget::new(1000);
        let started = Instant::now();
        let err = read_body(
            stalled(b"abc"),
            Some(50),
            limits(),
            &budget,
            std::future::pending(),
        )
        .await
        .unwrap_err();
        assert_eq!(err, BodyError::TooSlow(10));
        // 3 bytes at 10 B/s buy 0.3 s after the grace.
        assert_eq!(started.elapsed(), Duration::from_millis(2300));
    }

    #[tokio::test(start_paused = true)]
    async fn the_shared_budget_refuses_what_would_pass_it() {
        let budget = BodyBudget::new(4);
        let err = read_body(
            Full::new(Bytes::from_static(b"hello")),
            None,
            limits(),
            &budget,
            std::future::pending(),
        )
        .await
        .unwrap_err();
        assert_eq!(err, BodyError::Busy);
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_ends_the_read() {
        let budget = BodyBudget::new(1000);
        let cancel = tokio::time::sleep(Duration::from_secs(1));
        let err = read_body(stalled(b"abc"), Some(50), limits(), &budget, cancel)
            .await
            .unwrap_err();
        assert_eq!(err, BodyError::Cancelled);
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_undeclared_body_is_bounded_as_it_arrives() {
        let budget = BodyBudget::new(1000);
        let err = read_body(
            Full::new(Bytes::from(vec![b'x'; 101])),
            None,
            limits(),
            &budget,
            std::future::pending(),
        )
        .await
        .unwrap_err();
        assert_eq!(err, BodyError::TooLarge(100));
    }
}
