//! The load: producer connections (pipelined, peak or fixed rate), consumer connections
//! (long-poll fetches), and the per-second progress reporter.
//!
//! Threads: each producer connection has a writer thread (paces, builds and writes
//! requests) and a reader thread (reads responses in order, matches them by correlation
//! id, records latencies); a window of `max_in_flight` tokens bounds the pipeline. Each
//! consumer connection is one thread with one fetch in flight. The calling thread prints
//! progress.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{channel, sync_channel};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hdrhistogram::Histogram;
use spate_net::messages::fetch_request::{FetchPartition, FetchTopic};
use spate_net::messages::produce_request::{PartitionProduceData, TopicProduceData};
use spate_net::messages::{FetchRequest, FetchResponse, ProduceRequest, ProduceResponse};
use spate_net::record_batch::{batches, BatchError};
use spate_net::{Message, Records, Uuid};

use crate::client::{self, decode_response, request_frame, write_chunks, Conn, FrameReader, Res};
use crate::config::{Config, Mode};
use crate::payload::{BatchMaker, StampTemplate, TS_HEADER};
use crate::rate::{self, latency_us, Pacer};
use crate::stats::{self, new_histogram, Counters, Tick};

const PRODUCE_VERSION: i16 = 9;
const FETCH_VERSION: i16 = 12;
/// After the producers stop, e2e consumers wait at most this long for the rest.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

pub fn wall_now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Everything a run measured.
pub struct RunResult {
    /// Produce latency: from the intended send time at a fixed rate (coordinated-omission
    /// corrected), from the actual send time at peak.
    pub produce: Histogram<u64>,
    /// Produce latency from the actual send time (service time), for comparison.
    pub produce_service: Histogram<u64>,
    pub e2e: Histogram<u64>,
    pub produced_msgs: u64,
    pub produced_bytes: u64,
    pub consumed_msgs: u64,
    pub consumed_bytes: u64,
    pub consumed_wire_bytes: u64,
    pub requests: u64,
    /// Largest share of the load time one producer writer spent building requests:
    /// near 1.0 the client, not the broker, limits the load.
    pub client_build_busy: f64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Seconds from load start to the last produce acknowledgement.
    pub produce_secs: f64,
    /// Seconds from load start to the last consumed record.
    pub consume_secs: f64,
    pub timeline: Vec<Tick>,
    pub partitions_total: usize,
    pub records_per_batch: usize,
}

/// Decrements a live-worker count when a worker ends, however it ends.
struct LiveGuard(Arc<AtomicUsize>);
impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

struct Shared {
    cfg: Config,
    bootstrap: String,
    counters: Counters,
    stop: AtomicBool,
    live_producers: Arc<AtomicUsize>,
    live_consumers: Arc<AtomicUsize>,
    start: Instant,
    end: Instant,
    warm_end: Instant,
    wall_start_us: i64,
}

impl Shared {
    fn wall_us(&self, t: Instant) -> i64 {
        self.wall_start_us + t.saturating_duration_since(self.start).as_micros() as i64
    }
}

struct ProducerPlan {
    parts: Vec<(usize, i32)>,
    per_request: usize,
    records_per_batch: usize,
    /// Requests per second at a fixed rate.
    requests_per_sec: Option<f64>,
    seed: u64,
}

struct ProducerOut {
    produce: Histogram<u64>,
    service: Histogram<u64>,
    requests: u64,
    finished: Instant,
    /// Time the writer spent building requests (batches, encoding).
    build_busy: Duration,
}

struct InFlight {
    correlation_id: i32,
    intended: Instant,
    sent: Instant,
    batches: usize,
}

