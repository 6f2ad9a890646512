#!/usr/bin/env python3
"""Render docs/grafana/dashboard-preview.png from a real run, without Grafana.

What it does, end to end:
  1. starts a spate broker with --http on free loopback ports (data under --workdir),
  2. starts Prometheus scraping that broker's /metrics every second (config and TSDB
     under --workdir),
  3. drives real traffic with confluent-kafka for --duration seconds: producers on two
     topics at varying rates, consumer groups (one keeps up, one falls behind then catches
     up, one joins late from the earliest offset), and a few out-of-range fetches,
  4. evaluates every query of every panel of docs/grafana/spate-dashboard.json with
     Prometheus's HTTP API (/api/v1/query_range, instant /api/v1/query for the table),
     with $topic/$group = All and $__rate_interval = --rate-interval,
  5. draws the panels with matplotlib where the dashboard's gridPos puts them.

The image is therefore the dashboard's own PromQL against a real run, drawn by this
script, not a Grafana screenshot (Grafana is not installable here).

Needs: the prometheus binary (Debian: apt-get install prometheus), confluent-kafka and
matplotlib (pip install matplotlib), a built broker.

    cargo build -p spate-node
    python3 docs/grafana/render_preview.py --spate target/debug/spate --duration 60
"""
import argparse
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def wait_http(url, what, timeout=30, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}")
        try:
            if http_get(url, 1)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"{what} not up at {url} within {timeout}s")


# ----------------------------------------------------------------------------- processes

