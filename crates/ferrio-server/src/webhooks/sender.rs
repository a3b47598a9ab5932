//! The sender task: posts queued events in batches, in order, one request at a time; a batch
//! is retried with exponential backoff and jitter until it is delivered, refused for good, or
//! its retry time runs out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::{Map, Value};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::WebhookSettings;
use super::endpoint::{self, Endpoint};
use super::meters::{Attempt, EventMeters};
use super::queue::{self, Batch, Event, Queue};

/// Bytes of a delivery reply read (and ignored) so the connection can be reused.
const REPLY_READ_LIMIT: usize = 64 * 1024;

/// At most one log line per this for batches given up or refused.
const WARN_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct Counts {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub rejected: AtomicU64,
    pub dropped: AtomicU64,
}

/// How long and how often a batch is tried.
#[derive(Debug, Clone, Copy)]
struct RetryPolicy {
    give_up_after: Duration,
    backoff: ferrio::proto::backoff::Backoff,
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0 for the first): ferrio's backoff, doubling
    /// from `retry_backoff` up to `retry_backoff_max`, half of it either way at random so many
    /// nodes that saw the same failure do not come back at once. A `Retry-After` hint raises
    /// it, up to the cap.
    fn delay(&self, retry: u32, hint: Option<Duration>) -> Duration {
        let max = self.backoff.max;
        self.backoff
            .delay(retry, rand::random::<f64>())
            .max(hint.unwrap_or_default().min(max))
    }
}

/// What the hooks, the sender task and `flush` share.
#[derive(Debug)]
pub struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when an event is queued.
    queued: Notify,
    /// Signalled when a batch is settled (delivered or given up).
    settled: Notify,
    /// Events queued or being delivered.
    pub pending: AtomicUsize,
    pub counts: Counts,
    meters: EventMeters,
    endpoint: Endpoint,
    node: String,
    /// Random per process: `(instance, seq)` names an event uniquely across restarts.
    instance: String,
    batch_size: usize,
    batch_wait: Duration,
    timeout: Duration,
    retry: RetryPolicy,
    warn: Mutex<Option<Instant>>,
}

/// What became of a batch.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Delivered,
    /// Retry time ran out; the last attempt's result.
    Failed(Attempt),
    /// Refused with this status.
    Rejected(u16),
}

impl Shared {
    pub fn new(settings: &WebhookSettings, endpoint: Endpoint, node: String) -> Self {
        Self {
            queue: Mutex::new(Queue::new(settings.queue_capacity, settings.queue_max_bytes)),
            queued: Notify::new(),
            settled: Notify::new(),
            pending: AtomicUsize::new(0),
            counts: Counts::default(),
            meters: EventMeters::new(),
            endpoint,
            node,
            instance: format!("{:016x}", rand::random::<u64>()),
            batch_size: settings.batch_size.max(1),
            batch_wait: settings.batch_wait.0,
            timeout: settings.timeout.0,
            retry: RetryPolicy {
                give_up_after: settings.retry_for.0,
                backoff: ferrio::proto::backoff::Backoff::doubling(
                    settings.retry_backoff.0,
                    settings.retry_backoff_max.0,
                    0.5,
                ),
            },
            warn: Mutex::new(None),
        }
    }

    pub fn send(&self, kind: &'static str, fields: Map<String, Value>) -> bool {
        let time = u64::try_from(endpoint::unix_time().as_millis()).unwrap_or(u64::MAX);
        let size = queue::event_size(&fields);
        let pushed = {
            let mut queue = self.queue.lock();
            let pushed = queue.push(kind, time, fields, size);
            if pushed.is_ok() {
                // Counted before the sender can take it, so `pending` never goes below zero.
                self.pending.fetch_add(1, Ordering::AcqRel);
            }
            pushed
        };
        match pushed {
            Ok(()) => {
                self.meters.queue.increment(1.0);
                self.queued.notify_one();
                true
            }
            Err(to_log) => {
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                self.meters.dropped.increment(1);
                if to_log > 0 {
                    tracing::warn!(
                        dropped = to_log,
                        "webhook queue full: events dropped (the backend is slow or down)"
                    );
                }
                false
            }
        }
    }

