//! Figures every scenario reports: latency histograms and their percentile curves, the load
//! generator's own CPU time (getrusage), and the server's RSS and CPU time read from `/proc`.

use hdrhistogram::Histogram;
use nix::sys::resource::{UsageWho, getrusage};
use serde_json::{Value, json};

/// A latency histogram in microseconds, 1 µs to 1 hour, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| unreachable!())
}

/// p50/p90/p99/p99.9/max in milliseconds, and the percentile curve for plots.
pub fn latency_json(h: &Histogram<u64>) -> Value {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    json!({
        "count": h.len(),
        "p50_ms": ms(0.5),
        "p90_ms": ms(0.9),
        "p99_ms": ms(0.99),
        "p99_9_ms": ms(0.999),
        "max_ms": h.max() as f64 / 1000.0,
        "mean_ms": h.mean() / 1000.0,
        "curve": curve(h),
    })
}

/// `(percentile, ms)` points spaced evenly on the `1/(1-p)` log scale, up to 99.999%, then
/// the maximum.
fn curve(h: &Histogram<u64>) -> Vec<[f64; 2]> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut points: Vec<[f64; 2]> = (0..=50)
        .map(|i| {
            let q = 1.0 - 10f64.powf(-f64::from(i) / 10.0);
            [q * 100.0, h.value_at_quantile(q) as f64 / 1000.0]
        })
        .collect();
    points.push([100.0, h.max() as f64 / 1000.0]);
    points
}

pub fn latency_line(name: &str, h: &Histogram<u64>) -> String {
    format!(
        "{name}: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} samples)",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.9) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.value_at_quantile(0.999) as f64 / 1000.0,
        h.max() as f64 / 1000.0,
        h.len()
    )
}

/// The load generator's CPU time so far, user and system, in seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub user: f64,
    pub system: f64,
}

impl Cpu {
    pub fn own() -> Cpu {
        match getrusage(UsageWho::RUSAGE_SELF) {
            Ok(usage) => {
                let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
                Cpu {
                    user: secs(usage.user_time()),
                    system: secs(usage.system_time()),
                }
            }
            Err(_) => Cpu::default(),
        }
    }

    pub fn since(self, earlier: Cpu) -> Cpu {
        Cpu {
            user: self.user - earlier.user,
            system: self.system - earlier.system,
        }
    }

    pub fn total(self) -> f64 {
        self.user + self.system
    }

    pub fn json(self) -> Value {
        json!({ "user_s": self.user, "system_s": self.system, "total_s": self.total() })
    }
}

/// The process under test, read from `/proc/PID`.
#[derive(Debug, Clone, Copy)]
pub struct Server {
    pub pid: u32,
}

impl Server {
    /// Resident set size in KB.
    pub fn rss_kb(self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    /// User + system CPU seconds of every thread, dead ones included.
    pub fn cpu_s(self) -> Option<f64> {
        self.cpu().map(Cpu::total)
    }

    /// CPU time of every thread, dead ones included, split into user and system (kernel:
    /// on loopback, the system time of a write includes the receiving side's TCP work).
    pub fn cpu(self) -> Option<Cpu> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        // Fields after the command (which may hold spaces) start at the state, field 3.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as f64;
        Some(Cpu {
            user: utime / ticks,
            system: stime / ticks,
        })
    }

    /// Open file descriptors.
    pub fn open_files(self) -> Option<usize> {
        Some(std::fs::read_dir(format!("/proc/{}/fd", self.pid)).ok()?.count())
    }
}

/// Kernel memory that grows with TCP sockets: slab (socket structs) and TCP buffer pages,
/// machine-wide, in KB.
pub fn kernel_socket_memory_kb() -> Value {
    let slab = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("Slab:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
    });
    let tcp_pages = std::fs::read_to_string("/proc/net/sockstat").ok().and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("TCP:"))?;
        let mut words = line.split_whitespace();
        while let Some(w) = words.next() {
            if w == "mem" {
                return words.next()?.parse::<u64>().ok();
            }
        }
        None
    });
    json!({ "slab_kb": slab, "tcp_buffers_kb": tcp_pages.map(|p| p * 4) })
}
