//! `hold`: N idle connections opened at a ramp rate and held, answering pings. Reports
//! failures by cause, handshake latency, connections dropped during the hold, and, given the
//! server's PID, its RSS before and after and so the memory per connection, plus the CPU the
//! server spends keeping idle connections alive (heartbeats).

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use clap::Args;
use serde_json::json;
use tokio::time::Instant;

use crate::report::{Cpu, kernel_socket_memory_kb, latency_histogram, latency_json, latency_line};
use crate::{Common, Failures, Ramp, connect_many};

#[derive(Args, Debug)]
pub struct HoldArgs {
    #[command(flatten)]
    common: Common,
    /// Connections to open.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Connections opened per second during the ramp (0: as fast as --concurrency allows).
    #[arg(long, default_value_t = 2_000.0)]
    rate: f64,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Seconds to hold the connections once the ramp is over.
    #[arg(long, default_value_t = 30)]
    hold: u64,
    /// JSON auth payload sent with every CONNECT (e.g. '{"token":"..."}').
    #[arg(long)]
    auth: Option<String>,
}

pub async fn run(args: HoldArgs, nofile: (u64, u64)) {
    let common = &args.common;
    let mut endpoint = common.endpoint();
    endpoint.auth = args.auth.clone();
    let server = common.server();
    let cpu0 = Cpu::own();
    let rss_before = server.and_then(|s| s.rss_kb());
    let files_before = server.and_then(|s| s.open_files());
    let kernel_before = kernel_socket_memory_kb();

    let failures = Failures::default();
    let handshakes = Rc::new(std::cell::RefCell::new(latency_histogram()));
    let open = Rc::new(Cell::new(0usize));
    let holding = Rc::new(Cell::new(false));
    let dropped_ramp = Rc::new(Cell::new(0usize));
    let dropped_hold = Rc::new(Cell::new(0usize));

    let bar = common.progress(args.connections as u64, "hold ramp");
    let started = Instant::now();
    {
        let (handshakes, open, holding, dropped_ramp, dropped_hold) = (
            handshakes.clone(),
            open.clone(),
            holding.clone(),
            dropped_ramp.clone(),
            dropped_hold.clone(),
        );
        connect_many(
            &endpoint,
            common.sources(),
            Ramp {
                count: args.connections,
                rate: args.rate,
                concurrency: args.concurrency,
            },
            &failures,
            &bar,
            move |_, mut conn, took| {
                let (open, holding, dropped_ramp, dropped_hold) = (
                    open.clone(),
                    holding.clone(),
                    dropped_ramp.clone(),
                    dropped_hold.clone(),
                );
                let _ = handshakes.borrow_mut().record(took.as_micros().max(1) as u64);
                open.set(open.get() + 1);
                async move {
                    // Idle: answer pings until the server or the network ends the connection.
                    conn.set_read_size(256);
                    loop {
                        match conn.fill().await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                        match conn.drain(|_| {}) {
                            Ok(d) if !d.closed => {}
                            _ => break,
                        }
                        if conn.flush().await.is_err() {
                            break;
                        }
                    }
                    open.set(open.get() - 1);
                    let dropped = if holding.get() {
                        &dropped_hold
                    } else {
                        &dropped_ramp
                    };
                    dropped.set(dropped.get() + 1);
                }
            },
        )
        .await;
    }
    bar.finish_and_clear();
    let ramp = started.elapsed();
    let connected = open.get() + dropped_ramp.get();
    eprintln!(
        "hold: {}/{} connected in {:.1} s ({:.0}/s); failures {:?}",
        connected,
        args.connections,
        ramp.as_secs_f64(),
        connected as f64 / ramp.as_secs_f64().max(1e-9),
        failures.borrow()
    );

    holding.set(true);
    let hold_cpu0 = server.and_then(|s| s.cpu_s());
    let hold_started = Instant::now();
    let bar = common.progress(args.hold, "holding");
    while hold_started.elapsed() < Duration::from_secs(args.hold) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        bar.set_position(hold_started.elapsed().as_secs());
        bar.set_message(format!("{} open", open.get()));
    }
    bar.finish_and_clear();
    let hold_secs = hold_started.elapsed().as_secs_f64();
    let hold_cpu = server.and_then(|s| s.cpu_s()).zip(hold_cpu0).map(|(b, a)| b - a);
    let rss_after = server.and_then(|s| s.rss_kb());
    let files_after = server.and_then(|s| s.open_files());
    let kernel_after = kernel_socket_memory_kb();
    let held = open.get();
    let kb_per_connection = match (rss_before, rss_after) {
        (Some(b), Some(a)) if held > 0 => Some(a.saturating_sub(b) as f64 / held as f64),
        _ => None,
    };
    // Server CPU to keep one idle connection alive for a second, in microseconds.
    let idle_cpu_us = hold_cpu.map(|c| c * 1e6 / hold_secs / held.max(1) as f64);
    let cpu = Cpu::own().since(cpu0);
    let handshakes = handshakes.borrow();

    eprintln!("{}", latency_line("handshake", &handshakes));
    eprintln!(
        "held {held} for {hold_secs:.0} s, dropped during ramp {} / hold {}; server RSS {} -> {} KB = {} KB per connection; server CPU while idle {} µs per connection-second; load generator CPU {:.2} s",
        dropped_ramp.get(),
        dropped_hold.get(),
        rss_before.map_or("?".into(), |v| v.to_string()),
        rss_after.map_or("?".into(), |v| v.to_string()),
        kb_per_connection.map_or("?".into(), |k| format!("{k:.2}")),
        idle_cpu_us.map_or("?".into(), |k| format!("{k:.3}")),
        cpu.total(),
    );
    let report = json!({
        "scenario": "hold",
        "label": common.label("hold"),
        "target": common.target.to_string(),
        "connections": args.connections,
        "connected": connected,
        "held": held,
        "failures": *failures.borrow(),
        "dropped_during_ramp": dropped_ramp.get(),
        "dropped_during_hold": dropped_hold.get(),
        "ramp_s": ramp.as_secs_f64(),
        "handshakes_per_s": connected as f64 / ramp.as_secs_f64().max(1e-9),
        "handshake": latency_json(&handshakes),
        "hold_s": hold_secs,
        "server_rss_before_kb": rss_before,
        "server_rss_after_kb": rss_after,
        "kb_per_connection": kb_per_connection,
        "server_open_files_before": files_before,
        "server_open_files_after": files_after,
        "server_cpu_hold_s": hold_cpu,
        "server_idle_cpu_us_per_connection_s": idle_cpu_us,
        "kernel_before": kernel_before,
        "kernel_after": kernel_after,
        "loadgen_cpu": cpu.json(),
        "loadgen_nofile": [nofile.0, nofile.1],
    });
    crate::finish(common, report);
}
