//! The shard's side of compaction: which of its compacted partitions to clean and
//! when (Kafka's `LogCleanerManager` rules), and swapping the results in.
//!
//! Every `log.cleaner.backoff.ms` the shard looks at each partition whose
//! `cleanup.policy` contains `compact` and queues a clean when
//! - its dirty ratio (dirty bytes over cleanable bytes) exceeds
//!   `min.cleanable.dirty.ratio`, or
//! - its oldest dirty record is older than `max.compaction.lag.ms`, or
//! - the delete horizon of the tombstones the last clean kept has passed (so they go).
//!
//! Segments holding records younger than `min.compaction.lag.ms`, and the active
//! segment, are never cleaned. A partition whose clean fails is left alone until the
//! broker restarts (Kafka's "uncleanable partitions"), and counted in the metrics.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Duration;

use super::{CleanJob, CleanOutcome, Cleaner};
use crate::mesh::PartitionKey;
use crate::partition::{now_ms, Partition};
use crate::shard::ShardContext;

/// What the metrics show of one compacted partition.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CleanGauges {
    /// Dirty bytes over cleanable bytes, 0 to 1.
    pub dirty_ratio: f64,
    /// How long the oldest dirty record has waited to be cleaned, in ms (0: none).
    pub compaction_lag_ms: i64,
    /// The last clean failed; no more until restart.
    pub uncleanable: bool,
    /// When a clean last finished, ms since the epoch (0: never since start).
    pub last_clean_ms: i64,
}

/// One shard's cleaning state.
pub struct ShardCleaning {
    cleaner: Cleaner,
    in_flight: RefCell<HashSet<PartitionKey>>,
    uncleanable: RefCell<HashSet<PartitionKey>>,
    gauges: RefCell<HashMap<PartitionKey, CleanGauges>>,
    outcomes: (flume::Sender<CleanOutcome>, flume::Receiver<CleanOutcome>),
}

impl ShardCleaning {
    pub fn new(cleaner: Cleaner) -> ShardCleaning {
        ShardCleaning {
            cleaner,
            in_flight: RefCell::default(),
            uncleanable: RefCell::default(),
            gauges: RefCell::default(),
            // At most one job per partition is out, so this holds every outcome.
            outcomes: flume::unbounded(),
        }
    }

    pub fn cleaner(&self) -> &Cleaner {
        &self.cleaner
    }

    /// Gauges of the shard's compacted partitions.
    pub fn gauges(&self) -> HashMap<PartitionKey, CleanGauges> {
        self.gauges.borrow().clone()
    }
}

/// The shard's cleaning tasks: the periodic check and the swap of finished cleans.
pub fn spawn(ctx: &Rc<ShardContext>) {
    if !ctx.cleaning.cleaner.enabled() {
        return;
    }
    let check_ctx = ctx.clone();
    compio::runtime::spawn(async move {
        loop {
            // Read each time: `log.cleaner.backoff.ms` is a dynamic broker config.
            let every = check_ctx
                .cleaning
                .cleaner
                .backoff()
                .max(Duration::from_millis(10));
            compio::time::sleep(every).await;
            if check_ctx.is_shutting_down() {
                return;
            }
            let partitions: Vec<(PartitionKey, Rc<Partition>)> = check_ctx
                .partitions
                .borrow()
                .iter()
                .map(|(k, p)| (k.clone(), p.clone()))
                .collect();
            let live: HashSet<&PartitionKey> = partitions.iter().map(|(k, _)| k).collect();
            check_ctx
                .cleaning
                .gauges
                .borrow_mut()
                .retain(|k, _| live.contains(k));
            for (key, p) in &partitions {
                consider(&check_ctx, key, p).await;
            }
        }
    })
    .detach();
    let swap_ctx = ctx.clone();
    compio::runtime::spawn(async move {
        let rx = swap_ctx.cleaning.outcomes.1.clone();
        while let Ok(outcome) = rx.recv_async().await {
            finish(&swap_ctx, outcome).await;
        }
    })
    .detach();
}

