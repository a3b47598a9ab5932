//! Webhooks and RPC against a real HTTP backend in the test: signatures, sequence numbers and
//! batches, retries of a backend that fails, stalls or is down, `send` that never waits, and
//! RPC replies and failures. The backend verifies signatures the way docs/webhooks.md says.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use bytes::Bytes;
use ferrio_server::config::{List, Millis, Secs};
use ferrio_server::webhooks::{self, RpcError, WebhookSettings, WebhookStats, Webhooks};
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use parking_lot::{Mutex, MutexGuard};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::support::{STEP, TempDir};

pub const SECRET: &str = "webhook-secret-0123456789abcdef";

/// How the backend answers a request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// This status and body.
    With(u16, &'static str),
    /// Nothing for a minute (the client times out first).
    Stall,
}

pub const OK: Reply = Reply::With(200, r#"{"ok":true}"#);

/// One request as the backend saw it.
#[derive(Debug)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    /// `Null` when the body is not JSON.
    pub body: Value,
    /// The signature matches and the timestamp is within five minutes.
    pub signed: bool,
}

#[derive(Debug, Default)]
struct Recorder {
    requests: Mutex<Vec<Received>>,
    /// Answers for the next requests, in order; then `always`.
    next: Mutex<VecDeque<Reply>>,
    always: Mutex<Option<Reply>>,
    arrived: Notify,
}

impl Recorder {
    fn reply(&self) -> Reply {
        if let Some(reply) = self.next.lock().pop_front() {
            return reply;
        }
        self.always.lock().clone().unwrap_or(OK)
    }
}

/// An HTTP backend on 127.0.0.1 that records what it is sent; it can be taken down (its port
/// closed, open connections cut) and brought up again on the same port.
#[derive(Debug)]
pub struct Backend {
    addr: SocketAddr,
    recorder: Arc<Recorder>,
    server: Option<JoinHandle<()>>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Backend {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut backend = Self::at(listener.local_addr().unwrap());
        backend.serve(listener);
        backend
    }

