//! RecordBatch (magic 2) view over `Bytes`, in-place header rewrites, record iteration
//! and a builder.
//!
//! Layout of the 61-byte batch header (big-endian):
//!
//! | offset | field |
//! |---|---|
//! | 0 | baseOffset i64 |
//! | 8 | batchLength i32 (bytes after this field) |
//! | 12 | partitionLeaderEpoch i32 |
//! | 16 | magic i8 (2) |
//! | 17 | crc u32 (CRC-32C of everything from attributes to the end) |
//! | 21 | attributes i16 |
//! | 23 | lastOffsetDelta i32 |
//! | 27 | baseTimestamp i64 |
//! | 35 | maxTimestamp i64 |
//! | 43 | producerId i64 |
//! | 51 | producerEpoch i16 |
//! | 53 | baseSequence i32 |
//! | 57 | records count i32 |

use bytes::{Bytes, BytesMut};

use crate::codec::{self, DecodeError};
use crate::compression::{self, Compression, CompressionError};
use crate::Encoder;

mod retain;
mod validate;
pub use retain::{empty_batch, retain_records, RecordView};
pub use validate::{
    BatchSummary, RecordCheck, RecordRules, ValidationError, CHECK_PREFIX, MAX_LISTED_MISSING_KEYS,
    NO_TIMESTAMP,
};

pub const BASE_OFFSET_OFFSET: usize = 0;
pub const BATCH_LENGTH_OFFSET: usize = 8;
pub const PARTITION_LEADER_EPOCH_OFFSET: usize = 12;
pub const MAGIC_OFFSET: usize = 16;
pub const CRC_OFFSET: usize = 17;
pub const ATTRIBUTES_OFFSET: usize = 21;
pub const LAST_OFFSET_DELTA_OFFSET: usize = 23;
pub const BASE_TIMESTAMP_OFFSET: usize = 27;
pub const MAX_TIMESTAMP_OFFSET: usize = 35;
pub const PRODUCER_ID_OFFSET: usize = 43;
pub const PRODUCER_EPOCH_OFFSET: usize = 51;
pub const BASE_SEQUENCE_OFFSET: usize = 53;
pub const RECORDS_COUNT_OFFSET: usize = 57;
/// Size of the batch header; records start here.
pub const HEADER_LEN: usize = 61;
/// Bytes before the part counted by batchLength (baseOffset + batchLength).
pub const LOG_OVERHEAD: usize = 12;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;
const DELETE_HORIZON_BIT: i16 = 0x40;

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("truncated batch: need {needed} bytes, have {have}")]
    Truncated { needed: usize, have: usize },
    #[error("invalid batch length {0}")]
    InvalidLength(i32),
    #[error("unsupported record batch magic {0} (only magic 2 is supported)")]
    UnsupportedMagic(i8),
    #[error("batch CRC mismatch: header says {expected:#010x}, computed {computed:#010x}")]
    CrcMismatch { expected: u32, computed: u32 },
    #[error("compression: {0}")]
    Compression(#[from] CompressionError),
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    #[error("a batch of {0} bytes is beyond the largest batch length")]
    TooLarge(usize),
}

impl From<DecodeError> for BatchError {
    fn from(e: DecodeError) -> Self {
        BatchError::InvalidRecord(e.to_string())
    }
}

/// Timestamp type of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(x)
}

/// Size of the batch at the front of `data` from its header (12 + batchLength), after
/// checking that the header fields needed for it are present and sane. Does not check
/// that the whole batch is present.
pub fn batch_size(data: &[u8]) -> Result<usize, BatchError> {
    if data.len() < LOG_OVERHEAD {
        return Err(BatchError::Truncated {
            needed: LOG_OVERHEAD,
            have: data.len(),
        });
    }
    let len = be_i32(data, BATCH_LENGTH_OFFSET);
    if len < (HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Err(BatchError::InvalidLength(len));
    }
    Ok(LOG_OVERHEAD + len as usize)
}

/// A view of one RecordBatch v2 (header plus records, possibly compressed).
#[derive(Clone, PartialEq, Eq)]
pub struct RecordBatch {
    data: Bytes,
}

impl std::fmt::Debug for RecordBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordBatch")
            .field("base_offset", &self.base_offset())
            .field("len", &self.data.len())
            .field("records", &self.record_count())
            .field("attributes", &self.attributes())
            .finish()
    }
}

