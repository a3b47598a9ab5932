//! `fanout`: N subscribers and one publisher. The publisher emits `bcast` with
//! `[sequence, intended send time in µs]`; the server (peer contract) emits it to every
//! connected socket.
//!
//! Open loop: with `--rate` message k is due at `start + k / rate`, and its latency counts
//! from then even when the publisher runs late, so a stalled server cannot hide its stall
//! (no coordinated omission). With `--window` the publisher keeps at most that many messages
//! not yet delivered to every subscriber, each due the moment the window lets it go.
//!
//! Each subscriber keeps a bitmap of the sequence numbers it saw: a number seen twice is a
//! duplicate, one below the highest seen so far is out of order, one never seen is lost.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};

use crate::report::{Cpu, latency_histogram, latency_json, latency_line};
use crate::wire::{Conn, broadcast_stamp};
use crate::{Common, Failures, Ramp, connect_many, count_failure};

#[derive(Args, Debug)]
pub struct FanoutArgs {
    #[command(flatten)]
    common: Common,
    /// Subscribers.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Messages to publish at most.
    #[arg(long, default_value_t = 10_000)]
    messages: u64,
    /// Publish for at most this many seconds.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Messages per second, open loop.
    #[arg(long, conflicts_with = "window")]
    rate: Option<f64>,
    /// Messages not yet delivered to every subscriber, at most (as fast as that allows).
    #[arg(long)]
    window: Option<u64>,
    /// Extra payload bytes per message (a string after the stamp).
    #[arg(long, default_value_t = 0)]
    payload_bytes: usize,
    /// Publish through this server instead of --target (another node of a cluster).
    #[arg(long)]
    publish_target: Option<SocketAddr>,
    /// Use the built-in events of `ferrio serve` instead of the peer contract: subscribers
    /// `join` this room, the publisher sends `publish` `{room, event: "bcast", data}`.
    #[arg(long)]
    room: Option<String>,
    /// Seconds to wait for outstanding deliveries once publishing ends.
    #[arg(long, default_value_t = 30.0)]
    drain: f64,
}

/// Figures every subscriber adds to.
struct Tally {
    latency: Histogram<u64>,
    /// Deliveries of each message, duplicates not counted.
    per_message: Vec<u32>,
    /// Messages every subscriber has received.
    complete: u64,
    distinct: u64,
    duplicates: u64,
    out_of_order: u64,
    last_delivery_us: u64,
}