fn producer(sh: Arc<Shared>, plan: ProducerPlan) -> Res<ProducerOut> {
    let _live = LiveGuard(sh.live_producers.clone());
    let cfg = &sh.cfg;
    let mut stream = client::connect(&sh.bootstrap)?;
    let e2e = cfg.mode == Mode::E2e;
    let mut maker = BatchMaker::new(cfg, plan.records_per_batch, plan.seed);
    let build_ts = wall_now_us() / 1000;
    let template = if e2e {
        StampTemplate::new(&mut maker)?
    } else {
        None
    };
    let prebuilt: Vec<Bytes> = if e2e {
        Vec::new()
    } else {
        (0..8)
            .map(|_| maker.build(build_ts, None))
            .collect::<Res<_>>()?
    };
    let rpb = plan.records_per_batch as u64;
    let batch_value_bytes = rpb * cfg.record_size as u64;

    // Pipelining: the writer takes a token per request, the reader returns it when the
    // response is in; entries travel writer -> reader in send order.
    let acks0 = cfg.acks == 0;
    let (tok_tx, tok_rx) = sync_channel::<()>(cfg.max_in_flight);
    let (inf_tx, inf_rx) = channel::<InFlight>();
    type ReaderOut = (Histogram<u64>, Histogram<u64>, Instant);
    let reader: Option<JoinHandle<ReaderOut>> = if acks0 {
        None
    } else {
        let rstream = stream
            .try_clone()
            .map_err(|e| format!("clone socket: {e}"))?;
        let sh = sh.clone();
        Some(std::thread::spawn(move || {
            let mut fr = FrameReader::new(rstream);
            let mut hist = new_histogram();
            let mut service = new_histogram();
            let mut last = Instant::now();
            while let Ok(inf) = inf_rx.recv() {
                let frame = match fr.read_frame() {
                    Ok(f) => f,
                    Err(e) => {
                        sh.counters.error(format!("produce response: {e}"));
                        break;
                    }
                };
                let done = Instant::now();
                last = done;
                let resp: ProduceResponse = match decode_response(
                    frame,
                    ProduceRequest::API_KEY,
                    PRODUCE_VERSION,
                    inf.correlation_id,
                ) {
                    Ok(r) => r,
                    Err(e) => {
                        sh.counters.error(e);
                        break;
                    }
                };
                let mut ok = 0u64;
                let mut seen = 0usize;
                for t in &resp.responses {
                    for p in &t.partition_responses {
                        seen += 1;
                        if p.error_code == 0 {
                            ok += 1;
                        } else {
                            sh.counters.error(format!(
                                "produce {}-{}: error code {} {}",
                                t.name,
                                p.index,
                                p.error_code,
                                p.error_message.as_deref().unwrap_or("")
                            ));
                        }
                    }
                }
                if seen != inf.batches {
                    sh.counters.error(format!(
                        "produce response has {seen} partitions, request had {}",
                        inf.batches
                    ));
                }
                let msgs = ok * rpb;
                sh.counters.produced(msgs, ok * batch_value_bytes);
                if inf.intended >= sh.warm_end && msgs > 0 {
                    stats::record(&mut hist, latency_us(inf.intended, done), msgs);
                    stats::record(&mut service, latency_us(inf.sent, done), msgs);
                }
                if tok_rx.recv().is_err() {
                    break;
                }
            }
            (hist, service, last)
        }))
    };

    let mut hist = new_histogram();
    let mut service = new_histogram();
    let pacer = plan.requests_per_sec.map(|r| Pacer::new(sh.start, r));
    let nparts = plan.parts.len();
    let per_request = plan.per_request.clamp(1, nparts.max(1));
    let mut cursor = 0usize;
    let mut k: u64 = 0;
    let mut build_busy = Duration::ZERO;
    let mut last_done = sh.start;
    rate::sleep_until(sh.start);
    let result: Res<()> = loop {
        if sh.stop.load(Relaxed) {
            break Ok(());
        }
        let intended = match &pacer {
            Some(p) => {
                let t = p.intended(k);
                if t >= sh.end {
                    break Ok(());
                }
                rate::sleep_until(t);
                t
            }
            None => {
                let now = Instant::now();
                if now >= sh.end {
                    break Ok(());
                }
                now
            }
        };
        let build_start = Instant::now();
        let mut topic_data: Vec<TopicProduceData> = Vec::new();
        let mut build_err = None;
        for j in 0..per_request {
            let (ti, p) = plan.parts[(cursor + j) % nparts];
            let batch = if e2e {
                let pub_us = sh.wall_us(intended);
                let built = match &template {
                    Some(t) => t.stamp(pub_us / 1000, pub_us),
                    None => maker.build(pub_us / 1000, Some(pub_us)),
                };
                match built {
                    Ok(b) => b,
                    Err(e) => {
                        build_err = Some(e);
                        break;
                    }
                }
            } else {
                prebuilt[(k as usize + j) % prebuilt.len()].clone()
            };
            let name = &cfg.topics[ti];
            let part = PartitionProduceData {
                index: p,
                records: Some(Records::from(batch)),
            };
            match topic_data.iter_mut().find(|t| &t.name == name) {
                Some(t) => t.partition_data.push(part),
                None => topic_data.push(TopicProduceData {
                    name: name.clone(),
                    topic_id: Default::default(),
                    partition_data: vec![part],
                }),
            }
        }
        if let Some(e) = build_err {
            break Err(e);
        }
        cursor = (cursor + per_request) % nparts.max(1);
        let correlation_id = (k & 0x7fff_ffff) as i32;
        k += 1;
        let req = ProduceRequest {
            transactional_id: None,
            acks: cfg.acks,
            timeout_ms: 30_000,
            topic_data,
        };
        let frame = request_frame(&req, PRODUCE_VERSION, correlation_id);
        build_busy += build_start.elapsed();
        if !acks0 && tok_tx.send(()).is_err() {
            break Ok(()); // the reader ended (and reported why)
        }
        let sent = Instant::now();
        let intended = if pacer.is_some() { intended } else { sent };
        if !acks0
            && inf_tx
                .send(InFlight {
                    correlation_id,
                    intended,
                    sent,
                    batches: per_request,
                })
                .is_err()
        {
            break Ok(());
        }
        if let Err(e) = write_chunks(&mut stream, &frame) {
            break Err(format!("send produce: {e}"));
        }
        if acks0 {
            let done = Instant::now();
            last_done = done;
            let msgs = per_request as u64 * rpb;
            sh.counters
                .produced(msgs, per_request as u64 * batch_value_bytes);
            if intended >= sh.warm_end {
                stats::record(&mut hist, latency_us(intended, done), msgs);
                stats::record(&mut service, latency_us(sent, done), msgs);
            }
        }
    };
    drop(inf_tx);
    drop(tok_tx);
    if let Err(e) = &result {
        sh.counters.error(e.clone());
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
    if let Some(r) = reader {
        match r.join() {
            Ok((h, s, last)) => {
                hist = h;
                service = s;
                last_done = last;
            }
            Err(_) => return Err("producer reader thread panicked".into()),
        }
    }
    Ok(ProducerOut {
        produce: hist,
        service,
        requests: k,
        finished: last_done,
        build_busy,
    })
}

struct ConsumerPart {
    topic: String,
    partition: i32,
    offset: i64,
    end: Option<i64>,
    done: bool,
}

fn consumer(sh: Arc<Shared>, mut parts: Vec<ConsumerPart>) -> Res<(Histogram<u64>, Instant)> {
    let _live = LiveGuard(sh.live_consumers.clone());
    let cfg = &sh.cfg;
    let e2e = cfg.mode == Mode::E2e;
    let mut stream = client::connect(&sh.bootstrap)?;
    let mut fr = FrameReader::new(
        stream
            .try_clone()
            .map_err(|e| format!("clone socket: {e}"))?,
    );
    let index: HashMap<(String, i32), usize> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| ((p.topic.clone(), p.partition), i))
        .collect();
    let mut hist = new_histogram();
    let warm_end_us = sh.wall_us(sh.warm_end);
    let hard_deadline = sh.end + if e2e { DRAIN_GRACE } else { Duration::ZERO };
    let mut last_record = sh.start;
    let mut corr: i32 = 0;
    for p in parts.iter_mut() {
        p.done = matches!(p.end, Some(e) if p.offset >= e);
    }
    rate::sleep_until(sh.start);
    loop {
        let now = Instant::now();
        if now >= hard_deadline || sh.stop.load(Relaxed) || parts.iter().all(|p| p.done) {
            break;
        }
        if e2e && sh.live_producers.load(Relaxed) == 0 {
            let s = sh.counters.snapshot();
            if s.consumed_msgs >= s.produced_msgs {
                break;
            }
        }
        let mut topics: Vec<FetchTopic> = Vec::new();
        for p in parts.iter().filter(|p| !p.done) {
            let fp = FetchPartition {
                partition: p.partition,
                current_leader_epoch: -1,
                fetch_offset: p.offset,
                last_fetched_epoch: -1,
                log_start_offset: -1,
                partition_max_bytes: cfg.fetch_partition_bytes,
                replica_directory_id: Uuid::ZERO,
            };
            match topics.iter_mut().find(|t| t.topic == p.topic) {
                Some(t) => t.partitions.push(fp),
                None => topics.push(FetchTopic {
                    topic: p.topic.clone(),
                    topic_id: Uuid::ZERO,
                    partitions: vec![fp],
                }),
            }
        }
        let left_ms = hard_deadline.saturating_duration_since(now).as_millis() as i32;
        let req = FetchRequest {
            max_wait_ms: cfg.fetch_wait_ms.min(left_ms.max(1)),
            min_bytes: 1,
            max_bytes: 64 << 20,
            topics,
            ..FetchRequest::default()
        };
        corr = corr.wrapping_add(1) & 0x7fff_ffff;
        write_chunks(&mut stream, &request_frame(&req, FETCH_VERSION, corr))
            .map_err(|e| format!("send fetch: {e}"))?;
        let frame = fr
            .read_frame()
            .map_err(|e| format!("fetch response: {e}"))?;
        let received = Instant::now();
        let now_us = sh.wall_us(received);
        let resp: FetchResponse =
            decode_response(frame, FetchRequest::API_KEY, FETCH_VERSION, corr)?;
        if resp.error_code != 0 {
            return Err(format!("fetch: error code {}", resp.error_code));
        }
        let mut msgs = 0u64;
        let mut bytes = 0u64;
        let mut wire = 0u64;
        for t in resp.responses {
            for pd in t.partitions {
                let Some(&i) = index.get(&(t.topic.clone(), pd.partition_index)) else {
                    sh.counters.error(format!(
                        "fetch answered for unrequested {}-{}",
                        t.topic, pd.partition_index
                    ));
                    continue;
                };
                let p = &mut parts[i];
                if pd.error_code != 0 {
                    sh.counters.error(format!(
                        "fetch {}-{}: error code {}",
                        p.topic, p.partition, pd.error_code
                    ));
                    p.done = true;
                    continue;
                }
                let Some(records) = pd.records else { continue };
                for b in batches(records.to_contiguous()) {
                    let batch = match b {
                        Ok(b) => b,
                        Err(BatchError::Truncated { .. }) => break, // partial batch at the end
                        Err(e) => {
                            sh.counters.error(format!(
                                "fetch {}-{}: bad batch: {e}",
                                p.topic, p.partition
                            ));
                            break;
                        }
                    };
                    let next = batch.next_offset();
                    if next <= p.offset || batch.is_control() {
                        p.offset = p.offset.max(next);
                        continue;
                    }
                    // Offsets in a batch are contiguous (no compaction here).
                    let n = (next - p.offset.max(batch.base_offset())).max(0) as u64;
                    msgs += n;
                    bytes += n * cfg.record_size as u64;
                    wire += batch.size() as u64;
                    if e2e {
                        // spate-bench stamps every record of a batch with the same
                        // publish time, so the first record speaks for the batch.
                        let first = match batch.records(256 << 20) {
                            Ok(mut it) => it.next(),
                            Err(e) => {
                                sh.counters
                                    .error(format!("fetch {}-{}: {e}", p.topic, p.partition));
                                break;
                            }
                        };
                        match first {
                            Some(Ok(r)) => {
                                let ts = r
                                    .headers
                                    .iter()
                                    .find(|h| h.key == TS_HEADER)
                                    .and_then(|h| h.value.as_ref());
                                if let Some(Ok(raw)) = ts.map(|v| <[u8; 8]>::try_from(&v[..])) {
                                    let sent_us = i64::from_be_bytes(raw);
                                    if sent_us >= warm_end_us {
                                        stats::record(
                                            &mut hist,
                                            now_us.saturating_sub(sent_us).max(0) as u64,
                                            n,
                                        );
                                    }
                                }
                            }
                            Some(Err(e)) => {
                                sh.counters.error(format!(
                                    "fetch {}-{}: bad record: {e}",
                                    p.topic, p.partition
                                ));
                                break;
                            }
                            None => {}
                        }
                    }
                    p.offset = next;
                }
                if matches!(p.end, Some(e) if p.offset >= e) {
                    p.done = true;
                }
            }
        }
        if msgs > 0 {
            last_record = received;
            sh.counters.consumed(msgs, bytes, wire);
        }
    }
    Ok((hist, last_record))
}

