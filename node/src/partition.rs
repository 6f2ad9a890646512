//! A partition on its owner shard: its log, its effective topic config, and the
//! owner-side half of every partition operation (produce checks and append, reads,
//! offset lookups, record deletion).

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use spate_log::{LogConfig, LogError, PartitionLog};
use spate_net::record_batch;
use spate_net::ErrorCode;

use crate::mesh::{PartitionOp, PartitionReply};
use crate::topic_config::EffectiveTopicConfig;

/// The leader epoch of every partition on a single node (no elections yet).
pub const LEADER_EPOCH: i32 = 0;

pub struct Partition {
    pub topic_id: [u8; 16],
    pub log: PartitionLog,
    config: RefCell<EffectiveTopicConfig>,
}

/// The partition directory: `<data_dir>/<topic>-<partition>`, as in Kafka.
pub fn partition_dir(data_dir: &std::path::Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

pub fn log_config(c: &EffectiveTopicConfig, cache_bytes: usize) -> LogConfig {
    LogConfig {
        segment_bytes: c.segment_bytes.max(4096) as u64,
        segment_ms: c.segment_ms,
        retention_ms: c.retention_ms,
        retention_bytes: c.retention_bytes,
        index_interval_bytes: c.index_interval_bytes.max(0) as u32,
        flush_messages: c.flush_messages,
        flush_ms: c.flush_ms,
        cache_bytes,
        ..LogConfig::default()
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Map a log error to the Kafka error code a client should see.
fn error_code(e: &LogError) -> i16 {
    match e {
        LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange.code(),
        _ => ErrorCode::KafkaStorageError.code(),
    }
}

impl Partition {
    pub async fn open(dir: PathBuf, topic_id: [u8; 16], config: EffectiveTopicConfig, cache_bytes: usize) -> Result<Partition, LogError> {
        let log = PartitionLog::open(dir, log_config(&config, cache_bytes)).await?;
        Ok(Partition { topic_id, log, config: RefCell::new(config) })
    }

    /// Remove the partition's log from disk (DeleteTopics).
    pub async fn delete(self) -> Result<(), LogError> {
        self.log.delete().await
    }

    pub fn reconfigure(&self, config: EffectiveTopicConfig, cache_bytes: usize) {
        if *self.config.borrow() != config {
            self.log.update_config(log_config(&config, cache_bytes));
            *self.config.borrow_mut() = config;
        }
    }

    pub fn high_watermark(&self) -> i64 {
        self.log.written_end_offset()
    }

    /// Check the batches of a produce request the way Kafka's log validator does on the
    /// hot path (no decompression): magic, sizes, CRC, and the topic's message size cap.
    /// With `message.timestamp.type=LogAppendTime` the batches get the broker's time.
    fn validate(&self, records: Bytes, now: i64) -> Result<Bytes, i16> {
        let config = self.config.borrow();
        let max = config.max_message_bytes.max(0) as usize;
        let mut count = 0usize;
        for batch in record_batch::batches(records.clone()) {
            let batch = batch.map_err(|_| ErrorCode::CorruptMessage.code())?;
            if batch.size() > max {
                return Err(ErrorCode::MessageTooLarge.code());
            }
            if batch.verify_crc().is_err() {
                return Err(ErrorCode::CorruptMessage.code());
            }
            if batch.record_count() < 0 || batch.last_offset_delta() < 0 {
                return Err(ErrorCode::InvalidRecord.code());
            }
            count += 1;
        }
        if count == 0 {
            return Err(ErrorCode::CorruptMessage.code());
        }
        if !config.log_append_time {
            return Ok(records);
        }
        // LogAppendTime: the broker's clock stamps each batch (CRC-covered, so one copy).
        let mut owned = BytesMut::from(&records[..]);
        let mut pos = 0;
        while pos < owned.len() {
            let corrupt = |_| ErrorCode::CorruptMessage.code();
            let size = record_batch::batch_size(&owned[pos..]).map_err(corrupt)?;
            record_batch::set_log_append_time(&mut owned[pos..pos + size], now).map_err(corrupt)?;
            pos += size;
        }
        Ok(owned.freeze())
    }

    /// Start a produce: checks run and offsets are assigned now, in call order; the
    /// returned future completes when the write (and sync, by policy) is done.
    pub fn produce(self: &Rc<Self>, records: Bytes, acks: i16) -> impl std::future::Future<Output = PartitionReply> + 'static {
        let now = now_ms();
        let started = if acks == -1 && self.config.borrow().min_insync_replicas > 1 {
            // Only this broker is in the ISR.
            Err(ErrorCode::NotEnoughReplicas.code())
        } else {
            self.validate(records, now).map(|r| self.log.append(r))
        };
        let log_append_time = self.config.borrow().log_append_time;
        let this = self.clone();
        async move {
            let append = match started {
                Ok(append) => append,
                Err(code) => return PartitionReply::Error(code),
            };
            match append.await {
                Ok(info) if acks == 0 => {
                    let _ = info;
                    PartitionReply::ProducedNoAck
                }
                Ok(info) => PartitionReply::Produced {
                    base_offset: info.base_offset,
                    log_append_time: if log_append_time { now } else { -1 },
                    log_start_offset: this.log.log_start_offset(),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "append failed");
                    PartitionReply::Error(error_code(&e))
                }
            }
        }
    }

    /// Everything but produce.
    pub async fn run(&self, op: PartitionOp) -> PartitionReply {
        match op {
            PartitionOp::Produce { .. } => PartitionReply::Error(ErrorCode::UnknownServerError.code()),
            PartitionOp::Fetch { offset, max_bytes, min_one } => match self.log.read(offset, max_bytes, min_one).await {
                Ok(r) => PartitionReply::Fetched {
                    batches: r.batches,
                    high_watermark: r.high_watermark,
                    log_start_offset: r.log_start_offset,
                },
                Err(e) => PartitionReply::FetchError {
                    code: error_code(&e),
                    high_watermark: self.high_watermark(),
                    log_start_offset: self.log.log_start_offset(),
                },
            },
            PartitionOp::ListOffset { timestamp } => self.list_offset(timestamp).await,
            PartitionOp::DeleteRecords { offset } => {
                let hw = self.high_watermark();
                let target = if offset == -1 { hw } else { offset };
                if target < 0 || target > hw {
                    return PartitionReply::Error(ErrorCode::OffsetOutOfRange.code());
                }
                match self.log.delete_records(target).await {
                    Ok(start) => PartitionReply::LowWatermark(start),
                    Err(e) => PartitionReply::Error(error_code(&e)),
                }
            }
            PartitionOp::EndOffsetForEpoch { current_leader_epoch, epoch } => {
                if current_leader_epoch > LEADER_EPOCH {
                    return PartitionReply::Error(ErrorCode::UnknownLeaderEpoch.code());
                }
                if current_leader_epoch >= 0 && current_leader_epoch < LEADER_EPOCH {
                    return PartitionReply::Error(ErrorCode::FencedLeaderEpoch.code());
                }
                if epoch == LEADER_EPOCH {
                    PartitionReply::EpochEnd { leader_epoch: LEADER_EPOCH, end_offset: self.log.log_end_offset() }
                } else {
                    // An epoch this log never had: Kafka's UNDEFINED_EPOCH / UNDEFINED_EPOCH_OFFSET.
                    PartitionReply::EpochEnd { leader_epoch: -1, end_offset: -1 }
                }
            }
            PartitionOp::Describe => PartitionReply::Described { size_bytes: self.log.size_bytes() },
        }
    }

    async fn list_offset(&self, timestamp: i64) -> PartitionReply {
        match timestamp {
            // Latest: the high watermark (also the last stable offset on a single node).
            -1 => PartitionReply::Offset { offset: self.high_watermark(), timestamp: -1 },
            // Earliest and earliest-local.
            -2 | -4 => PartitionReply::Offset { offset: self.log.log_start_offset(), timestamp: -1 },
            -3 => match self.log.max_timestamp() {
                Some((offset, timestamp)) => PartitionReply::Offset { offset, timestamp },
                None => PartitionReply::Offset { offset: -1, timestamp: -1 },
            },
            t if t >= 0 => match self.log.offset_for_timestamp(t).await {
                Ok(Some((offset, ts))) => PartitionReply::Offset { offset, timestamp: ts },
                Ok(None) => PartitionReply::Offset { offset: -1, timestamp: -1 },
                Err(e) => PartitionReply::Error(error_code(&e)),
            },
            // Latest-tiered and anything unknown: nothing in tiered storage.
            _ => PartitionReply::Offset { offset: -1, timestamp: -1 },
        }
    }
}