pub async fn run(args: FanoutArgs) {
    let common = &args.common;
    let endpoint = common.endpoint();
    let server = common.server();
    let origin = Instant::now();
    let failures = Failures::default();
    let messages = match args.rate {
        Some(rate) => args.messages.min((rate * args.duration).ceil() as u64),
        None => args.messages,
    };
    let tally = Rc::new(RefCell::new(Tally {
        latency: latency_histogram(),
        per_message: vec![0; messages as usize],
        complete: 0,
        distinct: 0,
        duplicates: 0,
        out_of_order: 0,
        last_delivery_us: 0,
    }));
    let subscribed = Rc::new(Cell::new(0usize));
    let joined = Rc::new(Cell::new(0usize));
    let room: Option<Rc<str>> = args.room.as_deref().map(Rc::from);
    let dropped = Rc::new(Cell::new(0usize));
    let progress = Rc::new(Notify::new());

    let bar = common.progress(args.subscribers as u64, "subscribe");
    {
        let (tally, subscribed, joined, dropped, progress, room) = (
            tally.clone(),
            subscribed.clone(),
            joined.clone(),
            dropped.clone(),
            progress.clone(),
            room.clone(),
        );
        connect_many(
            &endpoint,
            common.sources(),
            Ramp {
                count: args.subscribers,
                rate: 0.0,
                concurrency: 64,
            },
            &failures,
            &bar,
            move |_, conn, _| {
                subscribed.set(subscribed.get() + 1);
                subscriber(
                    conn,
                    origin,
                    messages,
                    room.clone(),
                    Shared {
                        tally: tally.clone(),
                        subscribed: subscribed.clone(),
                        joined: joined.clone(),
                        dropped: dropped.clone(),
                        progress: progress.clone(),
                    },
                )
            },
        )
        .await;
    }
    bar.finish_and_clear();
    let subscribers = subscribed.get();
    if subscribers == 0 {
        eprintln!("fanout: no subscriber connected: {:?}", failures.borrow());
        std::process::exit(1);
    }

    let mut publish_endpoint = endpoint.clone();
    if let Some(addr) = args.publish_target {
        publish_endpoint.target = addr;
    }
    let mut publisher = match Conn::open(&publish_endpoint, common.sources().of(args.subscribers)).await {
        Ok(conn) => conn,
        Err(failure) => {
            count_failure(&failures, &failure);
            eprintln!("fanout: the publisher could not connect: {failure}");
            std::process::exit(1);
        }
    };
    publisher.set_read_size(64 * 1024);
    // Every subscriber in its room (built-in events) before the first message.
    let join_deadline = Instant::now() + Duration::from_secs(10);
    while room.is_some() && joined.get() < subscribers && Instant::now() < join_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The publisher's own copies (when it shares the subscribers' server) only fill its
    // buffer; give the server a moment to register the last subscribers' namespaces.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let pad = "x".repeat(args.payload_bytes);
    let bar = common.progress(messages, "publish");
    let server_cpu0 = server.and_then(|s| s.cpu());
    let cpu0 = Cpu::own();
    let start = Instant::now();
    let start_us = start.duration_since(origin).as_micros() as u64;
    let deadline = start + Duration::from_secs_f64(args.duration);
    let window = args
        .window
        .unwrap_or(if args.rate.is_some() { u64::MAX } else { 100 });
    let mut sent = 0u64;
    let mut packet = Vec::with_capacity(64 + pad.len());
    let mut publisher_closed = false;
    while sent < messages && Instant::now() < deadline && !publisher_closed {
        let now = Instant::now();
        // Queue every message that is due (all of them at once if the publisher fell behind).
        while sent < messages {
            let due = match args.rate {
                Some(rate) => start + Duration::from_secs_f64(sent as f64 / rate),
                None => now,
            };
            if due > now || sent - tally.borrow().complete >= window {
                break;
            }
            let intended_us = due.duration_since(origin).as_micros() as u64;
            let data = if pad.is_empty() {
                format!("[{sent},{intended_us}]")
            } else {
                format!(r#"[{sent},{intended_us},"{pad}"]"#)
            };
            packet.clear();
            match &room {
                None => packet.extend_from_slice(format!(r#"2["bcast",{data}]"#).as_bytes()),
                Some(room) => packet.extend_from_slice(
                    format!(r#"2["publish",{{"room":"{room}","event":"bcast","data":{data}}}]"#).as_bytes(),
                ),
            }
            publisher.queue_packet(&packet);
            sent += 1;
        }
        if publisher.has_pending() && publisher.flush().await.is_err() {
            publisher_closed = true;
            break;
        }
        if sent.is_multiple_of(64) {
            bar.set_position(sent);
        }
        if sent >= messages {
            break;
        }
        let next_due = args
            .rate
            .map(|rate| start + Duration::from_secs_f64(sent as f64 / rate));
        tokio::select! {
            biased;
            read = publisher.fill() => match read {
                Ok(n) if n > 0 => match publisher.drain(|_| {}) {
                    Ok(d) if !d.closed => {}
                    _ => publisher_closed = true,
                },
                _ => publisher_closed = true,
            },
            _ = progress.notified(), if next_due.is_none() => {}
            _ = sleep_until(next_due.unwrap_or(deadline)), if next_due.is_some() => {}
            _ = sleep_until(deadline) => {}
        }
    }
    let publish_s = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    if publisher_closed {
        eprintln!("fanout: the server closed the publisher's connection");
    }

    // Wait for what is still on its way, reading the publisher's copies meanwhile.
    let expected = sent * subscribers as u64;
    let drain_until = Instant::now() + Duration::from_secs_f64(args.drain);
    let bar = common.progress(expected, "deliver");
    while tally.borrow().distinct < expected && Instant::now() < drain_until {
        bar.set_position(tally.borrow().distinct);
        tokio::select! {
            read = publisher.fill(), if !publisher_closed => match read {
                Ok(n) if n > 0 => {
                    if publisher.drain(|_| {}).is_err() {
                        publisher_closed = true;
                    }
                    let _ = publisher.flush().await;
                }
                _ => publisher_closed = true,
            },
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    bar.finish_and_clear();
    let server_split = server
        .and_then(|s| s.cpu())
        .zip(server_cpu0)
        .map(|(b, a)| b.since(a));
    let server_cpu = server_split.map(Cpu::total);
    let cpu = Cpu::own().since(cpu0);
    let tally = tally.borrow();
    let span_s = (tally.last_delivery_us.saturating_sub(start_us)) as f64 / 1e6;
    let rate = tally.distinct as f64 / span_s.max(1e-9);
    let lost = expected - tally.distinct.min(expected);
    let per_server_cpu_s = server_cpu.map(|c| tally.distinct as f64 / c.max(1e-9));
    let mode = match (args.rate, args.window) {
        (Some(rate), _) => format!("{rate} msg/s"),
        _ => format!("window {window}"),
    };
    eprintln!(
        "fanout ({mode}): {subscribers} subscribers, {sent} messages in {publish_s:.2} s; {} of {expected} deliveries in {span_s:.2} s = {rate:.0}/s; lost {lost}, duplicated {}, out of order {}; subscribers dropped {}",
        tally.distinct,
        tally.duplicates,
        tally.out_of_order,
        dropped.get(),
    );
    eprintln!("{}", latency_line("delivery latency", &tally.latency));
    eprintln!(
        "server CPU {} s = {} deliveries per server CPU second; load generator CPU {:.2} s ({:.2} µs per delivery)",
        server_cpu.map_or("?".into(), |c| format!("{c:.2}")),
        per_server_cpu_s.map_or("?".into(), |r| format!("{r:.0}")),
        cpu.total(),
        cpu.total() * 1e6 / tally.distinct.max(1) as f64,
    );
    let report = json!({
        "scenario": "fanout",
        "label": common.label("fanout"),
        "target": common.target.to_string(),
        "publish_target": args.publish_target.unwrap_or(common.target).to_string(),
        "mode": if args.rate.is_some() { "rate" } else { "window" },
        "rate": args.rate,
        "window": if args.rate.is_some() { None } else { Some(window) },
        "subscribers": subscribers,
        "subscribers_failed": *failures.borrow(),
        "subscribers_dropped": dropped.get(),
        "payload_bytes": args.payload_bytes,
        "contract": if args.room.is_some() { "join/publish" } else { "bcast" },
        "messages": sent,
        "publish_s": publish_s,
        "expected": expected,
        "deliveries": tally.distinct,
        "lost": lost,
        "duplicated": tally.duplicates,
        "out_of_order": tally.out_of_order,
        "span_s": span_s,
        "deliveries_per_s": rate,
        "latency": latency_json(&tally.latency),
        "server_cpu_s": server_cpu,
        "server_cpu": server_split.map(Cpu::json),
        "deliveries_per_server_cpu_s": per_server_cpu_s,
        "loadgen_cpu": cpu.json(),
        "loadgen_cpu_us_per_delivery": cpu.total() * 1e6 / tally.distinct.max(1) as f64,
    });
    crate::finish(common, report);
}

/// What the subscribers share with the publisher.
struct Shared {
    tally: Rc<RefCell<Tally>>,
    subscribed: Rc<Cell<usize>>,
    joined: Rc<Cell<usize>>,
    dropped: Rc<Cell<usize>>,
    progress: Rc<Notify>,
}

/// Joins `room` if given, then reads deliveries until the connection ends.
async fn subscriber(mut conn: Conn, origin: Instant, messages: u64, room: Option<Rc<str>>, shared: Shared) {
    let Shared {
        tally,
        subscribed,
        joined,
        dropped,
        progress,
    } = shared;
    conn.set_read_size(64 * 1024);
    if let Some(room) = &room {
        conn.queue_packet(format!(r#"20["join","{room}"]"#).as_bytes());
    } else {
        joined.set(joined.get() + 1);
    }
    let mut seen = vec![0u64; messages.div_ceil(64) as usize];
    let mut highest: Option<u64> = None;
    loop {
        if conn.has_pending() && conn.flush().await.is_err() {
            break;
        }
        match conn.fill().await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        // One clock read per batch: the batch arrived now, every delivery in it too.
        let now_us = origin.elapsed().as_micros() as u64;
        let mut t = tally.borrow_mut();
        let before = t.complete;
        let drained = conn.drain(|packet| {
            let Some((seq, intended_us)) = broadcast_stamp(packet) else {
                if packet.starts_with(b"30[") {
                    joined.set(joined.get() + 1);
                }
                return;
            };
            if seq >= messages {
                return;
            }
            let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
            if seen[word] & bit != 0 {
                t.duplicates += 1;
                return;
            }
            seen[word] |= bit;
            if highest.is_some_and(|h| seq < h) {
                t.out_of_order += 1;
            } else {
                highest = Some(seq);
            }
            t.distinct += 1;
            let _ = t.latency.record(now_us.saturating_sub(intended_us).max(1));
            let count = &mut t.per_message[seq as usize];
            *count += 1;
            if *count as usize == subscribed.get() {
                t.complete += 1;
            }
            t.last_delivery_us = now_us;
        });
        let completed = t.complete > before;
        drop(t);
        if completed {
            progress.notify_one();
        }
        match drained {
            Ok(d) if !d.closed => {}
            _ => break,
        }
    }
    dropped.set(dropped.get() + 1);
}
