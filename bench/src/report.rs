//! Summary text, JSON and SVG output.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::config::{Config, Mode};
use crate::load::RunResult;
use crate::stats::{percentile_curve, LatencySummary, Tick, MB};

pub fn to_json(cfg: &Config, bootstrap: &str, r: &RunResult) -> Value {
    let (msgs, bytes, secs) = match cfg.mode {
        Mode::Consume => (r.consumed_msgs, r.consumed_bytes, r.consume_secs),
        _ => (r.produced_msgs, r.produced_bytes, r.produce_secs),
    };
    let mut v = json!({
        "tool": "spate-bench",
        "version": env!("CARGO_PKG_VERSION"),
        "mode": cfg.mode.name(),
        "workload": cfg.name,
        "bootstrap": bootstrap,
        "topics": cfg.topics,
        "partitions": r.partitions_total,
        "record_size": cfg.record_size,
        "records_per_batch": r.records_per_batch,
        "key_size": cfg.key_size,
        "compression": cfg.compression.name(),
        "compressibility": cfg.compressibility,
        "acks": cfg.acks,
        "target_rate": cfg.rate,
        "duration_s": cfg.duration,
        "warmup_s": cfg.warmup,
        "connections": cfg.connections,
        "consumers": cfg.consumers,
        "max_in_flight": cfg.max_in_flight,
        "elapsed_s": secs,
        "msgs": msgs,
        "bytes": bytes,
        "msgs_per_sec": msgs as f64 / secs,
        "mb_per_sec": bytes as f64 / secs / MB,
        "produced_msgs": r.produced_msgs,
        "produce_requests": r.requests,
        "consumed_msgs": r.consumed_msgs,
        "consume_msgs_per_sec": r.consumed_msgs as f64 / r.consume_secs,
        "consumed_wire_bytes": r.consumed_wire_bytes,
        "consume_wire_mb_per_sec": r.consumed_wire_bytes as f64 / r.consume_secs / MB,
        "errors": r.errors,
        "first_error": r.first_error,
        "client_build_busy": r.client_build_busy,
        "produce_latency_ms": LatencySummary::of(&r.produce),
        "produce_service_time_ms": LatencySummary::of(&r.produce_service),
        "latency_from": if cfg.rate.is_some() { "intended send time (coordinated-omission corrected)" } else { "actual send time" },
        "timeline": r.timeline,
    });
    if cfg.mode == Mode::E2e {
        v["e2e_latency_ms"] = json!(LatencySummary::of(&r.e2e));
    }
    v
}

pub fn summary_text(cfg: &Config, r: &RunResult) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "spate-bench {} | {} topic(s) x {} partitions | {} B records, {} per batch, {} | acks {} | {}",
        cfg.mode.name(),
        cfg.topics.len(),
        r.partitions_total / cfg.topics.len().max(1),
        cfg.record_size,
        r.records_per_batch,
        cfg.compression.name(),
        cfg.acks,
        match cfg.rate {
            Some(x) => format!("fixed rate {x:.0} msg/s"),
            None => "peak".into(),
        }
    );
    if cfg.mode != Mode::Consume {
        let _ = writeln!(
            s,
            "produced {} msgs in {:.3} s: {:.0} msg/s, {:.1} MB/s ({} requests)",
            r.produced_msgs,
            r.produce_secs,
            r.produced_msgs as f64 / r.produce_secs,
            r.produced_bytes as f64 / r.produce_secs / MB,
            r.requests
        );
    }
    if cfg.mode != Mode::Produce {
        let _ = writeln!(
            s,
            "consumed {} msgs in {:.3} s: {:.0} msg/s, {:.1} MB/s of values at --record-size, {:.1} MB/s of batches",
            r.consumed_msgs,
            r.consume_secs,
            r.consumed_msgs as f64 / r.consume_secs,
            r.consumed_bytes as f64 / r.consume_secs / MB,
            r.consumed_wire_bytes as f64 / r.consume_secs / MB
        );
    }
    let _ = writeln!(
        s,
        "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "latency (ms)", "p50", "p90", "p95", "p99", "p99.9", "p99.99", "max"
    );
    let mut row = |name: &str, l: &LatencySummary| {
        let _ = writeln!(
            s,
            "{:<22} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            name, l.p50, l.p90, l.p95, l.p99, l.p999, l.p9999, l.max
        );
    };
    if cfg.mode != Mode::Consume {
        row("produce", &LatencySummary::of(&r.produce));
        if cfg.rate.is_some() {
            row("produce (service)", &LatencySummary::of(&r.produce_service));
        }
    }
    if cfg.mode == Mode::E2e {
        row("end-to-end", &LatencySummary::of(&r.e2e));
    }
    let _ = writeln!(s, "errors: {}", r.errors);
    if r.client_build_busy > 0.5 {
        let _ = writeln!(
            s,
            "warning: a producer thread spent {:.0}% of the run building requests: the client, not the broker, \
             may be the limit (latencies include client delay)",
            r.client_build_busy * 100.0
        );
    }
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A "nice" axis top: 1, 2 or 5 times a power of ten, at or above `v`.
fn nice_top(v: f64) -> f64 {
    if v.is_nan() || v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= v {
            return m * p;
        }
    }
    10.0 * p
}