impl RecordBatch {
    /// Parses the batch at the front of `data`; `data` must hold exactly one batch
    /// (use [`batches`] to split a records blob). Checks length and magic, not the CRC.
    pub fn parse(data: Bytes) -> Result<RecordBatch, BatchError> {
        if data.len() < HEADER_LEN {
            return Err(BatchError::Truncated {
                needed: HEADER_LEN,
                have: data.len(),
            });
        }
        let size = batch_size(&data)?;
        if size != data.len() {
            return Err(BatchError::InvalidLength(be_i32(
                &data,
                BATCH_LENGTH_OFFSET,
            )));
        }
        let magic = data[MAGIC_OFFSET] as i8;
        if magic != 2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        Ok(RecordBatch { data })
    }

    /// The whole batch.
    pub fn bytes(&self) -> &Bytes {
        &self.data
    }

    pub fn into_bytes(self) -> Bytes {
        self.data
    }

    /// Total size in bytes (12 + batchLength).
    pub fn size(&self) -> usize {
        self.data.len()
    }

    pub fn base_offset(&self) -> i64 {
        be_i64(&self.data, BASE_OFFSET_OFFSET)
    }
    pub fn batch_length(&self) -> i32 {
        be_i32(&self.data, BATCH_LENGTH_OFFSET)
    }
    pub fn partition_leader_epoch(&self) -> i32 {
        be_i32(&self.data, PARTITION_LEADER_EPOCH_OFFSET)
    }
    pub fn magic(&self) -> i8 {
        self.data[MAGIC_OFFSET] as i8
    }
    pub fn crc(&self) -> u32 {
        be_i32(&self.data, CRC_OFFSET) as u32
    }
    pub fn attributes(&self) -> i16 {
        be_i16(&self.data, ATTRIBUTES_OFFSET)
    }
    /// The compression codec; an error for the unused ids 5-7.
    pub fn compression(&self) -> Result<Compression, BatchError> {
        Ok(Compression::from_id(
            (self.attributes() & COMPRESSION_MASK) as u8,
        )?)
    }
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes() & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes() & TRANSACTIONAL_BIT != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes() & CONTROL_BIT != 0
    }
    pub fn has_delete_horizon(&self) -> bool {
        self.attributes() & DELETE_HORIZON_BIT != 0
    }
    /// The KIP-534 delete horizon: the base timestamp of a batch whose delete-horizon
    /// attribute is set (the log cleaner sets it on batches holding tombstones or
    /// transaction markers; they may be removed once the horizon has passed).
    pub fn delete_horizon_ms(&self) -> Option<i64> {
        self.has_delete_horizon().then(|| self.base_timestamp())
    }
    pub fn last_offset_delta(&self) -> i32 {
        be_i32(&self.data, LAST_OFFSET_DELTA_OFFSET)
    }
    pub fn base_timestamp(&self) -> i64 {
        be_i64(&self.data, BASE_TIMESTAMP_OFFSET)
    }
    pub fn max_timestamp(&self) -> i64 {
        be_i64(&self.data, MAX_TIMESTAMP_OFFSET)
    }
    pub fn producer_id(&self) -> i64 {
        be_i64(&self.data, PRODUCER_ID_OFFSET)
    }
    pub fn producer_epoch(&self) -> i16 {
        be_i16(&self.data, PRODUCER_EPOCH_OFFSET)
    }
    pub fn base_sequence(&self) -> i32 {
        be_i32(&self.data, BASE_SEQUENCE_OFFSET)
    }
    pub fn record_count(&self) -> i32 {
        be_i32(&self.data, RECORDS_COUNT_OFFSET)
    }
    /// baseOffset + lastOffsetDelta.
    pub fn last_offset(&self) -> i64 {
        self.base_offset()
            .wrapping_add(i64::from(self.last_offset_delta()))
    }
    /// The offset after this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().wrapping_add(1)
    }

    /// CRC-32C over attributes..end, as it should be stored in the header.
    pub fn compute_crc(&self) -> u32 {
        crc32c::crc32c(&self.data[ATTRIBUTES_OFFSET..])
    }

    pub fn verify_crc(&self) -> Result<(), BatchError> {
        let (expected, computed) = (self.crc(), self.compute_crc());
        if expected != computed {
            return Err(BatchError::CrcMismatch { expected, computed });
        }
        Ok(())
    }

    /// The records section after decompression (zero-copy when uncompressed).
    /// Decompression output is capped at `max_uncompressed` bytes.
    pub fn records_data(&self, max_uncompressed: usize) -> Result<Bytes, BatchError> {
        let body = self.data.slice(HEADER_LEN..);
        match self.compression()? {
            Compression::None => Ok(body),
            c => Ok(Bytes::from(compression::decompress(
                c,
                &body,
                max_uncompressed,
            )?)),
        }
    }

    /// Iterates over the records, decompressing first if needed (bounded by
    /// `max_uncompressed`). Keys, values and header values are slices of the
    /// (decompressed) data. The walk follows `recordCount`, whatever the gaps between
    /// offset deltas (a cleaned batch has some), and a batch with no records (the log
    /// cleaner keeps one as the last batch of a producer) is not decompressed.
    pub fn records(&self, max_uncompressed: usize) -> Result<RecordIter, BatchError> {
        let count = self.record_count();
        if count < 0 {
            return Err(BatchError::InvalidRecord(format!(
                "negative record count {count}"
            )));
        }
        let data = if count == 0 {
            Bytes::new()
        } else {
            self.records_data(max_uncompressed)?
        };
        Ok(RecordIter {
            data,
            remaining: count as usize,
        })
    }
}

