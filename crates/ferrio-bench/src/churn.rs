//! `churn`: connect/disconnect cycles at a rate (each: WebSocket, Engine.IO open, namespace
//! connect, then DISCONNECT and close, as a client's `disconnect()` does), then checks that
//! the server's RSS and open files return to their baseline.
//!
//! The baseline is taken after a warm-up of a few cycles, once the allocator and the runtime
//! have reached their working size; the cold RSS (right after start) is reported beside it.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use clap::Args;
use serde_json::json;
use tokio::time::Instant;

use crate::report::{Cpu, Server, latency_histogram, latency_json, latency_line};
use crate::{Common, Failures, Ramp, connect_many};

#[derive(Args, Debug)]
pub struct ChurnArgs {
    #[command(flatten)]
    common: Common,
    /// Connect/disconnect cycles.
    #[arg(long, default_value_t = 100_000)]
    cycles: usize,
    /// Cycles started per second.
    #[arg(long, default_value_t = 2_000.0)]
    rate: f64,
    /// Cycles in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Warm-up cycles before the baseline is taken.
    #[arg(long, default_value_t = 1_000)]
    warmup: usize,
    /// Seconds to wait, at most, for the RSS to come back after the last cycle.
    #[arg(long, default_value_t = 10.0)]
    settle: f64,
    /// How far above the baseline the final RSS may be, in percent.
    #[arg(long, default_value_t = 10.0)]
    tolerance: f64,
}

pub async fn run(args: ChurnArgs) {
    let common = &args.common;
    let endpoint = common.endpoint();
    let server = common.server();
    let failures = Failures::default();
    let handshakes = Rc::new(RefCell::new(latency_histogram()));
    let rss_cold = server.and_then(|s| s.rss_kb());
    let files_cold = server.and_then(|s| s.open_files());

    let bar = common.progress(args.warmup as u64, "warm-up");
    cycles(
        &endpoint,
        common,
        args.warmup,
        args.rate,
        args.concurrency,
        &failures,
        &bar,
        None,
    )
    .await;
    bar.finish_and_clear();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_base = server.and_then(|s| s.rss_kb());
    let files_base = server.and_then(|s| s.open_files());

    let server_cpu0 = server.and_then(|s| s.cpu());
    let cpu0 = Cpu::own();
    let started = Instant::now();
    let bar = common.progress(args.cycles as u64, "churn");
    let peak = Rc::new(std::cell::Cell::new(rss_base.unwrap_or(0)));
    // RSS every 5 seconds: a leak climbs with the cycles, an allocator's high-water mark
    // levels off.
    let timeline = Rc::new(RefCell::new(Vec::<[f64; 2]>::new()));
    let sampler = server.map(|s| {
        let (peak, timeline) = (peak.clone(), timeline.clone());
        tokio::task::spawn_local(async move {
            let mut tick = 0u32;
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                tick += 1;
                if let Some(rss) = s.rss_kb() {
                    peak.set(peak.get().max(rss));
                    if tick.is_multiple_of(10) {
                        timeline
                            .borrow_mut()
                            .push([started.elapsed().as_secs_f64().round(), rss as f64]);
                    }
                }
            }
        })
    });
    let failures_warmup = failures.borrow().clone();
    failures.borrow_mut().clear();
    cycles(
        &endpoint,
        common,
        args.cycles,
        args.rate,
        args.concurrency,
        &failures,
        &bar,
        Some(&handshakes),
    )
    .await;
    bar.finish_and_clear();
    let churn_s = started.elapsed().as_secs_f64();
    if let Some(task) = sampler {
        task.abort();
    }
    let server_split = server
        .and_then(|s| s.cpu())
        .zip(server_cpu0)
        .map(|(b, a)| b.since(a));
    let server_cpu = server_split.map(Cpu::total);
    let cpu = Cpu::own().since(cpu0);

    let (rss_end, files_end, settled_s) = settle(server, rss_base, files_base, &args).await;
    let ratio = rss_base.zip(rss_end).map(|(b, e)| e as f64 / b.max(1) as f64);
    let within = ratio.map(|r| r <= 1.0 + args.tolerance / 100.0);
    let failed: u64 = failures.borrow().values().sum();
    let handshakes = handshakes.borrow();
    eprintln!(
        "churn: {} cycles in {churn_s:.1} s ({:.0}/s), {failed} failed {:?}",
        args.cycles,
        args.cycles as f64 / churn_s.max(1e-9),
        failures.borrow()
    );
    eprintln!("{}", latency_line("handshake", &handshakes));
    eprintln!(
        "server RSS cold {} KB, baseline {} KB, peak {} KB, after {} KB ({}), open files {} -> {}; server CPU {} s; load generator CPU {:.2} s",
        fmt_opt(rss_cold),
        fmt_opt(rss_base),
        peak.get(),
        fmt_opt(rss_end),
        match (ratio, within) {
            (Some(r), Some(true)) => format!("{:+.1}%, within {}%", (r - 1.0) * 100.0, args.tolerance),
            (Some(r), _) => format!("{:+.1}%, NOT within {}%", (r - 1.0) * 100.0, args.tolerance),
            _ => "?".into(),
        },
        fmt_opt(files_base),
        fmt_opt(files_end),
        server_cpu.map_or("?".into(), |c| format!("{c:.2}")),
        cpu.total()
    );
    let report = json!({
        "scenario": "churn",
        "label": common.label("churn"),
        "target": common.target.to_string(),
        "cycles": args.cycles,
        "warmup": args.warmup,
        "rate": args.rate,
        "churn_s": churn_s,
        "cycles_per_s": args.cycles as f64 / churn_s.max(1e-9),
        "failed": failed,
        "failures": *failures.borrow(),
        "failures_warmup": failures_warmup,
        "handshake": latency_json(&handshakes),
        "server_rss_cold_kb": rss_cold,
        "server_rss_baseline_kb": rss_base,
        "server_rss_peak_kb": server.map(|_| peak.get()),
        "server_rss_timeline_kb": *timeline.borrow(),
        "server_rss_after_kb": rss_end,
        "rss_after_over_baseline": ratio,
        "rss_within_tolerance": within,
        "tolerance_pct": args.tolerance,
        "settled_s": settled_s,
        "server_open_files_cold": files_cold,
        "server_open_files_baseline": files_base,
        "server_open_files_after": files_end,
        "server_cpu_s": server_cpu,
        "server_cpu": server_split.map(Cpu::json),
        "server_cpu_us_per_cycle": server_cpu.map(|c| c * 1e6 / args.cycles.max(1) as f64),
        "loadgen_cpu": cpu.json(),
    });
    crate::finish(common, report);
}