/// Look at one partition; queue a clean if it needs one.
async fn consider(ctx: &ShardContext, key: &PartitionKey, p: &Rc<Partition>) {
    let cleaning = &ctx.cleaning;
    let cfg = p.topic_config();
    if !cfg.compact {
        cleaning.gauges.borrow_mut().remove(key);
        return;
    }
    let now = now_ms();
    let view = p
        .log
        .cleanable(now, cfg.min_compaction_lag_ms, p.last_stable_offset());
    let dirty = view.dirty_bytes() > 0;
    let first_dirty_ts = match view.first_dirty_segment() {
        Some(s) if dirty => p.log.first_batch_timestamp(s.base).await.ok().flatten(),
        _ => None,
    };
    let lag_ms = first_dirty_ts.map_or(0, |ts| now.saturating_sub(ts).max(0));
    let ratio = view.dirty_ratio();
    let uncleanable = cleaning.uncleanable.borrow().contains(key);
    {
        let mut gauges = cleaning.gauges.borrow_mut();
        let g = gauges.entry(key.clone()).or_default();
        g.dirty_ratio = ratio;
        g.compaction_lag_ms = lag_ms;
        g.uncleanable = uncleanable;
    }
    if uncleanable || cleaning.in_flight.borrow().contains(key) || view.segments.is_empty() {
        return;
    }
    let lag_due = dirty && lag_ms > cfg.max_compaction_lag_ms;
    let ratio_due = dirty && ratio > cfg.min_cleanable_dirty_ratio;
    let horizon_due = view.delete_horizon_ms >= 0 && view.delete_horizon_ms <= now;
    if !(ratio_due || lag_due || horizon_due) {
        return;
    }
    tracing::debug!(topic = %key.topic, partition = key.partition, ratio, lag_ms, horizon_due, "queueing a clean");
    cleaning.in_flight.borrow_mut().insert(key.clone());
    cleaning.cleaner.submit(CleanJob {
        partition: key.clone(),
        topic_id: p.topic_id,
        segment_bytes: cfg.segment_bytes.max(1) as u64,
        index_interval_bytes: cfg.index_interval_bytes.max(0) as u32,
        delete_retention_ms: cfg.delete_retention_ms,
        producer_last_offsets: p.producer_last_offsets(),
        aborted: p.aborted_txns(),
        now_ms: now,
        dirty_ratio: ratio,
        reply: cleaning.outcomes.0.clone(),
        view,
    });
}

/// Swap a finished clean in, or record why it failed.
async fn finish(ctx: &ShardContext, outcome: CleanOutcome) {
    let cleaning = &ctx.cleaning;
    let key = outcome.partition;
    let p = ctx
        .partition(&key)
        .filter(|p| p.topic_id == outcome.topic_id);
    let result = match (outcome.result, &p) {
        (Ok(report), Some(p)) => {
            let (read, written, records, kept) = (
                report.bytes_read,
                report.bytes_written,
                report.records_read,
                report.records_kept,
            );
            let seconds = report.seconds;
            match p.log.replace_segments(report.groups).await {
                Ok(groups) => {
                    tracing::info!(
                        topic = %key.topic, partition = key.partition, groups,
                        bytes_read = read, bytes_written = written,
                        records_removed = records - kept, seconds,
                        "log cleaned"
                    );
                    if let Some(g) = cleaning.gauges.borrow_mut().get_mut(&key) {
                        g.last_clean_ms = now_ms();
                    }
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            }
        }
        (Err(e), Some(p)) => {
            if let Err(e) = p.log.discard_cleaner_output().await {
                tracing::warn!(topic = %key.topic, partition = key.partition, error = %e, "removing a failed clean's files failed");
            }
            Err(e)
        }
        // The partition was deleted (or recreated) meanwhile: its files went with it.
        (_, None) => Ok(()),
    };
    if let Err(e) = result {
        tracing::error!(topic = %key.topic, partition = key.partition, error = %e,
            "cleaning failed; the partition is not cleaned again until the broker restarts");
        cleaning.uncleanable.borrow_mut().insert(key.clone());
    }
    cleaning.in_flight.borrow_mut().remove(&key);
}