/// Splits a records blob into batches. Each item is checked for length and magic; the
/// iterator ends after the first error. A trailing partial batch yields
/// [`BatchError::Truncated`] (fetch responses may legitimately end with one; produce
/// requests may not).
pub fn batches(data: Bytes) -> BatchIter {
    BatchIter {
        data,
        failed: false,
    }
}

pub struct BatchIter {
    data: Bytes,
    failed: bool,
}

impl BatchIter {
    /// Bytes not yet consumed.
    pub fn remaining(&self) -> &Bytes {
        &self.data
    }
}

impl Iterator for BatchIter {
    type Item = Result<RecordBatch, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.data.is_empty() {
            return None;
        }
        let res = (|| {
            let size = batch_size(&self.data)?;
            if size > self.data.len() {
                return Err(BatchError::Truncated {
                    needed: size,
                    have: self.data.len(),
                });
            }
            if self.data.len() > MAGIC_OFFSET && self.data[MAGIC_OFFSET] as i8 != 2 {
                return Err(BatchError::UnsupportedMagic(self.data[MAGIC_OFFSET] as i8));
            }
            RecordBatch::parse(self.data.split_to(size))
        })();
        if res.is_err() {
            self.failed = true;
        }
        Some(res)
    }
}

/// Rewrites baseOffset (not covered by the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) -> Result<(), BatchError> {
    write_at(batch, BASE_OFFSET_OFFSET, &base_offset.to_be_bytes())
}

/// Rewrites partitionLeaderEpoch (not covered by the CRC).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) -> Result<(), BatchError> {
    write_at(batch, PARTITION_LEADER_EPOCH_OFFSET, &epoch.to_be_bytes())
}

/// Rewrites maxTimestamp. This field IS covered by the CRC: call [`update_crc`]
/// afterwards (or use [`set_log_append_time`]).
pub fn set_max_timestamp(batch: &mut [u8], ts: i64) -> Result<(), BatchError> {
    write_at(batch, MAX_TIMESTAMP_OFFSET, &ts.to_be_bytes())
}

/// Recomputes and stores the CRC (after a rewrite of a CRC-covered field).
pub fn update_crc(batch: &mut [u8]) -> Result<(), BatchError> {
    if batch.len() < HEADER_LEN {
        return Err(BatchError::Truncated {
            needed: HEADER_LEN,
            have: batch.len(),
        });
    }
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
    write_at(batch, CRC_OFFSET, &crc.to_be_bytes())
}

/// Stamps a batch with `LogAppendTime`: sets the timestamp-type attribute, sets
/// maxTimestamp to `ts`, and recomputes the CRC (as a broker does for topics with
/// `message.timestamp.type=LogAppendTime`).
pub fn set_log_append_time(batch: &mut [u8], ts: i64) -> Result<(), BatchError> {
    if batch.len() < HEADER_LEN {
        return Err(BatchError::Truncated {
            needed: HEADER_LEN,
            have: batch.len(),
        });
    }
    let attrs = be_i16(batch, ATTRIBUTES_OFFSET) | TIMESTAMP_TYPE_BIT;
    write_at(batch, ATTRIBUTES_OFFSET, &attrs.to_be_bytes())?;
    set_max_timestamp(batch, ts)?;
    update_crc(batch)
}