/// Runs one load against `bootstrap`, printing progress unless `quiet`.
pub fn run(cfg: &Config, bootstrap: &str, quiet: bool) -> Res<RunResult> {
    let mut ctl = Conn::connect(bootstrap)?;
    let counts = ctl.ensure_topics(&cfg.topics, cfg.partitions)?;
    let mut parts: Vec<(usize, i32)> = Vec::new();
    for (ti, (t, &n)) in cfg.topics.iter().zip(&counts).enumerate() {
        if n != cfg.partitions as usize {
            eprintln!(
                "spate-bench: topic {t} has {n} partitions (asked for {}); using {n}",
                cfg.partitions
            );
        }
        parts.extend((0..n as i32).map(|p| (ti, p)));
    }
    let named: Vec<(String, i32)> = parts
        .iter()
        .map(|&(ti, p)| (cfg.topics[ti].clone(), p))
        .collect();
    let (cons_start, cons_end) = match cfg.mode {
        Mode::Produce => (Vec::new(), Vec::new()),
        Mode::Consume => (
            ctl.list_offsets(&named, -2)?,
            ctl.list_offsets(&named, -1)?
                .into_iter()
                .map(Some)
                .collect(),
        ),
        Mode::E2e => (ctl.list_offsets(&named, -1)?, vec![None; named.len()]),
    };
    drop(ctl);

    let lead = Duration::from_millis(200); // lets every connection open before the load
    let start = Instant::now() + lead;
    let wall_start_us = wall_now_us() + lead.as_micros() as i64;
    let end = start + Duration::from_secs_f64(cfg.duration);
    let sh = Arc::new(Shared {
        cfg: cfg.clone(),
        bootstrap: bootstrap.to_owned(),
        counters: Counters::default(),
        stop: AtomicBool::new(false),
        live_producers: Arc::new(AtomicUsize::new(0)),
        live_consumers: Arc::new(AtomicUsize::new(0)),
        start,
        end,
        warm_end: start + Duration::from_secs_f64(cfg.warmup),
        wall_start_us,
    });

    let total = parts.len();
    let mut rpb_used = cfg.records_per_batch;
    let mut producers = Vec::new();
    if cfg.mode != Mode::Consume {
        let conns = cfg.connections.min(total).max(1);
        if let Some(r) = cfg.rate {
            rpb_used =
                rate::records_per_batch_at_rate(r, total, cfg.linger_ms, cfg.records_per_batch);
        }
        for c in 0..conns {
            let owned: Vec<(usize, i32)> = parts.iter().copied().skip(c).step_by(conns).collect();
            let per_request = cfg
                .partitions_per_request
                .unwrap_or(owned.len())
                .clamp(1, owned.len());
            let requests_per_sec = cfg.rate.map(|r| {
                rate::requests_per_sec(r, owned.len() as f64 / total as f64, per_request * rpb_used)
            });
            let plan = ProducerPlan {
                parts: owned,
                per_request,
                records_per_batch: rpb_used,
                requests_per_sec,
                seed: c as u64 + 1,
            };
            sh.live_producers.fetch_add(1, Relaxed);
            let sh2 = sh.clone();
            producers.push(std::thread::spawn(move || producer(sh2, plan)));
        }
    }
    let mut consumers = Vec::new();
    if cfg.mode != Mode::Produce {
        let n = cfg.consumers.min(total).max(1);
        for c in 0..n {
            let mine: Vec<ConsumerPart> = (c..total)
                .step_by(n)
                .map(|i| ConsumerPart {
                    topic: named[i].0.clone(),
                    partition: named[i].1,
                    offset: cons_start[i],
                    end: cons_end[i],
                    done: false,
                })
                .collect();
            sh.live_consumers.fetch_add(1, Relaxed);
            let sh2 = sh.clone();
            consumers.push(std::thread::spawn(move || consumer(sh2, mine)));
        }
    }

    // Progress, once a second, until every worker is done.
    let mut timeline = Vec::new();
    rate::sleep_until(start);
    let mut last = sh.counters.snapshot();
    let mut last_t = start;
    let mut next_tick = start + Duration::from_secs(1);
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = Instant::now();
        let live = sh.live_producers.load(Relaxed) + sh.live_consumers.load(Relaxed);
        if now >= next_tick || live == 0 {
            let snap = sh.counters.snapshot();
            let dt = (now - last_t).as_secs_f64();
            if dt >= 0.25 || timeline.is_empty() {
                let tick = Tick::between((now - start).as_secs_f64(), dt, &last, &snap);
                if !quiet {
                    eprintln!(
                        "[{:6.1}s] produce {:>11.0} msg/s {:>8.1} MB/s | consume {:>11.0} msg/s {:>8.1} MB/s | errors {}",
                        tick.t,
                        tick.produce_msgs_per_sec,
                        tick.produce_mb_per_sec,
                        tick.consume_msgs_per_sec,
                        tick.consume_mb_per_sec,
                        snap.errors
                    );
                }
                timeline.push(tick);
                last = snap;
                last_t = now;
            }
            next_tick += Duration::from_secs(1);
        }
        if live == 0 {
            break;
        }
        // Safety net: nothing runs past the drain grace plus I/O timeouts.
        if now > end + DRAIN_GRACE + client::IO_TIMEOUT + Duration::from_secs(5) {
            sh.stop.store(true, Relaxed);
            eprintln!("spate-bench: workers did not finish in time; stopping");
            break;
        }
    }

    let mut produce = new_histogram();
    let mut produce_service = new_histogram();
    let mut e2e = new_histogram();
    let mut requests = 0;
    let mut client_build_busy: f64 = 0.0;
    let mut produce_end = start;
    for h in producers {
        match h.join() {
            Ok(Ok(out)) => {
                let _ = produce.add(&out.produce);
                let _ = produce_service.add(&out.service);
                requests += out.requests;
                client_build_busy =
                    client_build_busy.max(out.build_busy.as_secs_f64() / cfg.duration);
                produce_end = produce_end.max(out.finished);
            }
            Ok(Err(e)) => sh.counters.error(e),
            Err(_) => sh.counters.error("producer thread panicked".into()),
        }
    }
    let mut consume_end = start;
    for h in consumers {
        match h.join() {
            Ok(Ok((hist, last))) => {
                let _ = e2e.add(&hist);
                consume_end = consume_end.max(last);
            }
            Ok(Err(e)) => sh.counters.error(e),
            Err(_) => sh.counters.error("consumer thread panicked".into()),
        }
    }
    let snap = sh.counters.snapshot();
    // A producer that never got an ack still ran for the whole duration.
    let produce_secs = (produce_end - start)
        .as_secs_f64()
        .max(if snap.produced_msgs == 0 {
            cfg.duration
        } else {
            0.001
        });
    let consume_secs = (consume_end - start).as_secs_f64().max(0.001);
    Ok(RunResult {
        produce,
        produce_service,
        e2e,
        produced_msgs: snap.produced_msgs,
        produced_bytes: snap.produced_bytes,
        consumed_msgs: snap.consumed_msgs,
        consumed_bytes: snap.consumed_bytes,
        consumed_wire_bytes: sh.counters.consumed_wire_bytes.load(Relaxed),
        requests,
        client_build_busy,
        errors: snap.errors,
        first_error: sh.counters.first_error(),
        produce_secs,
        consume_secs,
        timeline,
        partitions_total: total,
        records_per_batch: rpb_used,
    })
}

