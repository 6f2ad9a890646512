//! `spate-log`: one partition's log.
//!
//! Kafka's on-disk format (concatenated RecordBatch v2 in segment files named by their
//! 20-digit base offset, sparse `.index` and `.timeindex` files), written with
//! `O_DIRECT` through compio, 4 KiB-aligned, with group commit, a bounded cache of
//! recent batches, crash recovery, retention and DeleteRecords. See `docs/log.md`.

#![warn(missing_docs)]

pub mod batch;
pub mod buf;
pub mod cache;
pub mod clean;
mod config;
mod epoch;
mod error;
pub mod index;
mod io;
mod log;
mod ratelimit;
mod segment;

pub use cache::{BatchCache, SharedBatchCache};
pub use config::{LogConfig, SEVEN_DAYS_MS};
pub use epoch::{UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET};
pub use error::{LogError, Result};
pub use event_listener::EventListener;
/// Atomically replace a small file (temporary file `<path>.tmp`, synced, renamed, the
/// directory synced).
pub use io::replace_file;
pub use log::{
    latency_bucket, system_clock, AppendInfo, Clock, LogStats, PartitionLog, ReadResult,
    WriteTicket, LATENCY_BUCKETS,
};
pub use ratelimit::RateLimit;