fn write_at(batch: &mut [u8], at: usize, v: &[u8]) -> Result<(), BatchError> {
    let end = at + v.len();
    match batch.get_mut(at..end) {
        Some(dst) => {
            dst.copy_from_slice(v);
            Ok(())
        }
        None => Err(BatchError::Truncated {
            needed: end,
            have: batch.len(),
        }),
    }
}

/// One record header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Option<Bytes>,
}

/// One record of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub attributes: i8,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

impl Record {
    /// The record's absolute offset in `batch` (baseOffset + offsetDelta), saturating
    /// instead of overflowing on hostile values.
    pub fn offset_in(&self, batch: &RecordBatch) -> i64 {
        batch
            .base_offset()
            .saturating_add(i64::from(self.offset_delta))
    }

    /// The record's timestamp in `batch`: the batch's maxTimestamp for LogAppendTime,
    /// else baseTimestamp + timestampDelta, saturating instead of overflowing.
    pub fn timestamp_in(&self, batch: &RecordBatch) -> i64 {
        match batch.timestamp_type() {
            TimestampType::LogAppendTime => batch.max_timestamp(),
            TimestampType::CreateTime => {
                batch.base_timestamp().saturating_add(self.timestamp_delta)
            }
        }
    }
}

/// Iterator over the records of a batch.
pub struct RecordIter {
    data: Bytes,
    remaining: usize,
}

impl Iterator for RecordIter {
    type Item = Result<Record, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let r = read_record(&mut self.data);
        if r.is_err() {
            self.remaining = 0;
        }
        Some(r)
    }
}

fn read_varbytes(buf: &mut Bytes) -> Result<Option<Bytes>, BatchError> {
    let len = codec::read_varint(buf)?;
    if len < 0 {
        return Ok(None);
    }
    Ok(Some(codec::take(buf, len as usize)?))
}

/// A record split after its fixed fields: `tail` is the rest (key, value and headers)
/// as stored.
struct RecordParts {
    attributes: i8,
    timestamp_delta: i64,
    offset_delta: i32,
    tail: Bytes,
}

/// Takes one length-prefixed record off the front of `buf` and reads its fixed fields.
fn split_record(buf: &mut Bytes) -> Result<RecordParts, BatchError> {
    let len = codec::read_varint(buf)?;
    if len < 0 || len as usize > buf.len() {
        return Err(BatchError::InvalidRecord(format!(
            "record length {len} with {} bytes left",
            buf.len()
        )));
    }
    let mut tail = buf.split_to(len as usize);
    let attributes = codec::read_i8(&mut tail)?;
    let timestamp_delta = codec::read_varlong(&mut tail)?;
    let offset_delta = codec::read_varint(&mut tail)?;
    Ok(RecordParts {
        attributes,
        timestamp_delta,
        offset_delta,
        tail,
    })
}

/// Reads a record's header count and checks it against what is left (each header takes
/// at least 2 bytes: two varint lengths).
fn read_header_count(r: &mut Bytes) -> Result<usize, BatchError> {
    let count = codec::read_varint(r)?;
    if count < 0 || count as usize > r.len() / 2 {
        return Err(BatchError::InvalidRecord(format!("header count {count}")));
    }
    Ok(count as usize)
}

fn read_header_key(r: &mut Bytes) -> Result<Bytes, BatchError> {
    let klen = codec::read_varint(r)?;
    if klen < 0 {
        return Err(BatchError::InvalidRecord("null header key".into()));
    }
    Ok(codec::take(r, klen as usize)?)
}

fn ensure_record_end(r: &Bytes) -> Result<(), BatchError> {
    if !r.is_empty() {
        return Err(BatchError::InvalidRecord(format!(
            "{} trailing bytes in record",
            r.len()
        )));
    }
    Ok(())
}