fn fmt_opt<T: ToString>(v: Option<T>) -> String {
    v.map_or("?".into(), |v| v.to_string())
}

#[allow(clippy::too_many_arguments)]
async fn cycles(
    endpoint: &crate::wire::Endpoint,
    common: &Common,
    count: usize,
    rate: f64,
    concurrency: usize,
    failures: &Failures,
    bar: &indicatif::ProgressBar,
    handshakes: Option<&Rc<RefCell<hdrhistogram::Histogram<u64>>>>,
) {
    let handshakes = handshakes.cloned();
    connect_many(
        endpoint,
        common.sources(),
        Ramp {
            count,
            rate,
            concurrency,
        },
        failures,
        bar,
        move |_, conn, took| {
            if let Some(h) = &handshakes {
                let _ = h.borrow_mut().record(took.as_micros().max(1) as u64);
            }
            conn.close()
        },
    )
    .await;
}

/// Waits until the RSS is back within the tolerance and the open files at their baseline,
/// or the settle time is over. Returns the last readings and the time waited.
async fn settle(
    server: Option<Server>,
    rss_base: Option<u64>,
    files_base: Option<usize>,
    args: &ChurnArgs,
) -> (Option<u64>, Option<usize>, f64) {
    let Some(server) = server else {
        return (None, None, 0.0);
    };
    let started = Instant::now();
    loop {
        let rss = server.rss_kb();
        let files = server.open_files();
        let rss_ok = rss
            .zip(rss_base)
            .is_some_and(|(r, b)| r as f64 <= b as f64 * (1.0 + args.tolerance / 100.0));
        let files_ok = files.zip(files_base).is_some_and(|(f, b)| f <= b);
        let waited = started.elapsed().as_secs_f64();
        if (rss_ok && files_ok) || waited >= args.settle {
            return (rss, files, waited);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