/// A named, coloured line of (x, y) points.
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

struct Panel {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

fn axes(
    svg: &mut String,
    p: &Panel,
    title: &str,
    xlabel: &str,
    ylabel: &str,
    xticks: &[(f64, String)],
    ytop: f64,
) {
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" font-size="14" text-anchor="middle" font-weight="bold">{}</text>"#,
        p.x + p.w / 2.0,
        p.y - 10.0,
        esc(title)
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="#444"/>"##,
        p.x, p.y, p.w, p.h
    );
    for i in 0..=5 {
        let v = ytop * i as f64 / 5.0;
        let y = p.y + p.h - p.h * i as f64 / 5.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/>"##,
            p.x,
            p.x + p.w
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" font-size="11" text-anchor="end">{}</text>"#,
            p.x - 5.0,
            y + 4.0,
            fmt_num(v)
        );
    }
    for (fx, label) in xticks {
        let x = p.x + p.w * fx;
        let _ = writeln!(
            svg,
            r##"<line x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="#ddd"/>"##,
            p.y,
            p.y + p.h
        );
        let _ = writeln!(
            svg,
            r#"<text x="{x}" y="{}" font-size="11" text-anchor="middle">{}</text>"#,
            p.y + p.h + 15.0,
            esc(label)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" font-size="12" text-anchor="middle">{}</text>"#,
        p.x + p.w / 2.0,
        p.y + p.h + 33.0,
        esc(xlabel)
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" font-size="12" text-anchor="middle" transform="rotate(-90 {} {})">{}</text>"#,
        p.x - 50.0,
        p.y + p.h / 2.0,
        p.x - 50.0,
        p.y + p.h / 2.0,
        esc(ylabel)
    );
}