fn read_record(buf: &mut Bytes) -> Result<Record, BatchError> {
    let RecordParts {
        attributes,
        timestamp_delta,
        offset_delta,
        tail: mut r,
    } = split_record(buf)?;
    let key = read_varbytes(&mut r)?;
    let value = read_varbytes(&mut r)?;
    let count = read_header_count(&mut r)?;
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let k = read_header_key(&mut r)?;
        let key = std::str::from_utf8(&k)
            .map_err(|_| BatchError::InvalidRecord("header key is not UTF-8".into()))?
            .to_owned();
        headers.push(Header {
            key,
            value: read_varbytes(&mut r)?,
        });
    }
    ensure_record_end(&r)?;
    Ok(Record {
        attributes,
        timestamp_delta,
        offset_delta,
        key,
        value,
        headers,
    })
}

/// Builds a RecordBatch v2 (for tests, tools and the load generator).
#[derive(Debug, Clone)]
pub struct RecordBatchBuilder {
    compression: Compression,
    level: Option<i32>,
    base_offset: i64,
    partition_leader_epoch: i32,
    log_append_time: bool,
    transactional: bool,
    control: bool,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    records: Vec<PendingRecord>,
}

/// A record added to a builder: timestamp, key, value, headers.
type PendingRecord = (i64, Option<Bytes>, Option<Bytes>, Vec<Header>);

impl RecordBatchBuilder {
    pub fn new(compression: Compression) -> Self {
        RecordBatchBuilder {
            compression,
            level: None,
            base_offset: 0,
            partition_leader_epoch: -1,
            log_append_time: false,
            transactional: false,
            control: false,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            records: Vec::new(),
        }
    }

    pub fn base_offset(mut self, offset: i64) -> Self {
        self.base_offset = offset;
        self
    }

    pub fn partition_leader_epoch(mut self, epoch: i32) -> Self {
        self.partition_leader_epoch = epoch;
        self
    }