    /// A backend whose port nothing listens on yet.
    pub async fn down() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::at(listener.local_addr().unwrap())
    }

    fn at(addr: SocketAddr) -> Self {
        Self {
            addr,
            recorder: Arc::new(Recorder::default()),
            server: None,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    pub async fn up(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }

    fn serve(&mut self, listener: TcpListener) {
        let recorder = self.recorder.clone();
        self.server = Some(tokio::spawn(async move {
            // Dropped with the task: aborting it cuts every connection too.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let recorder = recorder.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| answer(recorder.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        }));
    }

    pub fn reply_next(&self, replies: impl IntoIterator<Item = Reply>) {
        self.recorder.next.lock().extend(replies);
    }

    pub fn reply_always(&self, reply: Reply) {
        *self.recorder.always.lock() = Some(reply);
    }

    pub fn requests(&self) -> MutexGuard<'_, Vec<Received>> {
        self.recorder.requests.lock()
    }

    /// Waits (bounded) until `n` requests arrived.
    pub async fn wait_requests(&self, n: usize) {
        let deadline = Instant::now() + STEP;
        loop {
            let arrived = self.recorder.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if self.requests().len() >= n {
                return;
            }
            assert!(
                tokio::time::timeout_at(deadline, arrived).await.is_ok(),
                "{} requests arrived, not {n}",
                self.requests().len()
            );
        }
    }

    /// Every event delivered so far, in arrival order.
    pub fn events(&self) -> Vec<Value> {
        self.requests()
            .iter()
            .filter(|r| r.body["type"] == "events")
            .flat_map(|r| r.body["events"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    pub fn seqs(&self) -> Vec<u64> {
        self.events().iter().map(|e| e["seq"].as_u64().unwrap()).collect()
    }
}

async fn answer(
    recorder: Arc<Recorder>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let raw = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let reply = recorder.reply();
    recorder.requests.lock().push(Received {
        path: parts.uri.path().to_owned(),
        signed: verify(&parts.headers, &raw),
        headers: parts.headers,
        body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
    });
    recorder.arrived.notify_waiters();
    let (status, body) = match reply {
        Reply::With(status, body) => (status, body),
        Reply::Stall => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            (200, "{}")
        }
    };
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap())
}

/// What a backend does with a request: HMAC-SHA256 of `"{timestamp}.{body}"` compared in
/// constant time, and a timestamp no more than five minutes off.
fn verify(headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(timestamp), Some(signature)) = (header("x-ferrio-timestamp"), header("x-ferrio-signature"))
    else {
        return false;
    };
    let Ok(sent) = timestamp.parse::<u64>() else {
        return false;
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    if now.abs_diff(sent) > 300 {
        return false;
    }
    let Some(tag) = signature.strip_prefix("v1=").and_then(unhex) else {
        return false;
    };
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes());
    hmac::verify(&key, &signed, &tag).is_ok()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Settings for `url` with short waits.
fn settings(url: &str) -> WebhookSettings {
    WebhookSettings {
        url: Some(url.into()),
        secret: Some(SECRET.into()),
        timeout: Millis(Duration::from_secs(2)),
        retry_for: Secs(Duration::from_secs(10)),
        retry_backoff: Millis(Duration::from_millis(10)),
        retry_backoff_max: Millis(Duration::from_millis(50)),
        rpc_timeout: Millis(Duration::from_secs(2)),
        ..WebhookSettings::default()
    }
}

fn start(settings: &WebhookSettings) -> Arc<Webhooks> {
    Webhooks::start(settings, "node-a".into())
        .expect("starts")
        .expect("webhooks on")
}

fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn soon() -> Instant {
    Instant::now() + STEP
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test]
async fn events_are_signed_numbered_and_framed() {
    let backend = Backend::start().await;
    let hooks = start(&settings(&backend.url()));
    let before = unix_ms();
    assert!(hooks.send(
        "connection",
        fields(json!({ "socket": "s1", "ns": "/", "transport": "websocket" }))
    ));
    // Fields named like the frame's own are left out.
    assert!(hooks.send(
        "join",
        fields(json!({ "socket": "s1", "ns": "/", "room": "r", "seq": 99, "type": "x" }))
    ));
    assert_eq!(hooks.flush(soon()).await, 0);
    let after = unix_ms();

    let requests = backend.requests();
    assert_eq!(requests.len(), 1, "both events in one batch");
    let req = &requests[0];
    assert!(req.signed, "{:?}", req.headers);
    assert_eq!(req.path, "/hooks");
    assert_eq!(req.headers["content-type"], "application/json");
    let agent = req.headers["user-agent"].to_str().unwrap();
    assert_eq!(agent, format!("ferrio/{}", env!("CARGO_PKG_VERSION")));
    assert_eq!(req.body["type"], "events");
    assert_eq!(req.body["node"], "node-a");
    let instance = req.body["instance"].as_str().unwrap();
    assert!(instance.len() == 16 && instance.chars().all(|c| c.is_ascii_hexdigit()));

    let events = req.body["events"].as_array().unwrap();
    let first = events[0].as_object().unwrap();
    let keys: Vec<&str> = first.keys().map(String::as_str).collect();
    assert_eq!(keys, ["seq", "type", "time", "socket", "ns", "transport"]);
    assert_eq!(first["seq"], 1);
    assert_eq!(first["type"], "connection");
    let time = first["time"].as_u64().unwrap();
    assert!(
        before <= time && time <= after,
        "{time} not in {before}..={after}"
    );
    assert_eq!(
        events[1],
        json!({ "seq": 2, "type": "join", "time": events[1]["time"], "socket": "s1", "ns": "/", "room": "r" })
    );
    drop(requests);
    assert_eq!(
        hooks.stats(),
        WebhookStats {
            delivered: 2,
            ..WebhookStats::default()
        }
    );
}

#[tokio::test]
async fn a_backlog_goes_out_in_batches_of_batch_size_in_order() {
    let backend = Backend::start().await;
    let hooks = start(&WebhookSettings {
        batch_size: 100,
        ..settings(&backend.url())
    });
    // No await between the sends: the sender task has not run yet, so all 250 are queued.
    for i in 0..250 {
        assert!(hooks.send("event", fields(json!({ "i": i }))));
    }
    assert_eq!(hooks.flush(soon()).await, 0);
    let sizes: Vec<usize> = backend
        .requests()
        .iter()
        .map(|r| r.body["events"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [100, 100, 50]);
    assert!(backend.requests().iter().all(|r| r.signed));
    assert_eq!(backend.seqs(), (1..=250).collect::<Vec<_>>());
    let is: Vec<u64> = backend
        .events()
        .iter()
        .map(|e| e["i"].as_u64().unwrap())
        .collect();
    assert_eq!(is, (0..250).collect::<Vec<_>>());
}

/// Large events fill `queue_max_bytes` before `queue_capacity`: the next one is dropped (and
/// numbered), and delivery frees the room again.
#[tokio::test]
async fn the_queue_is_bounded_in_bytes_too() {
    let mut backend = Backend::down().await;
    let hooks = start(&WebhookSettings {
        queue_max_bytes: 10_000,
        ..settings(&backend.url())
    });
    let big = "x".repeat(3_000);
    for i in 0..3 {
        assert!(
            hooks.send("event", fields(json!({ "i": i, "data": big }))),
            "event {i} fits"
        );
    }
    assert!(
        !hooks.send("event", fields(json!({ "i": 3, "data": big }))),
        "the fourth does not"
    );
    assert!(
        hooks.send("event", fields(json!({ "i": 4 }))),
        "a small one still fits"
    );
    backend.up().await;
    assert_eq!(hooks.flush(soon()).await, 0);
    assert_eq!(backend.seqs(), [1, 2, 3, 5], "the dropped one is a gap");
    assert!(
        hooks.send("event", fields(json!({ "i": 5, "data": big }))),
        "room again"
    );
    assert_eq!(hooks.flush(soon()).await, 0);
    assert_eq!(hooks.stats().dropped, 1);
}

/// Large events make small batches: a request stays near 512 KiB (a larger event goes alone).
#[tokio::test]
async fn batches_stay_under_half_a_megabyte() {
    let backend = Backend::start().await;
    let hooks = start(&settings(&backend.url()));
    let big = "x".repeat(200_000);
    for i in 0..5 {
        assert!(hooks.send("event", fields(json!({ "i": i, "data": big }))));
    }
    assert!(hooks.send("event", fields(json!({ "i": 5, "data": "y".repeat(600_000) }))));
    assert!(hooks.send("event", fields(json!({ "i": 6 }))));
    assert_eq!(hooks.flush(soon()).await, 0);
    let sizes: Vec<usize> = backend
        .requests()
        .iter()
        .map(|r| r.body["events"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [2, 2, 1, 1, 1]);
    assert_eq!(backend.seqs(), (1..=7).collect::<Vec<_>>());
}

/// Events that trickle in within `batch_wait` of the first share one request; with no wait
/// the first goes out alone at once.
#[tokio::test]
async fn batch_wait_gathers_a_trickle_into_one_request() {
    for (wait, expected) in [
        (Duration::from_millis(500), vec![3]),
        (Duration::ZERO, vec![1, 2]),
    ] {
        let backend = Backend::start().await;
        let hooks = start(&WebhookSettings {
            batch_wait: Millis(wait),
            ..settings(&backend.url())
        });
        assert!(hooks.send("event", fields(json!({ "i": 0 }))));
        if wait.is_zero() {
            // The first request went out alone before the others are queued.
            backend.wait_requests(1).await;
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // No await between these two: they are queued together.
        assert!(hooks.send("event", fields(json!({ "i": 1 }))));
        assert!(hooks.send("event", fields(json!({ "i": 2 }))));
        let sizes: Vec<usize> = loop {
            let sizes: Vec<usize> = backend
                .requests()
                .iter()
                .map(|r| r.body["events"].as_array().map_or(0, Vec::len))
                .collect();
            if sizes.iter().sum::<usize>() >= 3 {
                break sizes;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(sizes, expected, "batch_wait {wait:?}");
    }
}

#[tokio::test]
async fn retryable_answers_are_retried_with_the_same_events() {
    for status in [500, 503, 408, 429] {
        let backend = Backend::start().await;
        backend.reply_next([Reply::With(status, "{}")]);
        let hooks = start(&settings(&backend.url()));
        hooks.send("connection", fields(json!({ "socket": "a" })));
        hooks.send("connection", fields(json!({ "socket": "b" })));
        assert_eq!(hooks.flush(soon()).await, 0, "status {status}");

        let requests = backend.requests();
        assert_eq!(requests.len(), 2, "status {status}: one failure, one retry");
        assert_eq!(
            requests[0].body, requests[1].body,
            "the retry carries the same batch"
        );
        assert!(requests.iter().all(|r| r.signed));
        drop(requests);
        assert_eq!(backend.seqs(), [1, 2, 1, 2], "status {status}");
        assert_eq!(hooks.stats().delivered, 2);
        assert_eq!(hooks.stats().failed, 0);
    }
}

#[tokio::test]
async fn a_stalled_backend_times_out_and_is_retried() {
    let backend = Backend::start().await;
    backend.reply_next([Reply::Stall]);
    let hooks = start(&WebhookSettings {
        timeout: Millis(Duration::from_millis(300)),
        ..settings(&backend.url())
    });
    hooks.send("leave", fields(json!({ "socket": "s1", "room": "r" })));
    assert_eq!(hooks.flush(soon()).await, 0);
    assert_eq!(backend.requests().len(), 2);
    assert_eq!(backend.seqs(), [1, 1]);
    assert_eq!(hooks.stats().delivered, 1);
}

#[tokio::test]
async fn a_down_backend_never_blocks_send_and_delivery_resumes() {
    let mut backend = Backend::down().await;
    let hooks = start(&WebhookSettings {
        queue_capacity: 1000,
        retry_for: Secs(Duration::from_secs(30)),
        ..settings(&backend.url())
    });
    let started = Instant::now();
    // No await in the loop: `send` cannot wait on anything.
    let accepted = (0..50_000)
        .filter(|i| hooks.send("event", fields(json!({ "i": i }))))
        .count();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(accepted, 1000, "the queue holds 1000");
    let stats = hooks.stats();
    assert_eq!((stats.pending, stats.dropped), (1000, 49_000));

    // Down: nothing is delivered (the sender retries meanwhile).
    assert_eq!(
        hooks.flush(Instant::now() + Duration::from_millis(200)).await,
        1000
    );

    backend.up().await;
    assert_eq!(hooks.flush(soon()).await, 0);
    assert_eq!(backend.seqs(), (1..=1000).collect::<Vec<_>>());
    // The dropped events' numbers are skipped: the backend sees the gap.
    hooks.send("event", fields(json!({ "i": "after" })));
    assert_eq!(hooks.flush(soon()).await, 0);
    assert_eq!(backend.seqs().last(), Some(&50_001));
    let stats = hooks.stats();
    assert_eq!((stats.delivered, stats.failed, stats.pending), (1001, 0, 0));
}

#[tokio::test]
async fn a_refusal_is_not_retried_and_the_sender_moves_on() {
    let backend = Backend::start().await;
    backend.reply_next([Reply::With(400, r#"{"error":"no"}"#)]);
    let hooks = start(&settings(&backend.url()));
    hooks.send("connection", fields(json!({ "socket": "a" })));
    assert_eq!(hooks.flush(soon()).await, 0);
    assert_eq!(backend.requests().len(), 1);
    assert_eq!(hooks.stats().rejected, 1);

    hooks.send(
        "disconnection",
        fields(json!({ "socket": "a", "reason": "client namespace disconnect" })),
    );
    assert_eq!(hooks.flush(soon()).await, 0);
    assert_eq!(backend.seqs(), [1, 2]);
    let stats = hooks.stats();
    assert_eq!((stats.delivered, stats.rejected, stats.failed), (1, 1, 0));
}

#[tokio::test]
async fn a_batch_is_given_up_when_its_retry_time_runs_out() {
    let backend = Backend::down().await;
    let hooks = start(&WebhookSettings {
        retry_for: Secs(Duration::from_millis(300)),
        ..settings(&backend.url())
    });
    for _ in 0..3 {
        hooks.send("connection", fields(json!({})));
    }
    assert_eq!(hooks.flush(soon()).await, 0);
    let stats = hooks.stats();
    assert_eq!((stats.failed, stats.delivered, stats.pending), (3, 0, 0));
}

#[tokio::test]
async fn flush_returns_at_its_deadline_when_the_backend_is_down() {
    let backend = Backend::down().await;
    let hooks = start(&WebhookSettings {
        retry_for: Secs(Duration::from_secs(60)),
        ..settings(&backend.url())
    });
    assert_eq!(hooks.flush(soon()).await, 0, "nothing queued");
    for _ in 0..5 {
        hooks.send("connection", fields(json!({})));
    }
    let started = Instant::now();
    assert_eq!(hooks.flush(started + Duration::from_millis(300)).await, 5);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_secret_file_signs_like_the_secret() {
    let dir = TempDir::new("webhooks");
    let path = dir.write("secret", &format!("{SECRET}\n"));
    let backend = Backend::start().await;
    let hooks = start(&WebhookSettings {
        secret: None,
        secret_file: Some(path),
        ..settings(&backend.url())
    });
    hooks.send("connection", fields(json!({})));
    assert_eq!(hooks.flush(soon()).await, 0);
    assert!(backend.requests()[0].signed);
}

#[tokio::test]
async fn rpc_reply_becomes_the_value() {
    let backend = Backend::start().await;
    backend.reply_always(Reply::With(200, r#"{"ok":true,"n":42}"#));
    let hooks = start(&WebhookSettings {
        rpc_url: Some(format!("http://{}/rpc", backend.addr)),
        ..settings(&backend.url())
    });
    let body = json!({ "socket": "s1", "ns": "/", "event": "buy", "args": [1, "x"], "type": "no" });
    assert_eq!(hooks.rpc(body).await, Ok(json!({ "ok": true, "n": 42 })));
    let requests = backend.requests();
    let req = &requests[0];
    assert!(req.signed);
    assert_eq!(req.path, "/rpc");
    assert_eq!(req.headers["content-type"], "application/json");
    let mut body = req.body.clone();
    let id = body.as_object_mut().unwrap().remove("id").expect("an id");
    let (instance, n) = id.as_str().unwrap().split_once('-').expect("instance-n");
    assert_eq!((instance.len(), n), (16, "1"), "{id}");
    assert_eq!(
        body,
        json!({ "type": "rpc", "node": "node-a", "socket": "s1", "ns": "/", "event": "buy", "args": [1, "x"] })
    );
    let keys: Vec<&str> = req.body.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys[..3], ["type", "node", "id"]);
}

#[tokio::test]
async fn rpc_failures_name_their_cause() {
    let backend = Backend::start().await;
    let hooks = start(&WebhookSettings {
        rpc_timeout: Millis(Duration::from_millis(300)),
        ..settings(&backend.url())
    });
    let call = || hooks.rpc(json!({ "event": "buy" }));

    backend.reply_next([Reply::With(500, "{}")]);
    assert_eq!(call().await, Err(RpcError::Status(500)));
    backend.reply_next([Reply::With(200, "not json")]);
    assert_eq!(call().await, Err(RpcError::BadReply));
    backend.reply_next([Reply::With(200, "")]);
    assert_eq!(call().await, Err(RpcError::BadReply));

    backend.reply_next([Reply::Stall]);
    let started = Instant::now();
    assert_eq!(call().await, Err(RpcError::Timeout));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(backend.requests().len(), 4, "RPCs are not retried");

    let down = Backend::down().await;
    let hooks = start(&settings(&down.url()));
    assert_eq!(hooks.rpc(json!({})).await, Err(RpcError::Unreachable));
}

#[tokio::test]
async fn rpcs_beyond_the_concurrency_limit_are_busy() {
    let backend = Backend::start().await;
    backend.reply_always(Reply::Stall);
    let hooks = start(&WebhookSettings {
        rpc_concurrency: 2,
        rpc_timeout: Millis(Duration::from_millis(500)),
        ..settings(&backend.url())
    });
    let in_flight: Vec<_> = (0..2)
        .map(|n| {
            let hooks = hooks.clone();
            tokio::spawn(async move { hooks.rpc(json!({ "n": n })).await })
        })
        .collect();
    backend.wait_requests(2).await;
    assert_eq!(hooks.rpc(json!({ "n": 3 })).await, Err(RpcError::Busy));
    assert_eq!(backend.requests().len(), 2, "a busy RPC is not sent");
    for call in in_flight {
        assert_eq!(call.await.unwrap(), Err(RpcError::Timeout));
    }
    // Their slots are free again.
    backend.reply_always(Reply::With(200, "true"));
    assert_eq!(hooks.rpc(json!({})).await, Ok(json!(true)));
}

#[test]
fn rpc_errors_have_ack_codes() {
    let codes = [
        RpcError::Timeout,
        RpcError::Status(502),
        RpcError::Unreachable,
        RpcError::BadReply,
        RpcError::Busy,
    ]
    .map(|e| e.code());
    assert_eq!(
        codes,
        [
            "rpc_timeout",
            "rpc_failed",
            "rpc_unavailable",
            "rpc_bad_reply",
            "rpc_busy"
        ]
    );
}

#[tokio::test]
async fn off_without_a_url_and_wants_follows_events() {
    assert!(
        Webhooks::start(&WebhookSettings::default(), "n".into())
            .expect("starts")
            .is_none()
    );
    let hooks = start(&WebhookSettings {
        events: List::of(&["connection", "leave"]),
        ..settings("http://127.0.0.1:9/hooks")
    });
    assert!(hooks.wants("connection") && hooks.wants("leave"));
    assert!(!hooks.wants("join") && !hooks.wants("disconnection") && !hooks.wants("event"));
}

#[test]
fn settings_read_from_toml_with_defaults() {
    let parsed: WebhookSettings = toml::from_str(
        "url = \"https://hooks.example.com/ferrio\"\nsecret = \"0123456789abcdef\"\n\
         events = \"connection, join\"\nretry_for = 30\nrpc_timeout = \"2s\"\n",
    )
    .unwrap();
    assert_eq!(parsed.events, List::of(&["connection", "join"]));
    assert_eq!(parsed.retry_for, Secs(Duration::from_secs(30)));
    assert_eq!(parsed.rpc_timeout, Millis(Duration::from_secs(2)));
    let defaults = WebhookSettings::default();
    assert_eq!(parsed.timeout, Millis(Duration::from_secs(5)));
    assert_eq!(
        (parsed.queue_capacity, parsed.batch_size, parsed.rpc_concurrency),
        (10_000, 100, 256)
    );
    assert_eq!(parsed.retry_backoff, defaults.retry_backoff);
    assert_eq!(parsed.retry_backoff_max, Millis(Duration::from_secs(10)));
    assert_eq!(parsed.rpc_url, None);
    assert_eq!(webhooks::validate(&parsed), Ok(()));
}

#[test]
fn validation_names_the_key() {
    let dir = TempDir::new("webhooks-validate");
    let short_file = dir.write("short", "tooshort\n");
    let good = settings("https://hooks.example.com/x");
    assert_eq!(webhooks::validate(&good), Ok(()));
    assert_eq!(webhooks::validate(&WebhookSettings::default()), Ok(()), "off");

    let cases: Vec<(WebhookSettings, &str)> = vec![
        (
            WebhookSettings {
                secret: None,
                ..good.clone()
            },
            "webhooks.secret",
        ),
        (
            WebhookSettings {
                secret: Some("short".into()),
                ..good.clone()
            },
            "webhooks.secret",
        ),
        (
            WebhookSettings {
                secret: None,
                secret_file: Some(short_file),
                ..good.clone()
            },
            "webhooks.secret_file",
        ),
        (
            WebhookSettings {
                secret: None,
                secret_file: Some(dir.0.join("missing")),
                ..good.clone()
            },
            "webhooks.secret_file",
        ),
        (
            WebhookSettings {
                secret_file: Some(dir.0.join("missing")),
                ..good.clone()
            },
            "webhooks.secret_file",
        ),
        (
            WebhookSettings {
                url: Some("ftp://example.com/".into()),
                ..good.clone()
            },
            "webhooks.url",
        ),
        (
            WebhookSettings {
                rpc_url: Some("not a url".into()),
                ..good.clone()
            },
            "webhooks.rpc_url",
        ),
        (
            WebhookSettings {
                rpc_url: Some("http://example.com/rpc".into()),
                ..WebhookSettings::default()
            },
            "webhooks.rpc_url",
        ),
        (
            WebhookSettings {
                events: List::of(&["connection", "message"]),
                ..good.clone()
            },
            "webhooks.events",
        ),
        (
            WebhookSettings {
                timeout: Millis(Duration::ZERO),
                ..good.clone()
            },
            "webhooks.timeout",
        ),
        (
            WebhookSettings {
                retry_backoff_max: Millis(Duration::from_millis(5)),
                ..good.clone()
            },
            "webhooks.retry_backoff_max",
        ),
        (
            WebhookSettings {
                queue_capacity: 0,
                ..good.clone()
            },
            "webhooks.queue_capacity",
        ),
        (
            WebhookSettings {
                batch_size: 0,
                ..good.clone()
            },
            "webhooks.batch_size",
        ),
        (
            WebhookSettings {
                rpc_concurrency: 0,
                ..good.clone()
            },
            "webhooks.rpc_concurrency",
        ),
    ];
    for (settings, key) in cases {
        match webhooks::validate(&settings) {
            Err((k, _)) => assert_eq!(k, key, "{settings:?}"),
            Ok(()) => panic!("accepted, expected an error on {key}: {settings:?}"),
        }
    }
}

#[tokio::test]
async fn metrics_count_events_requests_and_rpcs() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let backend = Backend::start().await;
    backend.reply_next([Reply::With(503, "{}"), OK, Reply::With(422, "{}")]);
    // The handles are taken at start, so the recorder in scope then is the one counted in.
    let hooks = metrics::with_local_recorder(&recorder, || {
        webhooks::describe();
        start(&WebhookSettings {
            queue_capacity: 1,
            ..settings(&backend.url())
        })
    });
    assert!(hooks.send("connection", fields(json!({}))));
    assert!(
        !hooks.send("connection", fields(json!({}))),
        "the queue holds one"
    );
    assert_eq!(hooks.flush(soon()).await, 0);
    hooks.send("connection", fields(json!({})));
    assert_eq!(hooks.flush(soon()).await, 0);
    assert_eq!(hooks.rpc(json!({})).await, Ok(json!({ "ok": true })));

    let text = metrics.render();
    for line in [
        "ferrio_webhook_events_total{result=\"delivered\"} 1",
        "ferrio_webhook_events_total{result=\"rejected\"} 1",
        "ferrio_webhook_events_total{result=\"dropped\"} 1",
        "ferrio_webhook_events_total{result=\"failed\"} 0",
        "ferrio_webhook_requests_total{result=\"ok\"} 1",
        "ferrio_webhook_requests_total{result=\"retryable\"} 1",
        "ferrio_webhook_requests_total{result=\"rejected\"} 1",
        "ferrio_webhook_requests_total{result=\"timeout\"} 0",
        "ferrio_webhook_seconds_count 3",
        "ferrio_webhook_queue 0",
        "ferrio_rpc_requests_total{result=\"ok\"} 1",
        "ferrio_rpc_requests_total{result=\"busy\"} 0",
        "ferrio_rpc_seconds_count 1",
        "# HELP ferrio_webhook_events_total Webhook events by what became of them",
    ] {
        assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
    }
}
