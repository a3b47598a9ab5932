//! Latency percentile curves as SVG, in the HdrHistogram style: the percentile axis is
//! logarithmic in `1 / (1 - p)`, so 90%, 99%, 99.9%, ... are evenly spaced and the tail gets
//! as much room as the median. The latency axis turns logarithmic when the runs span more
//! than two decades (milliseconds beside seconds).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::Value;

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// The SVG file to write.
    #[arg(long)]
    out: PathBuf,
    /// Title above the plot.
    #[arg(long)]
    title: Option<String>,
    /// Result files (JSON lines as the scenarios print them), each as FILE or LABEL=FILE.
    /// Every line with a latency curve is one run.
    #[arg(required = true)]
    inputs: Vec<String>,
}

/// One curve: a name and `(percentile, ms)` points.
#[derive(Debug, Clone)]
pub struct Run {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

pub fn run(args: &PlotArgs) -> Result<(), String> {
    let mut runs = Vec::new();
    for input in &args.inputs {
        let (label, file) = match input.split_once('=') {
            Some((label, file)) => (Some(label.to_owned()), file),
            None => (None, input.as_str()),
        };
        let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
        let found: Vec<Run> = text
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .flat_map(|v| runs_of(&v))
            .collect();
        let several = found.len() > 1;
        for (i, mut r) in found.into_iter().enumerate() {
            if let Some(label) = &label {
                r.label = if several {
                    format!("{label} #{}", i + 1)
                } else {
                    label.clone()
                };
            }
            runs.push(r);
        }
    }
    if runs.is_empty() {
        return Err("no run with a latency curve in the inputs".into());
    }
    write_svg(&args.out, &runs, args.title.as_deref()).map_err(|e| e.to_string())
}

/// The curve of one result line: its delivery/round-trip latency, else its handshakes.
pub fn runs_of(report: &Value) -> Vec<Run> {
    let curve = report
        .get("latency")
        .or_else(|| report.get("handshake"))
        .and_then(|l| l.get("curve"))
        .and_then(Value::as_array);
    let Some(curve) = curve else {
        return Vec::new();
    };
    let points: Vec<(f64, f64)> = curve
        .iter()
        .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)))
        .collect();
    if points.is_empty() {
        return Vec::new();
    }
    let label = report
        .get("label")
        .and_then(Value::as_str)
        .unwrap_or("run")
        .to_owned();
    vec![Run { label, points }]
}

const COLOURS: [&str; 8] = [
    "#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];
/// The percentile axis ends at 99.999% (five nines); the maximum is drawn at its end.
const NINES: f64 = 5.0;

fn x_of(percentile: f64) -> f64 {
    let rest = (1.0 - percentile / 100.0).max(10f64.powf(-NINES));
    (-rest.log10()).clamp(0.0, NINES)
}

pub fn write_svg(path: &Path, runs: &[Run], title: Option<&str>) -> std::io::Result<()> {
    std::fs::write(path, svg(runs, title))
}

/// Renders the plot.
pub fn svg(runs: &[Run], title: Option<&str>) -> String {
    let (w, h) = (860.0, 500.0);
    let (left, right, top, bottom) = (80.0, 200.0, 40.0, 60.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let values = runs.iter().flat_map(|r| r.points.iter().map(|p| p.1));
    let max = values.clone().fold(0.0f64, f64::max).max(0.001);
    let min = values.filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min).min(max);
    let log_y = max / min.max(1e-3) > 100.0;
    let (y_lo, y_hi) = if log_y {
        (
            10f64.powf(min.max(1e-3).log10().floor()),
            10f64.powf(max.log10().ceil()),
        )
    } else {
        (0.0, nice_ceiling(max))
    };
    let y_of = |ms: f64| -> f64 {
        let frac = if log_y {
            (ms.max(y_lo).log10() - y_lo.log10()) / (y_hi.log10() - y_lo.log10())
        } else {
            ms / y_hi
        };
        top + ph * (1.0 - frac.clamp(0.0, 1.0))
    };
    let px = |x: f64| left + pw * x / NINES;

    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    if let Some(title) = title {
        let _ = write!(
            s,
            r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
            left + pw / 2.0,
            escape(title)
        );
    }
    // Percentile grid.
    for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
    {
        let x = px(i as f64);
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            top + ph,
            top + ph + 18.0
        );
    }
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        left + pw / 2.0,
        h - 15.0
    );
    // Latency grid.
    let ticks: Vec<f64> = if log_y {
        let mut t = Vec::new();
        let mut v = y_lo;
        while v <= y_hi * 1.0001 {
            t.push(v);
            v *= 10.0;
        }
        t
    } else {
        (0..=5).map(|i| y_hi * f64::from(i) / 5.0).collect()
    };
    for v in ticks {
        let y = y_of(v);
        let _ = write!(
            s,
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + pw,
            left - 6.0,
            y + 4.0,
            fmt_ms(v)
        );
    }
    let _ = write!(
        s,
        r#"<text transform="translate(20 {:.1}) rotate(-90)" text-anchor="middle">latency (ms{})</text>"#,
        top + ph / 2.0,
        if log_y { ", log scale" } else { "" }
    );
    let _ = write!(
        s,
        r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##
    );
    for (i, run) in runs.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut d = String::new();
        for (j, &(p, ms)) in run.points.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1} ",
                if j == 0 { "M" } else { "L" },
                px(x_of(p)),
                y_of(ms)
            );
        }
        let _ = write!(
            s,
            r#"<path d="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            d.trim_end()
        );
        let ly = top + 10.0 + 20.0 * i as f64;
        let lx = left + pw + 15.0;
        let _ = write!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 20.0,
            lx + 26.0,
            ly + 4.0,
            escape(&run.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn nice_ceiling(v: f64) -> f64 {
    let magnitude = 10f64.powf(v.log10().floor());
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if step * magnitude >= v {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

fn fmt_ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.0}", v)
    } else if v >= 1.0 {
        format!("{}", (v * 100.0).round() / 100.0)
    } else {
        format!("{v:.3}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_evenly_spaced_by_nines() {
        assert!((x_of(0.0) - 0.0).abs() < 1e-9);
        assert!((x_of(90.0) - 1.0).abs() < 1e-9);
        assert!((x_of(99.9) - 3.0).abs() < 1e-9);
        assert!((x_of(100.0) - NINES).abs() < 1e-9);
    }

    #[test]
    fn draws_one_path_per_run() {
        let runs = vec![
            Run {
                label: "a".into(),
                points: vec![(0.0, 1.0), (99.0, 2.0), (100.0, 3.0)],
            },
            Run {
                label: "b<".into(),
                points: vec![(0.0, 1000.0), (100.0, 9000.0)],
            },
        ];
        let svg = svg(&runs, Some("t"));
        assert_eq!(svg.matches("<path").count(), 2);
        assert!(svg.contains("b&lt;"));
        assert!(svg.contains("log scale"));
    }
}