    /// Idempotent/transactional producer identity.
    pub fn producer(mut self, id: i64, epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = id;
        self.producer_epoch = epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Compression level (see [`compression::compress_with_level`]).
    pub fn level(mut self, level: Option<i32>) -> Self {
        self.level = level;
        self
    }

    pub fn transactional(mut self, yes: bool) -> Self {
        self.transactional = yes;
        self
    }

    pub fn control(mut self, yes: bool) -> Self {
        self.control = yes;
        self
    }

    pub fn log_append_time(mut self, yes: bool) -> Self {
        self.log_append_time = yes;
        self
    }

    /// Adds a record with an absolute timestamp.
    pub fn append(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> &mut Self {
        let headers = headers
            .iter()
            .map(|(k, v)| Header {
                key: (*k).to_owned(),
                value: v.map(Bytes::copy_from_slice),
            })
            .collect();
        self.records.push((
            timestamp,
            key.map(Bytes::copy_from_slice),
            value.map(Bytes::copy_from_slice),
            headers,
        ));
        self
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Encodes the batch (with a correct CRC).
    pub fn build(&self) -> Result<Bytes, BatchError> {
        let base_ts = self.records.first().map(|r| r.0).unwrap_or(-1);
        let max_ts = self.records.iter().map(|r| r.0).max().unwrap_or(-1);
        let mut body = Encoder::new();
        for (i, (ts, key, value, headers)) in self.records.iter().enumerate() {
            let mut rec = Encoder::new();
            rec.put_i8(0);
            rec.put_varlong(ts.wrapping_sub(base_ts));
            rec.put_varint(i as i32);
            put_varbytes(&mut rec, key.as_ref());
            put_varbytes(&mut rec, value.as_ref());
            rec.put_varint(headers.len() as i32);
            for h in headers {
                rec.put_varint(h.key.len() as i32);
                rec.put_slice(h.key.as_bytes());
                put_varbytes(&mut rec, h.value.as_ref());
            }
            body.put_varint(rec.len() as i32);
            body.append(rec);
        }
        let mut raw = BytesMut::with_capacity(body.len());
        for c in body.finish() {
            raw.extend_from_slice(&c);
        }
        let records = match self.compression {
            Compression::None => raw.to_vec(),
            c => compression::compress_with_level(c, &raw, self.level)?,
        };
        let mut attributes = self.compression.id() as i16;
        if self.log_append_time {
            attributes |= TIMESTAMP_TYPE_BIT;
        }
        if self.transactional {
            attributes |= TRANSACTIONAL_BIT;
        }
        if self.control {
            attributes |= CONTROL_BIT;
        }
        let count = self.records.len() as i32;
        encode_batch(
            &HeaderFields {
                base_offset: self.base_offset,
                partition_leader_epoch: self.partition_leader_epoch,
                attributes,
                last_offset_delta: (count - 1).max(0),
                base_timestamp: base_ts,
                max_timestamp: max_ts,
                producer_id: self.producer_id,
                producer_epoch: self.producer_epoch,
                base_sequence: self.base_sequence,
                record_count: count,
            },
            &records,
        )
    }
}

/// The header fields a batch writer chooses (magic is 2; batchLength and the CRC follow
/// from the records).
struct HeaderFields {
    base_offset: i64,
    partition_leader_epoch: i32,
    attributes: i16,
    last_offset_delta: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    record_count: i32,
}

/// A whole batch: the header from `fields`, then `records` (already compressed as the
/// attributes say), with batchLength and the CRC filled in.
fn encode_batch(fields: &HeaderFields, records: &[u8]) -> Result<Bytes, BatchError> {
    let size = HEADER_LEN + records.len();
    let batch_length =
        i32::try_from(size - LOG_OVERHEAD).map_err(|_| BatchError::TooLarge(size))?;
    Ok(assemble_batch(fields, batch_length, records))
}

/// [`encode_batch`] once `batch_length` (= 49 + the records' size) is known to fit.
fn assemble_batch(fields: &HeaderFields, batch_length: i32, records: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(LOG_OVERHEAD + batch_length.max(0) as usize);
    out.extend_from_slice(&fields.base_offset.to_be_bytes());
    out.extend_from_slice(&batch_length.to_be_bytes());
    out.extend_from_slice(&fields.partition_leader_epoch.to_be_bytes());
    out.extend_from_slice(&[2]);
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&fields.attributes.to_be_bytes());
    out.extend_from_slice(&fields.last_offset_delta.to_be_bytes());
    out.extend_from_slice(&fields.base_timestamp.to_be_bytes());
    out.extend_from_slice(&fields.max_timestamp.to_be_bytes());
    out.extend_from_slice(&fields.producer_id.to_be_bytes());
    out.extend_from_slice(&fields.producer_epoch.to_be_bytes());
    out.extend_from_slice(&fields.base_sequence.to_be_bytes());
    out.extend_from_slice(&fields.record_count.to_be_bytes());
    out.extend_from_slice(records);
    let crc = crc32c::crc32c(&out[ATTRIBUTES_OFFSET..]);
    out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    out.freeze()
}

fn put_varbytes(e: &mut Encoder, v: Option<&Bytes>) {
    match v {
        None => e.put_varint(-1),
        Some(b) => {
            e.put_varint(b.len() as i32);
            e.put_slice(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(c: Compression, n: usize) -> Bytes {
        let mut b = RecordBatchBuilder::new(c)
            .base_offset(100)
            .partition_leader_epoch(3)
            .producer(7, 1, 10);
        for i in 0..n {
            let v = format!("value-{i}-{}", "x".repeat(i % 50));
            let h: &[(&str, Option<&[u8]>)] = &[("h1", Some(b"hv")), ("h2", None)];
            b.append(
                1_000 + i as i64,
                if i % 3 == 0 { None } else { Some(b"key") },
                Some(v.as_bytes()),
                h,
            );
        }
        b.build().unwrap()
    }

    #[test]
    fn build_parse_iterate_all_codecs() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let data = build(c, 100);
            let batch = RecordBatch::parse(data.clone()).unwrap();
            batch.verify_crc().unwrap();
            assert_eq!(batch.compression().unwrap(), c);
            assert_eq!(batch.base_offset(), 100);
            assert_eq!(batch.partition_leader_epoch(), 3);
            assert_eq!(batch.record_count(), 100);
            assert_eq!(batch.last_offset_delta(), 99);
            assert_eq!(batch.next_offset(), 200);
            assert_eq!(batch.base_timestamp(), 1000);
            assert_eq!(batch.max_timestamp(), 1099);
            assert_eq!(
                (
                    batch.producer_id(),
                    batch.producer_epoch(),
                    batch.base_sequence()
                ),
                (7, 1, 10)
            );
            assert_eq!(batch.timestamp_type(), TimestampType::CreateTime);
            assert!(!batch.is_transactional() && !batch.is_control());
            let recs: Vec<Record> = batch
                .records(1 << 20)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(recs.len(), 100);
            assert_eq!(recs[5].offset_delta, 5);
            assert_eq!(recs[5].offset_in(&batch), 105);
            assert_eq!(recs[5].timestamp_in(&batch), 1005);
            assert_eq!(recs[5].timestamp_delta, 5);
            assert_eq!(recs[3].key, None);
            assert_eq!(recs[4].key.as_deref(), Some(&b"key"[..]));
            assert_eq!(recs[2].value.as_deref(), Some(&b"value-2-xx"[..]));
            assert_eq!(
                recs[0].headers[0],
                Header {
                    key: "h1".into(),
                    value: Some(Bytes::from_static(b"hv"))
                }
            );
            assert_eq!(recs[0].headers[1].value, None);
            if c != Compression::None {
                assert!(batch.records(100).is_err(), "cap");
            }
        }
    }

    #[test]
    fn split_blob_and_rewrite() {
        let mut blob = BytesMut::new();
        blob.extend_from_slice(&build(Compression::None, 3));
        blob.extend_from_slice(&build(Compression::Lz4, 5));
        let first_len = build(Compression::None, 3).len();
        // Rewrites in place: offsets and epoch do not touch the CRC.
        set_base_offset(&mut blob[..], 5000).unwrap();
        set_partition_leader_epoch(&mut blob[first_len..], 9).unwrap();
        let all: Vec<_> = batches(blob.clone().freeze())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].base_offset(), 5000);
        assert_eq!(all[1].partition_leader_epoch(), 9);
        all[0].verify_crc().unwrap();
        all[1].verify_crc().unwrap();
        // maxTimestamp is CRC-covered.
        set_max_timestamp(&mut blob[..first_len], 42).unwrap();
        assert!(RecordBatch::parse(blob.clone().freeze().slice(..first_len))
            .unwrap()
            .verify_crc()
            .is_err());
        set_log_append_time(&mut blob[..first_len], 777).unwrap();
        let b = RecordBatch::parse(blob.clone().freeze().slice(..first_len)).unwrap();
        b.verify_crc().unwrap();
        assert_eq!(b.max_timestamp(), 777);
        assert_eq!(b.timestamp_type(), TimestampType::LogAppendTime);
        // A partial trailing batch.
        let partial = blob.clone().freeze().slice(..blob.len() - 1);
        let r: Vec<_> = batches(partial).collect();
        assert!(r[0].is_ok());
        assert!(matches!(r[1], Err(BatchError::Truncated { .. })));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn rejects_bad_batches() {
        let good = build(Compression::None, 2);
        let mut bad = BytesMut::from(&good[..]);
        bad[MAGIC_OFFSET] = 1;
        assert!(matches!(
            RecordBatch::parse(bad.clone().freeze()),
            Err(BatchError::UnsupportedMagic(1))
        ));
        assert!(matches!(
            batches(bad.freeze()).next(),
            Some(Err(BatchError::UnsupportedMagic(1)))
        ));
        let mut bad = BytesMut::from(&good[..]);
        bad[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(
            batches(bad.freeze()).next(),
            Some(Err(BatchError::InvalidLength(-5)))
        ));
        let mut bad = BytesMut::from(&good[..]);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(matches!(
            RecordBatch::parse(bad.freeze()).unwrap().verify_crc(),
            Err(BatchError::CrcMismatch { .. })
        ));
        assert!(RecordBatch::parse(good.slice(..30)).is_err());
        assert!(set_base_offset(&mut [0u8; 4], 1).is_err());
        // Record count larger than the records.
        let mut bad = BytesMut::from(&good[..]);
        bad[RECORDS_COUNT_OFFSET..RECORDS_COUNT_OFFSET + 4].copy_from_slice(&1000i32.to_be_bytes());
        let b = RecordBatch::parse(bad.freeze()).unwrap();
        let r: Vec<_> = b.records(1 << 20).unwrap().collect();
        assert!(r.iter().any(|x| x.is_err()));
        assert!(r.len() <= 3);
        // Unknown codec id.
        let mut bad = BytesMut::from(&good[..]);
        bad[ATTRIBUTES_OFFSET + 1] |= 7;
        assert!(RecordBatch::parse(bad.freeze())
            .unwrap()
            .records(1 << 20)
            .is_err());
    }
}