def start_spate(binary, workdir):
    port, hport = free_port(), free_port()
    data = workdir / "spate-data"
    shutil.rmtree(data, ignore_errors=True)
    # Defaults except: retention runs every 5 s (so the "clicks" topic's retention.bytes
    # moves its log start during the run) and a small batch cache (so the late "audit"
    # group, reading from the earliest offset, misses it and reads from disk).
    cfg = workdir / "spate.toml"
    cfg.write_text("log_retention_check_interval_ms = 5000\n"
                   "batch_cache_bytes_per_shard = 4194304\n")
    log = open(workdir / "spate.log", "wb")
    proc = subprocess.Popen([str(binary), "--config", str(cfg), "--data-dir", str(data),
                             "--listen", f"127.0.0.1:{port}", "--cores", "2",
                             "--http", f"127.0.0.1:{hport}"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{hport}/ready", "spate", proc=proc)
    return proc, f"127.0.0.1:{port}", f"127.0.0.1:{hport}"


def start_prometheus(binary, workdir, target):
    port = free_port()
    tsdb = workdir / "prometheus-data"
    shutil.rmtree(tsdb, ignore_errors=True)
    cfg = workdir / "prometheus.yml"
    cfg.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: spate\n    metrics_path: /metrics\n"
        f"    static_configs:\n      - targets: ['{target}']\n")
    log = open(workdir / "prometheus.log", "wb")
    proc = subprocess.Popen([binary, f"--config.file={cfg}", f"--storage.tsdb.path={tsdb}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/-/ready", "prometheus", proc=proc)
    return proc, url


def stop(proc):
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# ----------------------------------------------------------------------------- load

def drive_load(bootstrap, duration):
    """Real client traffic for `duration` seconds (threads; confluent-kafka frees the GIL)."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = [NewTopic("orders", 3, 1, config={"flush.ms": "1000"}),
              NewTopic("clicks", 2, 1, config={"segment.bytes": "131072", "retention.bytes": "393216"})]
    for f in admin.create_topics(topics, operation_timeout=30).values():
        f.result(30)
    time.sleep(1)
    stop_at = time.monotonic() + duration
    t0 = time.monotonic()
    errors = []

    def guard(fn):
        def run(*a):
            try:
                fn(*a)
            except Exception as e:  # noqa: BLE001 - reported at the end
                errors.append(f"{fn.__name__}: {e!r}")
        return run

    @guard
    def producer(topic, base_rate, swing, period, size):
        p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all",
                      "compression.type": "none"})
        i = 0
        while time.monotonic() < stop_at:
            el = time.monotonic() - t0
            rate = max(20.0, base_rate + swing * math.sin(2 * math.pi * el / period))
            burst = max(1, int(rate / 20))
            for _ in range(burst):
                p.produce(topic, key=f"k{i % 97}".encode(), value=os.urandom(size // 2).hex().encode())
                i += 1
            p.poll(0)
            time.sleep(0.05)
        p.flush(30)

    @guard
    def consumer(topic, group, start_after, max_rate, commit_every):
        time.sleep(start_after)
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                      "auto.offset.reset": "earliest", "enable.auto.commit": False,
                      "fetch.wait.max.ms": 200})
        c.subscribe([topic])
        n, last_commit, window, window_start = 0, time.monotonic(), 0, time.monotonic()
        while time.monotonic() < stop_at:
            limit = max_rate(time.monotonic() - t0)
            if limit is not None and window >= limit * (time.monotonic() - window_start):
                time.sleep(0.02)
                if time.monotonic() - window_start > 2:
                    window, window_start = 0, time.monotonic()
                continue
            m = c.poll(0.1)
            if m is not None and not m.error():
                n += 1
                window += 1
            if time.monotonic() - last_commit >= commit_every:
                try:
                    c.commit(asynchronous=False)
                except Exception:  # noqa: BLE001 - nothing to commit yet
                    pass
                last_commit = time.monotonic()
        try:
            c.commit(asynchronous=False)
        except Exception:  # noqa: BLE001
            pass
        c.close()

    @guard
    def bad_fetches():
        while time.monotonic() < stop_at:
            time.sleep(8 + random.random() * 4)
            c = Consumer({"bootstrap.servers": bootstrap, "group.id": "preview-oor",
                          "enable.auto.commit": False, "auto.offset.reset": "error"})
            c.assign([TopicPartition("orders", 0, 10_000_000)])
            end = time.monotonic() + 3
            while time.monotonic() < end:
                m = c.poll(0.2)
                if m is not None and m.error():
                    break
            c.close()

    half = duration / 2
    threads = [
        threading.Thread(target=producer, args=("orders", 250, 150, duration / 1.5, 200)),
        threading.Thread(target=producer, args=("clicks", 500, 250, duration / 2.5, 120)),
        threading.Thread(target=consumer, args=("orders", "billing", 0, lambda el: None, 1.0)),
        # Falls behind (300 records/s) for the first half, then catches up.
        threading.Thread(target=consumer, args=("clicks", "analytics", 0,
                                                lambda el: 300 if el < half else None, 1.0)),
        # Joins late, from the earliest offset: starts with the whole topic as lag.
        threading.Thread(target=consumer, args=("orders", "audit", duration / 3, lambda el: 600, 2.0)),
        threading.Thread(target=bad_fetches),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + 60)
    if errors:
        print("load errors:", *errors, sep="\n  ")


# ----------------------------------------------------------------------------- queries

def substitute(expr, rate_interval):
    return (expr.replace("$__rate_interval", rate_interval)
            .replace('=~"$topic"', '=~".*"').replace('=~"$group"', '=~".*"'))


def prom(url, path, **params):
    q = urllib.parse.urlencode(params)
    status, body = http_get(f"{url}{path}?{q}", 30)
    r = json.loads(body)
    if r.get("status") != "success":
        raise RuntimeError(f"{params.get('query')}: {r}")
    return r["data"]["result"]


def legend(fmt, metric):
    if not fmt:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items())
                               if k not in ("job", "instance")) + "}"
    out = fmt
    for k, v in metric.items():
        out = out.replace("{{" + k + "}}", v).replace("{{ " + k + " }}", v)
    return out


def panels_of(d):
    for p in d["panels"]:
        yield p
        yield from p.get("panels", [])


def run_queries(d, url, start, end, rate_interval):
    """{panel id: [(legend, [t], [v])] or table rows}."""
    out = {}
    for p in panels_of(d):
        if p["type"] == "row":
            continue
        series = []
        for t in p["targets"]:
            expr = substitute(t["expr"], rate_interval)
            if p["type"] == "table":
                for r in prom(url, "/api/v1/query", query=expr, time=end):
                    series.append((t["refId"], r["metric"], float(r["value"][1])))
                continue
            for r in prom(url, "/api/v1/query_range", query=expr, start=start, end=end, step=1):
                ts = [datetime.fromtimestamp(float(x), timezone.utc) for x, _ in r["values"]]
                vs = [float(v) for _, v in r["values"]]
                series.append((legend(t.get("legendFormat"), r["metric"]), ts, vs))
        out[p["id"]] = series
    return out


# ----------------------------------------------------------------------------- drawing

BG, PANEL, GRID, TEXT, DIM = "#111217", "#181b1f", "#2c3235", "#d8d9da", "#8e8e8e"
# Grafana's "classic" palette, in its order.
PALETTE = ["#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a9",
           "#705da0", "#508642", "#cca300", "#447ebc", "#c15c17", "#890f02", "#0a437c",
           "#6d1f62", "#584477"]


def fmt_value(v, unit, short=False):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "No data"
    if unit == "none":
        return f"{v:.0f}" if v == int(v) else f"{v:g}"
    if unit == "percentunit":
        return f"{v * 100:.1f}%"
    if unit == "s":
        if v == 0:
            return "0 s"
        if abs(v) < 1e-3:
            return f"{v * 1e6:.0f} µs"
        if abs(v) < 1:
            return f"{v * 1e3:.{0 if abs(v) >= 0.01 else 1}f} ms"
        return f"{v:.2f} s"
    suffix = {"Bps": "B/s", "bytes": "B", "reqps": " req/s", "ops": " ops/s"}.get(unit, "")
    base = 1024 if unit in ("Bps", "bytes") else 1000
    prefixes = ["", "Ki", "Mi", "Gi", "Ti"] if base == 1024 else ["", "K", "M", "G", "T"]
    a, i = abs(v), 0
    while a >= base and i < len(prefixes) - 1:
        a /= base
        v /= base
        i += 1
    digits = 0 if (a >= 100 or (a == int(a) and i == 0)) else (1 if a >= 10 else 2)
    sep = " " if suffix.startswith("B") or prefixes[i] else ""
    return f"{v:.{digits}f}{sep}{prefixes[i]}{suffix}"


def draw(d, results, out_png, start, end, note):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    all_panels = list(panels_of(d))
    grid_h = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in all_panels)
    unit_w, unit_h = 1.0, 0.40         # inches per grid column / grid row
    header = 1.1
    fig_w, fig_h = 24 * unit_w, grid_h * unit_h + header
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=100, facecolor=BG)
    fig.text(0.006, 1 - 0.35 / fig_h, f"{d['title']}  ·  preview", color=TEXT, fontsize=20,
             weight="bold", va="top")
    fig.text(0.006, 1 - 0.78 / fig_h, note, color=DIM, fontsize=11, va="top")

    def rect(gp, pad=0.05):
        x0 = gp["x"] * unit_w / fig_w
        top = 1 - (header + gp["y"] * unit_h) / fig_h
        w = gp["w"] * unit_w / fig_w
        h = gp["h"] * unit_h / fig_h
        return [x0 + pad / fig_w, top - h + pad / fig_h, w - 2 * pad / fig_w, h - 2 * pad / fig_h]

    # Ticks on whole 15 s, clear of the panel edges (where the y labels are).
    span = (end - start).total_seconds()
    step = 15 if span <= 120 else 60 * max(1, round(span / 300))
    first = math.ceil((start.timestamp() + 0.08 * span) / step) * step
    ticks = [datetime.fromtimestamp(t, timezone.utc)
             for t in range(int(first), int(end.timestamp() - 0.04 * span), step)]
    for p in all_panels:
        gp = p["gridPos"]
        if p["type"] == "row":
            x0, y0, w, h = rect(gp, 0)
            fig.text(x0 + 0.004, y0 + h / 2, p["title"], color=TEXT, fontsize=15, weight="bold", va="center")
            fig.add_artist(plt.Line2D([x0, x0 + w], [y0 + 0.1 * h, y0 + 0.1 * h], color=GRID, lw=1))
            continue
        x0, y0, w, h = rect(gp)
        title_h = 0.32 / fig_h
        bg = fig.add_axes([x0, y0, w, h])
        bg.set_facecolor(PANEL)
        bg.set_xticks([])
        bg.set_yticks([])
        for s in bg.spines.values():
            s.set_color(GRID)
        fig.text(x0 + 0.08 / fig_w, y0 + h - 0.07 / fig_h, p["title"], color=TEXT, fontsize=11.5,
                 weight="bold", va="top")
        defaults = p.get("fieldConfig", {}).get("defaults", {})
        unit = defaults.get("unit", "short")
        series = results.get(p["id"], [])

        if p["type"] == "stat":
            vals = [v for _, _, vs in series for v in vs if not math.isnan(v)]
            last = series[0][2][-1] if series and series[0][2] else None
            color = "#73bf69"
            for step in defaults.get("thresholds", {}).get("steps", []):
                if step["value"] is None or (last is not None and not math.isnan(last) and last >= step["value"]):
                    color = {"green": "#73bf69", "orange": "#ff9830", "red": "#f2495c"}.get(step["color"], step["color"])
            if series and vals:
                spark = fig.add_axes([x0, y0, w, h * 0.45])
                spark.set_axis_off()
                spark.fill_between(series[0][1], [0 if math.isnan(v) else v for v in series[0][2]],
                                   color=color, alpha=0.18, lw=0)
                spark.plot(series[0][1], series[0][2], color=color, lw=1, alpha=0.7)
                spark.set_xlim(start, end)
            fig.text(x0 + w / 2, y0 + h * 0.45, fmt_value(last, unit), color=color, fontsize=26,
                     weight="bold", ha="center", va="center")
            continue

        if p["type"] == "table":
            rows = {}
            for ref, metric, v in series:
                key = (metric.get("topic", ""), int(metric.get("partition", -1)))
                rows.setdefault(key, {})[ref] = v
            names = {"A": "log start", "B": "log end", "C": "high watermark", "D": "records",
                     "E": "size", "F": "segments"}
            for t in p.get("transformations", []):
                if t["id"] == "organize":
                    names = {k[len("Value #"):]: v for k, v in t["options"].get("renameByName", {}).items()}
            refs = [t["refId"] for t in p["targets"]]
            shown = sorted(k for k in rows if not k[0].startswith("__"))
            hidden = len(rows) - len(shown)
            cols = ["topic", "partition"] + [names.get(r, r) for r in refs]
            cells = [[k[0], str(k[1])] + [fmt_value(rows[k].get(r), "bytes" if names.get(r) == "size" else "none")
                                          for r in refs] for k in shown]
            tab_ax = fig.add_axes([x0 + 0.1 / fig_w, y0 + 0.1 / fig_h, w - 0.2 / fig_w, h - title_h - 0.25 / fig_h])
            tab_ax.set_axis_off()
            if cells:
                tb = tab_ax.table(cellText=cells, colLabels=cols, loc="upper center", cellLoc="left",
                                  colLoc="left")
                tb.auto_set_font_size(False)
                tb.set_fontsize(10.5)
                tb.scale(1, 1.35)
                for (r, _c), cell in tb.get_celld().items():
                    cell.set_edgecolor(GRID)
                    cell.set_facecolor("#22252b" if r == 0 else PANEL)
                    cell.get_text().set_color(TEXT if r else "#6e9fff")
            if hidden:
                fig.text(x0 + w - 0.1 / fig_w, y0 + h - 0.08 / fig_h,
                         f"+ {hidden} rows of internal topics (__consumer_offsets) not drawn here",
                         color=DIM, fontsize=9, ha="right", va="top")
            continue

        # timeseries
        legend_h = 0.55 / fig_h
        ax = fig.add_axes([x0 + 0.62 / fig_w, y0 + legend_h + 0.28 / fig_h,
                           w - 0.75 / fig_w, h - title_h - legend_h - 0.34 / fig_h])
        ax.set_facecolor(PANEL)
        custom = defaults.get("custom", {})
        log = custom.get("scaleDistribution", {}).get("type") == "log"
        handles = []
        # Largest series first (legend order, and the ones kept when the legend is cut).
        peak = lambda s: max((v for v in s[2] if not math.isnan(v)), default=-math.inf)
        for i, (name, ts, vs) in enumerate(sorted(series, key=lambda s: (-peak(s), s[0]))):
            if log:
                vs = [v if v > 0 else float("nan") for v in vs]
            line, = ax.plot(ts, vs, color=PALETTE[i % len(PALETTE)], lw=1.3, label=name)
            if custom.get("fillOpacity") and not log:
                ax.fill_between(ts, [0 if math.isnan(v) else v for v in vs], color=line.get_color(),
                                alpha=custom["fillOpacity"] / 100 / 2, lw=0)
            handles.append(line)
        if log:
            ax.set_yscale("log")
        else:
            data = [v for _, _, vs in series for v in vs if not math.isnan(v)]
            top = max(data, default=0)
            lo = min(0.0, min(data, default=0))
            top = top * 1.08 if top > 0 else 1
            ax.set_ylim(defaults.get("min", lo), defaults.get("max", top))
        ax.set_xlim(start, end)
        ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=timezone.utc))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos, u=unit: fmt_value(v, u)))
        ax.tick_params(colors=DIM, labelsize=8.5, length=0)
        ax.grid(True, color=GRID, lw=0.6)
        for s in ax.spines.values():
            s.set_visible(False)
        if not series:
            ax.text(0.5, 0.5, "No data", color=DIM, fontsize=13, ha="center", va="center",
                    transform=ax.transAxes)
        else:
            shown = handles[:8]
            more = len(handles) - len(shown)
            leg = fig.legend(shown, [hd.get_label() for hd in shown], loc="upper left",
                             bbox_to_anchor=(x0 + 0.1 / fig_w, y0 + legend_h + 0.04 / fig_h),
                             ncol=4 if gp["w"] >= 12 else 2, fontsize=8, frameon=False,
                             labelcolor=TEXT, handlelength=1.2, columnspacing=1.0,
                             borderaxespad=0, handletextpad=0.4)
            if more:
                fig.text(x0 + w - 0.1 / fig_w, y0 + 0.07 / fig_h, f"+{more} more series", color=DIM,
                         fontsize=8, ha="right")
    fig.savefig(out_png, dpi=100, facecolor=BG)
    plt.close(fig)


# ----------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spate", default=str(ROOT / "target" / "debug" / "spate"))
    ap.add_argument("--prometheus", default=shutil.which("prometheus") or "prometheus")
    ap.add_argument("--dashboard", default=str(HERE / "spate-dashboard.json"))
    ap.add_argument("--out", default=str(HERE / "dashboard-preview.png"))
    ap.add_argument("--workdir", default=str(ROOT / "target" / "grafana-preview"))
    ap.add_argument("--duration", type=float, default=60, help="seconds of load")
    ap.add_argument("--rate-interval", default="5s",
                    help="what $__rate_interval stands for (Grafana: 4 x the 1 s scrape interval, at least)")
    args = ap.parse_args()

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    d = json.loads(Path(args.dashboard).read_text())
    spate = prometheus = None
    try:
        spate, bootstrap, http = start_spate(Path(args.spate), workdir)
        prometheus, prom_url = start_prometheus(args.prometheus, workdir, http)
        print(f"spate {bootstrap} (metrics {http}), prometheus {prom_url}; load for {args.duration:.0f}s")
        time.sleep(3)
        start = time.time()
        drive_load(bootstrap, args.duration)
        # The range ends just before the load stopped; wait for the last scrapes first.
        end = min(time.time(), start + args.duration)
        time.sleep(3)
        results = run_queries(d, prom_url, start - 3, end, args.rate_interval)
        empty = [p["title"] for p in panels_of(d) if p["type"] != "row" and not results.get(p["id"])]
        print(f"{sum(len(v) for v in results.values())} series; panels without data: {empty or 'none'}")
        stamp = datetime.fromtimestamp(start, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        note = (f"Rendered by docs/grafana/render_preview.py (matplotlib, not Grafana): every panel is the "
                f"dashboard's own PromQL, evaluated by Prometheus scraping a real spate run every 1 s "
                f"(2 shards, {args.duration:.0f} s of confluent-kafka load from {stamp}; "
                f"$topic = $group = All, $__rate_interval = {args.rate_interval}).")
        draw(d, results, args.out, datetime.fromtimestamp(start - 3, timezone.utc),
             datetime.fromtimestamp(end, timezone.utc), note)
        print(f"wrote {args.out}")
    finally:
        stop(prometheus)
        stop(spate)


if __name__ == "__main__":
    main()