#[cfg(test)]
mod tests {
    //! The client against a scripted in-process broker: topic lookup, pipelined produce
    //! requests matched by correlation id, error accounting, bounded shutdown.

    use super::*;
    use crate::config::Knobs;
    use bytes::BytesMut;
    use spate_net::messages::list_offsets_response::{
        ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
    };
    use spate_net::messages::metadata_response::{
        MetadataResponsePartition, MetadataResponseTopic,
    };
    use spate_net::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
    use spate_net::messages::{
        ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse, ProduceResponse,
    };
    use spate_net::{decode_request_header, encode_response_frame, response_header_version};
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[derive(Clone, Copy, PartialEq)]
    enum Fault {
        None,
        /// Answers produce requests with a correlation id that was never sent.
        WrongCorrelation,
        /// Answers every produce partition with NOT_LEADER_OR_FOLLOWER.
        ErrorCode,
    }

    fn respond<M: Message>(
        s: &mut std::net::TcpStream,
        corr: i32,
        key: i16,
        version: i16,
        body: &M,
    ) {
        let frame =
            encode_response_frame(corr, response_header_version(key, version), body, version);
        for c in frame {
            s.write_all(&c).unwrap();
        }
    }

    fn serve(mut s: std::net::TcpStream, partitions: i32, fault: Fault) {
        let mut buf = BytesMut::new();
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            let frame = loop {
                match spate_net::frame::split_frame(&mut buf, 64 << 20) {
                    Ok(Some(f)) => break f,
                    Ok(None) => {}
                    Err(_) => return,
                }
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let mut frame = frame;
            let h = decode_request_header(&mut frame).unwrap();
            let (key, v, corr) = (h.request_api_key, h.request_api_version, h.correlation_id);
            match key {
                k if k == MetadataRequest::API_KEY => {
                    let req = MetadataRequest::decode(&mut frame, v).unwrap();
                    let topics = req
                        .topics
                        .unwrap_or_default()
                        .into_iter()
                        .map(|t| MetadataResponseTopic {
                            name: t.name,
                            partitions: (0..partitions)
                                .map(|p| MetadataResponsePartition {
                                    partition_index: p,
                                    leader_id: 0,
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        })
                        .collect();
                    respond(
                        &mut s,
                        corr,
                        key,
                        v,
                        &MetadataResponse {
                            topics,
                            ..Default::default()
                        },
                    );
                }
                k if k == ListOffsetsRequest::API_KEY => {
                    let req = ListOffsetsRequest::decode(&mut frame, v).unwrap();
                    let topics = req
                        .topics
                        .into_iter()
                        .map(|t| ListOffsetsTopicResponse {
                            name: t.name,
                            partitions: t
                                .partitions
                                .iter()
                                .map(|p| ListOffsetsPartitionResponse {
                                    partition_index: p.partition_index,
                                    offset: 0,
                                    ..Default::default()
                                })
                                .collect(),
                        })
                        .collect();
                    respond(
                        &mut s,
                        corr,
                        key,
                        v,
                        &ListOffsetsResponse {
                            topics,
                            ..Default::default()
                        },
                    );
                }
                k if k == ProduceRequest::API_KEY => {
                    let req = ProduceRequest::decode(&mut frame, v).unwrap();
                    if req.acks == 0 {
                        continue;
                    }
                    let error_code = if fault == Fault::ErrorCode { 6 } else { 0 };
                    let responses = req
                        .topic_data
                        .iter()
                        .map(|t| TopicProduceResponse {
                            name: t.name.clone(),
                            topic_id: Default::default(),
                            partition_responses: t
                                .partition_data
                                .iter()
                                .map(|p| PartitionProduceResponse {
                                    index: p.index,
                                    error_code,
                                    ..Default::default()
                                })
                                .collect(),
                        })
                        .collect();
                    let corr = if fault == Fault::WrongCorrelation {
                        corr.wrapping_add(1000)
                    } else {
                        corr
                    };
                    respond(
                        &mut s,
                        corr,
                        key,
                        v,
                        &ProduceResponse {
                            responses,
                            ..Default::default()
                        },
                    );
                }
                _ => return,
            }
        }
    }

    fn mock_broker(partitions: i32, fault: Fault) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { return };
                std::thread::spawn(move || serve(s, partitions, fault));
            }
        });
        addr
    }

    fn cfg(rate: Option<f64>, acks: i16) -> Config {
        let k = Knobs {
            topic: Some("t".into()),
            partitions: Some(3),
            record_size: Some(10),
            records_per_batch: Some(5),
            duration: Some(0.5),
            rate,
            acks: Some(acks),
            connections: Some(2),
            max_in_flight: Some(3),
            linger_ms: Some(5.0),
            ..Knobs::default()
        };
        Config::resolve(Mode::Produce, k).unwrap()
    }

    #[test]
    fn fixed_rate_produce_against_a_mock_broker() {
        let addr = mock_broker(3, Fault::None);
        let r = run(&cfg(Some(2000.0), 1), &addr, true).unwrap();
        assert_eq!(r.errors, 0, "{:?}", r.first_error);
        // 2000 msg/s for 0.5 s, in whole requests.
        assert!(
            (900..=1100).contains(&r.produced_msgs),
            "{}",
            r.produced_msgs
        );
        assert_eq!(r.produce.len(), r.produced_msgs);
        assert_eq!(r.partitions_total, 3);
    }

    #[test]
    fn peak_and_acks0_produce_against_a_mock_broker() {
        let addr = mock_broker(3, Fault::None);
        let r = run(&cfg(None, 1), &addr, true).unwrap();
        assert_eq!(r.errors, 0, "{:?}", r.first_error);
        assert!(r.produced_msgs > 0 && r.requests > 0);
        let r = run(&cfg(Some(1000.0), 0), &addr, true).unwrap();
        assert_eq!(r.errors, 0, "{:?}", r.first_error);
        assert!(r.produced_msgs > 0);
    }

    #[test]
    fn mismatched_correlation_id_is_an_error_not_a_hang() {
        let addr = mock_broker(3, Fault::WrongCorrelation);
        let t0 = Instant::now();
        let r = run(&cfg(Some(1000.0), 1), &addr, true).unwrap();
        assert!(r.errors > 0);
        assert!(r.first_error.unwrap_or_default().contains("correlation"));
        assert_eq!(r.produced_msgs, 0);
        assert!(t0.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn partition_error_codes_are_counted() {
        let addr = mock_broker(3, Fault::ErrorCode);
        let r = run(&cfg(Some(1000.0), 1), &addr, true).unwrap();
        assert!(r.errors > 0);
        assert_eq!(r.produced_msgs, 0);
        assert!(r.first_error.unwrap_or_default().contains("error code 6"));
    }
}
