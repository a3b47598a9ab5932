//! The hot paths, one at a time, for an instruction count under
//! `valgrind --tool=callgrind --toggle-collect='*hot_<case>*'` (see `bench/callgrind-check`):
//! instruction counts do not depend on the machine's load, so a regression guard on them
//! does not flake on a busy 2-core runner.
//!
//! * `decode`: an Engine.IO message carrying a Socket.IO EVENT, decoded (`ferrio_proto`);
//! * `encode`: a broadcast encoded once (`ferrio::EncodedPacket`);
//! * `fanout`: one broadcast to 1,000 sockets of an in-process `Io` (the sockets connect
//!   over the Engine.IO polling transport through the `Io` service: no network).
//!
//! Each case runs its measured function `ITERATIONS` times (one broadcast each for fanout)
//! and prints how many times, so the check divides the count per operation.
//!
//!     hotpaths decode|encode|fanout

use std::time::Duration;

use bytes::Bytes;
use ferrio::proto::{engine, socket};
use ferrio::{Config, EncodedPacket, Io, Payload};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tower::ServiceExt;

const ITERATIONS: u32 = 1000;
const SOCKETS: usize = 1000;
const BROADCASTS: u32 = 10;
const EVENT: &str = r#"42["chat",{"room":"lobby","text":"hello, world","n":12345,"tags":["a","b"]}]"#;

#[inline(never)]
fn hot_decode(frames: &[&str]) -> usize {
    let mut decoder = socket::Decoder::new(10);
    let mut n = 0;
    for frame in frames {
        let Ok(engine::Packet::Message(engine::Data::Text(text))) = engine::decode_text(frame) else {
            panic!("not an Engine.IO text message: {frame}");
        };
        if let Ok(Some(packet)) = decoder.decode_text(text) {
            n += usize::from(packet.event_name().is_some());
            std::hint::black_box(packet);
        }
    }
    n
}

/// Encodes each payload (built beforehand, outside the count) as a broadcast of `bcast`.
#[inline(never)]
fn hot_encode(payloads: Vec<Payload>) -> usize {
    let mut encoded = 0;
    for payload in payloads {
        let packet = EncodedPacket::event("/", "bcast", payload, None);
        std::hint::black_box(&packet);
        encoded += 1;
    }
    encoded
}

#[inline(never)]
fn hot_fanout(ns: &ferrio::Namespace, broadcasts: u32) -> usize {
    let mut delivered = 0;
    for i in 0..broadcasts {
        delivered += ns.emit("bcast", json!([i, "hello, world"])).unwrap_or(0);
    }
    delivered
}

async fn request(io: &Io, method: Method, query: &str, body: &'static str) -> String {
    let req = Request::builder()
        .method(method)
        .uri(format!("/socket.io/?EIO=4&transport=polling{query}"))
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap_or_else(|e| panic!("request: {e}"));
    let response = io.clone().oneshot(req).await.unwrap_or_else(|e| match e {});
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    String::from_utf8_lossy(&body).into_owned()
}

/// An `Io` with `SOCKETS` sockets connected to `/` over polling.
async fn io_with_sockets() -> (Io, ferrio::Namespace) {
    let config = Config {
        // Nothing expires while valgrind runs everything 50 times slower.
        ping_interval: Duration::from_secs(3600),
        ping_timeout: Duration::from_secs(3600),
        connect_timeout: Duration::from_secs(3600),
        ..Config::default()
    };
    let io = Io::builder(config).ns("/", |ns| ns).build();
    for _ in 0..SOCKETS {
        let open = request(&io, Method::GET, "", "").await;
        let sid = open
            .split("\"sid\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no sid in {open}"))
            .to_owned();
        let query: &'static str = Box::leak(format!("&sid={sid}").into_boxed_str());
        let posted = request(&io, Method::POST, query, "40").await;
        assert_eq!(posted, "ok", "POST 40");
    }
    let ns = io.of("/").unwrap_or_else(|| panic!("namespace / missing"));
    for _ in 0..1000 {
        if ns.socket_count() == SOCKETS {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(ns.socket_count(), SOCKETS, "sockets connected");
    (io, ns)
}

fn main() {
    let case = std::env::args().nth(1).unwrap_or_default();
    let (count, unit) = match case.as_str() {
        "decode" => {
            let frames = vec![EVENT; ITERATIONS as usize];
            let decoded = hot_decode(&frames);
            assert_eq!(decoded, ITERATIONS as usize);
            (ITERATIONS, "event decoded")
        }
        "encode" => {
            let payloads = (0..ITERATIONS)
                .map(|i| {
                    Payload::args(vec![
                        json!({"seq": i, "text": "hello, world", "tags": ["a", "b"]}),
                    ])
                })
                .collect();
            assert_eq!(hot_encode(payloads), ITERATIONS as usize);
            (ITERATIONS, "broadcast encoded")
        }
        "fanout" => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("runtime: {e}"));
            runtime.block_on(async {
                let (_io, ns) = io_with_sockets().await;
                // One broadcast outside the measurement: first-use allocations of the queues.
                warm_up_queues(&ns);
                let delivered = hot_fanout(&ns, BROADCASTS);
                assert_eq!(delivered, SOCKETS * BROADCASTS as usize);
            });
            (BROADCASTS, "broadcast to 1,000 sockets")
        }
        _ => {
            eprintln!("usage: hotpaths decode|encode|fanout");
            std::process::exit(2);
        }
    };
    #[allow(clippy::print_stdout)] // read by bench/callgrind-check
    {
        println!("{case} {count} ({unit})");
    }
}

fn warm_up_queues(ns: &ferrio::Namespace) {
    let _ = ns.emit("bcast", json!(["warm-up"]));
}