fn fmt_num(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 10.0 || (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn polyline(
    svg: &mut String,
    p: &Panel,
    pts: &[(f64, f64)],
    xmax: f64,
    ytop: f64,
    color: &str,
    dashed: bool,
) {
    let mut d = String::new();
    for (x, y) in pts {
        let px = p.x + p.w * (x / xmax).clamp(0.0, 1.0);
        let py = p.y + p.h - p.h * (y / ytop).clamp(0.0, 1.0);
        let _ = write!(d, "{px:.1},{py:.1} ");
    }
    let dash = if dashed {
        r#" stroke-dasharray="6 4""#
    } else {
        ""
    };
    let _ = writeln!(
        svg,
        r#"<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{}"/>"#,
        d.trim_end()
    );
}

/// Two panels: latency by percentile (x: p0 .. p99.999 on a "number of nines" scale)
/// and throughput per second over time.
pub fn to_svg(cfg: &Config, r: &RunResult) -> String {
    let mut svg = String::new();
    let (w, h) = (1100.0, 440.0);
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let title = format!(
        "spate-bench {} — {} B records, {} partitions, {}, acks {}, {}",
        cfg.mode.name(),
        cfg.record_size,
        r.partitions_total,
        cfg.compression.name(),
        cfg.acks,
        cfg.rate
            .map(|x| format!("{x:.0} msg/s"))
            .unwrap_or_else(|| "peak".into())
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        w / 2.0,
        esc(&title)
    );

    // Latency percentile distribution.
    let lp = Panel {
        x: 80.0,
        y: 60.0,
        w: 420.0,
        h: 310.0,
    };
    let mut curves: Vec<Series> = Vec::new();
    if cfg.mode != Mode::Consume {
        curves.push(("produce", "#1f77b4", percentile_curve(&r.produce)));
    }
    if cfg.mode == Mode::E2e {
        curves.push(("end-to-end", "#d62728", percentile_curve(&r.e2e)));
    }
    let xmax = curves
        .iter()
        .flat_map(|c| c.2.iter().map(|p| p.0))
        .fold(1.0f64, f64::max)
        .ceil();
    let ytop = nice_top(
        curves
            .iter()
            .flat_map(|c| c.2.iter().map(|p| p.1))
            .fold(0.0f64, f64::max),
    );
    let labels = ["p0", "p90", "p99", "p99.9", "p99.99", "p99.999"];
    let xticks: Vec<(f64, String)> = (0..=xmax as usize)
        .map(|i| (i as f64 / xmax, labels.get(i).unwrap_or(&"").to_string()))
        .collect();
    axes(
        &mut svg,
        &lp,
        "Latency by percentile",
        "percentile",
        "latency (ms)",
        &xticks,
        ytop,
    );
    for (i, (name, color, pts)) in curves.iter().enumerate() {
        polyline(&mut svg, &lp, pts, xmax, ytop, color, i > 0);
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" font-size="12" fill="{color}">{name}</text>"#,
            lp.x + 10.0,
            lp.y + 18.0 + 16.0 * i as f64
        );
    }

    // Throughput over time.
    let tp = Panel {
        x: 640.0,
        y: 60.0,
        w: 420.0,
        h: 310.0,
    };
    let tmax = r
        .timeline
        .last()
        .map(|t| t.t)
        .unwrap_or(1.0)
        .max(1.0)
        .ceil();
    let series: Vec<Series> = vec![
        (
            "produce msg/s",
            "#1f77b4",
            r.timeline
                .iter()
                .map(|t: &Tick| (t.t, t.produce_msgs_per_sec))
                .collect(),
        ),
        (
            "consume msg/s",
            "#2ca02c",
            r.timeline
                .iter()
                .map(|t: &Tick| (t.t, t.consume_msgs_per_sec))
                .collect(),
        ),
    ];
    let series: Vec<_> = series
        .into_iter()
        .filter(|s| s.2.iter().any(|p| p.1 > 0.0))
        .collect();
    let ytop = nice_top(
        series
            .iter()
            .flat_map(|c| c.2.iter().map(|p| p.1))
            .fold(0.0f64, f64::max),
    );
    let step = (tmax / 10.0).ceil().max(1.0);
    let xticks: Vec<(f64, String)> = (0..=(tmax / step) as usize)
        .map(|i| (i as f64 * step / tmax, format!("{}", i as f64 * step)))
        .collect();
    axes(
        &mut svg,
        &tp,
        "Throughput over time",
        "seconds",
        "messages per second",
        &xticks,
        ytop,
    );
    for (i, (name, color, pts)) in series.iter().enumerate() {
        polyline(&mut svg, &tp, pts, tmax, ytop, color, i > 0);
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" font-size="12" fill="{color}">{name}</text>"#,
            tp.x + 10.0,
            tp.y + 18.0 + 16.0 * i as f64
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_tops() {
        assert_eq!(nice_top(0.0), 1.0);
        assert_eq!(nice_top(3.0), 5.0);
        assert_eq!(nice_top(12.0), 20.0);
        assert_eq!(nice_top(1000.0), 1000.0);
        assert_eq!(nice_top(0.03), 0.05);
    }
}