    pub async fn flush(&self, deadline: Instant) -> usize {
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            let left = self.pending.load(Ordering::Acquire);
            if left == 0 {
                return 0;
            }
            tokio::select! {
                () = settled => {}
                () = tokio::time::sleep_until(deadline) => return self.pending.load(Ordering::Acquire),
            }
        }
    }

    async fn next_batch(&self) -> Vec<Event> {
        loop {
            if !self.queue.lock().is_empty() {
                break;
            }
            // `notify_one` leaves a permit when nobody waits, so an event queued between the
            // check and here still wakes us.
            self.queued.notified().await;
        }
        // Something is queued: give it `batch_wait` to become a full batch.
        let until = Instant::now() + self.batch_wait;
        while self.queue.lock().len() < self.batch_size {
            tokio::select! {
                () = self.queued.notified() => {}
                () = tokio::time::sleep_until(until) => break,
            }
        }
        self.queue.lock().take(self.batch_size)
    }

    /// Posts one batch until it is delivered, refused, or out of retry time.
    async fn deliver(&self, events: &[Event]) -> Outcome {
        let batch = Batch {
            kind: "events",
            node: &self.node,
            instance: &self.instance,
            events,
        };
        let body = Bytes::from(serde_json::to_vec(&batch).unwrap_or_default());
        let started = Instant::now();
        let mut retry = 0;
        loop {
            let sent = Instant::now();
            let (attempt, hint) = self.attempt(body.clone()).await;
            self.meters.seconds.record(sent.elapsed());
            self.meters.attempt(attempt);
            let status = match attempt {
                Attempt::Ok => return Outcome::Delivered,
                Attempt::Rejected => return Outcome::Rejected(hint.status),
                _ => hint.status,
            };
            let delay = self.retry.delay(retry, hint.retry_after);
            if started.elapsed() + delay > self.retry.give_up_after {
                return Outcome::Failed(attempt);
            }
            tracing::debug!(
                first_seq = events.first().map_or(0, |e| e.seq),
                events = events.len(),
                result = ?attempt,
                status,
                retry_in = ?delay,
                "webhook delivery failed; retrying"
            );
            tokio::time::sleep(delay).await;
            retry += 1;
        }
    }

    /// One request: what it came to, and the status and `Retry-After` it carried.
    async fn attempt(&self, body: Bytes) -> (Attempt, Hint) {
        let mut res = match self.endpoint.post(body, self.timeout).await {
            Ok(res) => res,
            Err(e) if e.is_timeout() => return (Attempt::Timeout, Hint::default()),
            Err(_) => return (Attempt::Unreachable, Hint::default()),
        };
        let status = res.status().as_u16();
        let hint = Hint {
            status,
            retry_after: res
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
                .map(Duration::from_secs),
        };
        let attempt = match status {
            200..=299 => {
                // The reply does not matter; reading it lets the connection be reused.
                let _ = endpoint::read_body(&mut res, REPLY_READ_LIMIT).await;
                Attempt::Ok
            }
            408 | 429 | 500..=599 => Attempt::Retryable,
            _ => Attempt::Rejected,
        };
        (attempt, hint)
    }

    fn settle(&self, events: &[Event], outcome: Outcome) {
        let n = events.len() as u64;
        match outcome {
            Outcome::Delivered => {
                self.counts.delivered.fetch_add(n, Ordering::Relaxed);
                self.meters.delivered.increment(n);
            }
            Outcome::Failed(last) => {
                self.counts.failed.fetch_add(n, Ordering::Relaxed);
                self.meters.failed.increment(n);
                if self.may_warn() {
                    tracing::warn!(
                        first_seq = events.first().map_or(0, |e| e.seq),
                        events = n,
                        last_result = ?last,
                        "webhook batch given up: retry time ran out"
                    );
                }
            }
            Outcome::Rejected(status) => {
                self.counts.rejected.fetch_add(n, Ordering::Relaxed);
                self.meters.rejected.increment(n);
                if self.may_warn() {
                    tracing::warn!(
                        first_seq = events.first().map_or(0, |e| e.seq),
                        events = n,
                        status,
                        "webhook batch refused by the backend; not retried"
                    );
                }
            }
        }
        self.meters.queue.decrement(n as f64);
        self.pending.fetch_sub(events.len(), Ordering::AcqRel);
        self.settled.notify_waiters();
    }

    fn may_warn(&self) -> bool {
        let now = Instant::now();
        let mut last = self.warn.lock();
        if last.is_some_and(|t| now.duration_since(t) < WARN_EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// What a reply said about the next try.
#[derive(Debug, Default, Clone, Copy)]
struct Hint {
    /// Zero when there was no reply.
    status: u16,
    retry_after: Option<Duration>,
}

/// The sender task: runs until the [`super::Webhooks`] is dropped.
pub async fn run(shared: Arc<Shared>) {
    loop {
        let batch = shared.next_batch().await;
        let outcome = shared.deliver(&batch).await;
        shared.settle(&batch, outcome);
    }
}
