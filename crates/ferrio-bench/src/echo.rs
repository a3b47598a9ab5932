//! `echo`: request/ack round trips at a fixed offered rate over N connections, open loop.
//!
//! Request k (of all connections together) is due at `start + k / rate` on connection
//! `k mod N` and carries `[k, intended send time]`; the peer acknowledges with the payload,
//! so the latency counts from when the request was due, however late it went out.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::time::{Instant, sleep_until};

use crate::report::{Cpu, latency_histogram, latency_json, latency_line};
use crate::wire::{Conn, ack_stamp};
use crate::{Common, Failures, Ramp, connect_many};

#[derive(Args, Debug)]
pub struct EchoArgs {
    #[command(flatten)]
    common: Common,
    /// Connections the requests are spread over.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Requests per second, all connections together.
    #[arg(long, default_value_t = 5_000.0)]
    rate: f64,
    /// Seconds of load.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Seconds to wait for the last acknowledgements.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
}

struct Tally {
    latency: Histogram<u64>,
    sent: u64,
    acked: u64,
    unexpected: u64,
}

pub async fn run(args: EchoArgs) {
    let common = &args.common;
    let endpoint = common.endpoint();
    let server = common.server();
    let failures = Failures::default();
    let bar = common.progress(args.connections as u64, "connect");
    let conns = Rc::new(RefCell::new(Vec::new()));
    {
        let conns = conns.clone();
        connect_many(
            &endpoint,
            common.sources(),
            Ramp {
                count: args.connections,
                rate: 0.0,
                concurrency: 64,
            },
            &failures,
            &bar,
            move |_, conn, _| {
                conns.borrow_mut().push(conn);
                async {}
            },
        )
        .await;
    }
    bar.finish_and_clear();
    let conns = std::mem::take(&mut *conns.borrow_mut());
    let n = conns.len();
    if n == 0 {
        eprintln!("echo: no connection opened: {:?}", failures.borrow());
        std::process::exit(1);
    }
    let total = (args.rate * args.duration).round() as u64;
    let tally = Rc::new(RefCell::new(Tally {
        latency: latency_histogram(),
        sent: 0,
        acked: 0,
        unexpected: 0,
    }));
    let dropped = Rc::new(Cell::new(0usize));
    let origin = Instant::now();
    let start = origin + Duration::from_millis(50);
    let stop_at = start + Duration::from_secs_f64(args.duration + args.drain);
    let server_cpu0 = server.and_then(|s| s.cpu());
    let cpu0 = Cpu::own();
    let mut tasks = Vec::with_capacity(n);
    for (i, conn) in conns.into_iter().enumerate() {
        tasks.push(tokio::task::spawn_local(requester(
            conn,
            Schedule {
                first: i as u64,
                step: n as u64,
                total,
                rate: args.rate,
                start,
                origin,
                stop_at,
            },
            tally.clone(),
            dropped.clone(),
        )));
    }
    let bar = common.progress(total, "echo");
    let watch = {
        let (tally, bar) = (tally.clone(), bar.clone());
        tokio::task::spawn_local(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                bar.set_position(tally.borrow().acked);
            }
        })
    };
    for task in tasks {
        let _ = task.await;
    }
    watch.abort();
    bar.finish_and_clear();
    let elapsed = start.elapsed().as_secs_f64();
    let server_split = server
        .and_then(|s| s.cpu())
        .zip(server_cpu0)
        .map(|(b, a)| b.since(a));
    let server_cpu = server_split.map(Cpu::total);
    let cpu = Cpu::own().since(cpu0);
    let tally = tally.borrow();
    let lost = tally.sent - tally.acked.min(tally.sent);
    let server_us_per_request = server_cpu.map(|c| c * 1e6 / tally.acked.max(1) as f64);
    eprintln!(
        "echo: {n} connections, {} requests at {} /s offered, {} acknowledged, {lost} unanswered, {} unexpected; connections dropped {}",
        tally.sent,
        args.rate,
        tally.acked,
        tally.unexpected,
        dropped.get()
    );
    eprintln!("{}", latency_line("round trip", &tally.latency));
    eprintln!(
        "server CPU {} s = {} µs per request; load generator CPU {:.2} s",
        server_cpu.map_or("?".into(), |c| format!("{c:.2}")),
        server_us_per_request.map_or("?".into(), |c| format!("{c:.1}")),
        cpu.total()
    );
    let report = json!({
        "scenario": "echo",
        "label": common.label("echo"),
        "target": common.target.to_string(),
        "connections": n,
        "connections_failed": *failures.borrow(),
        "connections_dropped": dropped.get(),
        "rate": args.rate,
        "duration_s": args.duration,
        "elapsed_s": elapsed,
        "requests": tally.sent,
        "acked": tally.acked,
        "lost": lost,
        "unexpected": tally.unexpected,
        "latency": latency_json(&tally.latency),
        "server_cpu_s": server_cpu,
        "server_cpu": server_split.map(Cpu::json),
        "server_cpu_us_per_request": server_us_per_request,
        "loadgen_cpu": cpu.json(),
    });
    crate::finish(common, report);
}

/// Which requests one connection sends, and when.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    first: u64,
    step: u64,
    total: u64,
    rate: f64,
    start: Instant,
    origin: Instant,
    stop_at: Instant,
}

impl Schedule {
    fn due(&self, k: u64) -> Instant {
        self.start + Duration::from_secs_f64(k as f64 / self.rate)
    }
}

async fn requester(mut conn: Conn, s: Schedule, tally: Rc<RefCell<Tally>>, dropped: Rc<Cell<usize>>) {
    conn.set_read_size(16 * 1024);
    let mut next = s.first;
    let mut outstanding = 0u64;
    let mut ack_id = 0u64;
    let mut packet = Vec::with_capacity(64);
    loop {
        let now = Instant::now();
        while next < s.total && s.due(next) <= now {
            let intended_us = s.due(next).duration_since(s.origin).as_micros() as u64;
            packet.clear();
            packet.extend_from_slice(format!(r#"2{ack_id}["echo",[{next},{intended_us}]]"#).as_bytes());
            conn.queue_packet(&packet);
            ack_id += 1;
            outstanding += 1;
            tally.borrow_mut().sent += 1;
            next += s.step;
        }
        if conn.has_pending() && conn.flush().await.is_err() {
            break;
        }
        if next >= s.total && outstanding == 0 {
            return;
        }
        let wake = if next < s.total { s.due(next) } else { s.stop_at };
        tokio::select! {
            biased;
            read = conn.fill() => {
                match read {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let now_us = s.origin.elapsed().as_micros() as u64;
                let mut t = tally.borrow_mut();
                let drained = conn.drain(|packet| match ack_stamp(packet) {
                    Some((_, intended_us)) => {
                        let _ = t.latency.record(now_us.saturating_sub(intended_us).max(1));
                        t.acked += 1;
                        outstanding = outstanding.saturating_sub(1);
                    }
                    None => t.unexpected += 1,
                });
                drop(t);
                match drained {
                    Ok(d) if !d.closed => {}
                    _ => break,
                }
            }
            _ = sleep_until(wake) => {
                if next >= s.total {
                    // Drain time is over: what is still outstanding is lost.
                    return;
                }
            }
        }
    }
    dropped.set(dropped.get() + 1);
}
