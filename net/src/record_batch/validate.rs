//! Record-level validation of one RecordBatch v2, as Kafka's broker checks a produced
//! batch (`LogValidator` with `DefaultRecordBatch`/`DefaultRecord`'s readers) before
//! it assigns offsets.
//!
//! The batch is only read, never rebuilt: the stored bytes stay the client's. An
//! uncompressed batch is walked once, in place, without allocating. A compressed one is
//! decompressed as a stream through a small stack buffer and walked as it inflates;
//! inflating beyond the caller's cap stops the walk, so neither memory nor time grows
//! with what a compressed payload claims.
//!
//! What is checked (the CRC is not: see [`RecordBatch::verify_crc`]):
//!
//! * the codec id is one of 0-4;
//! * `recordCount` > 0 and `lastOffsetDelta + 1 == recordCount` (Kafka's
//!   `validateBatch`);
//! * a batch with a producer id has a base sequence >= 0 (`validateBatch`);
//! * every record's framing: its varint length, then attributes, timestamp delta
//!   (varlong), offset delta (varint), key and value (varint length, -1 = null),
//!   header count and headers (key length >= 0, value length >= -1), consuming exactly
//!   the declared length; exactly `recordCount` records and nothing after the last one;
//! * every record's `baseTimestamp + timestampDelta` is representable (no i64
//!   overflow; checked in LogAppendTime batches too, where the sum is not used);
//! * with [`RecordRules::require_keys`] (a compacted topic), every record has a key
//!   (Kafka's `LogValidator.validateKey`). A record without one does not stop the walk:
//!   a framing error further on still wins, as in Kafka, and the refusal lists them all.
//!
//! What is reported rather than refused (the caller decides): the record timestamps'
//! range and whether the offset deltas are consecutive (0, 1, ..., n-1).

use std::io::Read;

use super::{RecordBatch, TimestampType, HEADER_LEN};
use crate::compression::{self, Compression, CompressionError};
use crate::ErrorCode;

/// A record's timestamp when it has none (Kafka's `RecordBatch.NO_TIMESTAMP`).
pub const NO_TIMESTAMP: i64 = -1;

/// Bytes of decompressed data read per step of a compressed walk (on the stack).
const STREAM_BUF: usize = 8 * 1024;

/// Records without a key listed in a [`ValidationError::MissingKeys`] at most (they are
/// all counted): a bound on what one batch makes the broker hold and answer.
pub const MAX_LISTED_MISSING_KEYS: usize = 1000;

/// A check of the topic's on every record, by the first bytes of its key and/or value
/// (the broker's schema validation: a magic byte and a schema id). Records it refuses
/// do not stop the walk (a framing error further on still wins); they are all counted
/// and the first [`MAX_LISTED_MISSING_KEYS`] listed in [`ValidationError::Refused`].
pub trait RecordCheck {
    /// Which fields it looks at: (keys, values).
    fn fields(&self) -> (bool, bool);
    /// Whether a record's key (`is_key`) or value is accepted: `len` is the field's
    /// length (-1: null), `prefix` its first bytes (at most [`CHECK_PREFIX`]).
    fn accepts(&self, is_key: bool, len: i32, prefix: &[u8]) -> bool;
}

/// Bytes of a key or value a [`RecordCheck`] sees.
pub const CHECK_PREFIX: usize = 5;

/// Rules of the topic a batch is produced to, checked on every record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordRules {
    /// Every record must have a key (`cleanup.policy` contains `compact`).
    pub require_keys: bool,
}

/// What validation learnt of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSummary {
    /// Records in the batch (= `recordCount`, which validation checked).
    pub records: u32,
    /// The largest record timestamp, [`NO_TIMESTAMP`] if none is larger (Kafka's
    /// `maxBatchTimestamp`). A LogAppendTime batch's records all have its maxTimestamp.
    pub max_timestamp: i64,
    /// The smallest record timestamp other than [`NO_TIMESTAMP`] (Kafka checks every
    /// such timestamp against `message.timestamp.before.max.ms`), `None` if no record
    /// has one.
    pub min_timestamp: Option<i64>,
    /// Every record's offset delta equals its index (0, 1, ..., n-1).
    pub offsets_consecutive: bool,
    /// Size of the records section after decompression (its size when uncompressed).
    pub inflated_bytes: u64,
}

/// Why a batch is refused; [`ValidationError::error_code`] is the code to answer with.
#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    #[error("unknown compression codec id {0}")]
    UnknownCodec(u8),
    #[error("invalid record count {0}")]
    InvalidCount(i32),
    #[error("lastOffsetDelta {last_offset_delta} does not match the record count {count}")]
    OffsetRange { last_offset_delta: i32, count: i32 },
    #[error("producer id {producer_id} with invalid base sequence {base_sequence}")]
    InvalidSequence {
        producer_id: i64,
        base_sequence: i32,
    },
    #[error("record {index}: {reason}")]
    Record { index: u32, reason: &'static str },
    #[error("the batch holds {found} records but declares {declared}")]
    MissingRecords { declared: i32, found: u32 },
    #[error("data left after the last of {count} records")]
    TrailingBytes { count: i32 },
    #[error("record {index}: timestamp delta {delta} overflows the base timestamp")]
    TimestampOverflow { index: u32, delta: i64 },
    #[error("corrupt {codec} data: {reason}")]
    Decompress { codec: &'static str, reason: String },
    #[error("the records inflate beyond {cap} bytes")]
    TooLarge { cap: u64 },
    /// Kafka answers with one record error per record listed (their index in the batch).
    #[error("{count} records without a key (a compacted topic requires one)")]
    MissingKeys { count: u32, records: Vec<u32> },
    /// Records the topic's [`RecordCheck`] refused (their indices in the batch).
    #[error("{count} records refused by the topic's record check")]
    Refused { count: u32, records: Vec<u32> },
}

impl ValidationError {
    /// The Kafka error code for this refusal (see docs/codec.md, "Record validation").
    pub fn error_code(&self) -> ErrorCode {
        match self {
            ValidationError::UnknownCodec(_) => ErrorCode::UnsupportedCompressionType,
            ValidationError::TimestampOverflow { .. } => ErrorCode::InvalidTimestamp,
            ValidationError::TooLarge { .. } => ErrorCode::MessageTooLarge,
            ValidationError::InvalidCount(_)
            | ValidationError::OffsetRange { .. }
            | ValidationError::InvalidSequence { .. }
            | ValidationError::Record { .. }
            | ValidationError::MissingRecords { .. }
            | ValidationError::TrailingBytes { .. }
            | ValidationError::Decompress { .. }
            | ValidationError::MissingKeys { .. }
            | ValidationError::Refused { .. } => ErrorCode::InvalidRecord,
        }
    }
}

/// End of input inside a record (or before `recordCount` records).
const EOF: &str = "premature end of records";

/// The bytes a record walk reads: a slice or a decompressing stream.
trait Source {
    /// The next byte; `Ok(None)` at the end of the records.
    fn byte(&mut self) -> Result<Option<u8>, ValidationError>;
    /// Skips `n` bytes; false if the records end first.
    fn skip(&mut self, n: usize) -> Result<bool, ValidationError>;
    /// Bytes consumed so far.
    fn consumed(&self) -> u64;
    /// The raw (not zigzag-decoded) bits of a varint of at most `max_bytes` bytes;
    /// `Ok(None)` when the records end inside it.
    fn raw_varint(&mut self, max_bytes: u32, index: u32) -> Result<Option<u64>, ValidationError>;
    /// Fills `out` with the next bytes; false if the records end first.
    fn read_exact(&mut self, out: &mut [u8]) -> Result<bool, ValidationError> {
        for slot in out.iter_mut() {
            match self.byte()? {
                Some(b) => *slot = b,
                None => return Ok(false),
            }
        }
        Ok(true)
    }
}

struct SliceSource<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Source for SliceSource<'_> {
    #[inline]
    fn byte(&mut self) -> Result<Option<u8>, ValidationError> {
        let b = self.data.get(self.pos).copied();
        self.pos += usize::from(b.is_some());
        Ok(b)
    }
    #[inline]
    fn skip(&mut self, n: usize) -> Result<bool, ValidationError> {
        if n > self.data.len() - self.pos {
            self.pos = self.data.len();
            return Ok(false);
        }
        self.pos += n;
        Ok(true)
    }
    #[inline]
    fn consumed(&self) -> u64 {
        self.pos as u64
    }
    #[inline]
    fn raw_varint(&mut self, max_bytes: u32, index: u32) -> Result<Option<u64>, ValidationError> {
        let (value, used) = varint_in(&self.data[self.pos..], max_bytes, index)?;
        self.pos += used;
        Ok(value)
    }
    #[inline]
    fn read_exact(&mut self, out: &mut [u8]) -> Result<bool, ValidationError> {
        match self.data.get(self.pos..self.pos + out.len()) {
            Some(src) => {
                out.copy_from_slice(src);
                self.pos += out.len();
                Ok(true)
            }
            None => {
                self.pos = self.data.len();
                Ok(false)
            }
        }
    }
}

/// The raw bits of a varint of at most `max_bytes` bytes, read byte by byte.
fn varint_bytewise<S: Source + ?Sized>(
    src: &mut S,
    max_bytes: u32,
    index: u32,
) -> Result<Option<u64>, ValidationError> {
    let mut value: u64 = 0;
    for i in 0..max_bytes {
        let Some(b) = src.byte()? else {
            return Ok(None);
        };
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some(value));
        }
    }
    Err(ValidationError::Record {
        index,
        reason: "varint too long",
    })
}

/// Decodes the raw bits of a varint of at most `max_bytes` bytes at the start of
/// `rest`: `(Some(value), bytes used)`, or `(None, rest.len())` when `rest` ends inside
/// it. Most record fields (attributes, small deltas and lengths) take one byte.
#[inline]
fn varint_in(
    rest: &[u8],
    max_bytes: u32,
    index: u32,
) -> Result<(Option<u64>, usize), ValidationError> {
    match rest.first() {
        None => return Ok((None, 0)),
        Some(&b) if b & 0x80 == 0 => return Ok((Some(u64::from(b)), 1)),
        Some(_) => {}
    }
    let mut value: u64 = 0;
    for (i, &b) in rest.iter().take(max_bytes as usize).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((Some(value), i + 1));
        }
    }
    if rest.len() < max_bytes as usize {
        return Ok((None, rest.len()));
    }
    Err(ValidationError::Record {
        index,
        reason: "varint too long",
    })
}

struct StreamSource<R> {
    reader: R,
    codec: &'static str,
    buf: [u8; STREAM_BUF],
    start: usize,
    end: usize,
    /// Bytes pulled from the decoder so far.
    inflated: u64,
    cap: u64,
    consumed: u64,
}

impl<R: Read> StreamSource<R> {
    /// Refills the buffer; false at the end of the stream.
    fn fill(&mut self) -> Result<bool, ValidationError> {
        if self.start < self.end {
            return Ok(true);
        }
        // Never ask for more than one byte past the cap.
        let room = (self.cap.saturating_add(1) - self.inflated).min(STREAM_BUF as u64) as usize;
        let n = loop {
            match self.reader.read(&mut self.buf[..room.max(1)]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(match compression::stream_error(&e) {
                        Some(CompressionError::TooLarge { .. }) => {
                            ValidationError::TooLarge { cap: self.cap }
                        }
                        _ => ValidationError::Decompress {
                            codec: self.codec,
                            reason: e.to_string(),
                        },
                    })
                }
            }
        };
        self.inflated += n as u64;
        if self.inflated > self.cap {
            return Err(ValidationError::TooLarge { cap: self.cap });
        }
        self.start = 0;
        self.end = n;
        Ok(n > 0)
    }
}

impl<R: Read> Source for StreamSource<R> {
    fn byte(&mut self) -> Result<Option<u8>, ValidationError> {
        if !self.fill()? {
            return Ok(None);
        }
        let b = self.buf[self.start];
        self.start += 1;
        self.consumed += 1;
        Ok(Some(b))
    }
    fn skip(&mut self, mut n: usize) -> Result<bool, ValidationError> {
        while n > 0 {
            if !self.fill()? {
                return Ok(false);
            }
            let k = n.min(self.end - self.start);
            self.start += k;
            self.consumed += k as u64;
            n -= k;
        }
        Ok(true)
    }
    fn consumed(&self) -> u64 {
        self.consumed
    }
    #[inline]
    fn read_exact(&mut self, out: &mut [u8]) -> Result<bool, ValidationError> {
        let mut filled = 0;
        while filled < out.len() {
            if !self.fill()? {
                return Ok(false);
            }
            let k = (out.len() - filled).min(self.end - self.start);
            out[filled..filled + k].copy_from_slice(&self.buf[self.start..self.start + k]);
            self.start += k;
            self.consumed += k as u64;
            filled += k;
        }
        Ok(true)
    }
    #[inline]
    fn raw_varint(&mut self, max_bytes: u32, index: u32) -> Result<Option<u64>, ValidationError> {
        if !self.fill()? {
            return Ok(None);
        }
        match varint_in(&self.buf[self.start..self.end], max_bytes, index)? {
            (Some(v), used) => {
                self.start += used;
                self.consumed += used as u64;
                Ok(Some(v))
            }
            // Split across two reads of the stream: byte by byte.
            (None, _) => varint_bytewise(self, max_bytes, index),
        }
    }
}

/// Reads a zigzag varint of at most `max_bytes` bytes (5 for an int32, 10 for an
/// int64), as Kafka's `ByteUtils`; a longer encoding or one with bits beyond 64 is
/// invalid.
#[inline]
fn read_unsigned<S: Source>(
    src: &mut S,
    index: u32,
    max_bytes: u32,
) -> Result<u64, ValidationError> {
    src.raw_varint(max_bytes, index)?
        .ok_or(ValidationError::Record { index, reason: EOF })
}

#[inline]
fn varint<S: Source>(src: &mut S, index: u32) -> Result<i32, ValidationError> {
    let raw = read_unsigned(src, index, 5)?;
    let raw = u32::try_from(raw).map_err(|_| ValidationError::Record {
        index,
        reason: "varint exceeds 32 bits",
    })?;
    Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32))
}

#[inline]
fn varlong<S: Source>(src: &mut S, index: u32) -> Result<i64, ValidationError> {
    let raw = read_unsigned(src, index, 10)?;
    Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
}

/// Per-record framing state: where the record must end.
struct Framed<'s, S> {
    src: &'s mut S,
    end: u64,
    index: u32,
}

impl<S: Source> Framed<'_, S> {
    fn err(&self, reason: &'static str) -> ValidationError {
        ValidationError::Record {
            index: self.index,
            reason,
        }
    }
    // Fields are read without checking the record's end after each one: a record whose
    // fields run past its length fails the final `consumed == end` check (and lengths
    // are checked against what is left before anything is skipped).
    #[inline]
    fn byte(&mut self) -> Result<u8, ValidationError> {
        self.src.byte()?.ok_or_else(|| self.err(EOF))
    }
    #[inline]
    fn varint(&mut self) -> Result<i32, ValidationError> {
        varint(self.src, self.index)
    }
    #[inline]
    fn varlong(&mut self) -> Result<i64, ValidationError> {
        varlong(self.src, self.index)
    }
    /// Bytes of the record not read yet (0 once its fields ran past its length).
    #[inline]
    fn left(&self) -> u64 {
        self.end.saturating_sub(self.src.consumed())
    }
    /// Reads the first bytes of a length-prefixed field into `prefix` (as many as fit)
    /// and skips the rest, with the checks of [`Framed::skip_field`]; returns how many
    /// bytes `prefix` got.
    fn prefix_field(
        &mut self,
        len: i32,
        nullable: bool,
        what: &'static str,
        prefix: &mut [u8; CHECK_PREFIX],
    ) -> Result<usize, ValidationError> {
        if len == -1 && nullable {
            return Ok(0);
        }
        if len < 0 {
            return Err(self.err(what));
        }
        if len as u64 > self.left() {
            return Err(self.err("record fields run past its length"));
        }
        let n = (len as usize).min(CHECK_PREFIX);
        if !self.src.read_exact(&mut prefix[..n])? || !self.src.skip(len as usize - n)? {
            return Err(self.err(EOF));
        }
        Ok(n)
    }

    /// Skips a length-prefixed field of `len` bytes; -1 (null) when `nullable`.
    fn skip_field(
        &mut self,
        len: i32,
        nullable: bool,
        what: &'static str,
    ) -> Result<(), ValidationError> {
        if len == -1 && nullable {
            return Ok(());
        }
        if len < 0 {
            return Err(self.err(what));
        }
        if len as u64 > self.left() {
            return Err(self.err("record fields run past its length"));
        }
        if !self.src.skip(len as usize)? {
            return Err(self.err(EOF));
        }
        Ok(())
    }
}

/// Header facts a record walk needs.
struct WalkParams<'c> {
    count: i32,
    base_timestamp: i64,
    /// `Some(maxTimestamp)` for a LogAppendTime batch: every record has it.
    log_append_time: Option<i64>,
    require_keys: bool,
    check: Option<&'c dyn RecordCheck>,
}

fn walk<S: Source>(src: &mut S, p: &WalkParams) -> Result<BatchSummary, ValidationError> {
    let (check_keys, check_values) = p.check.map_or((false, false), |c| c.fields());
    let mut refused: u32 = 0;
    let mut listed_refused = Vec::new();
    let mut prefix = [0u8; CHECK_PREFIX];
    let mut max_ts = NO_TIMESTAMP;
    let mut min_ts: Option<i64> = None;
    let mut consecutive = true;
    let mut missing_keys: u32 = 0;
    let mut listed_missing_keys = Vec::new();
    let count = p.count.max(0) as u32;
    for index in 0..count {
        let len = match read_unsigned(src, index, 5) {
            Err(ValidationError::Record { reason, .. }) if reason == EOF => {
                // The records ended before this record (or inside its length).
                return Err(ValidationError::MissingRecords {
                    declared: p.count,
                    found: index,
                });
            }
            other => other?,
        };
        let len = u32::try_from(len).map_err(|_| ValidationError::Record {
            index,
            reason: "varint exceeds 32 bits",
        })?;
        let len = ((len >> 1) as i32) ^ -((len & 1) as i32);
        if len < 0 {
            return Err(ValidationError::Record {
                index,
                reason: "negative record length",
            });
        }
        let end = src.consumed() + len as u64;
        let mut r = Framed { src, end, index };
        let _attributes = r.byte()?;
        let ts_delta = r.varlong()?;
        let offset_delta = r.varint()?;
        let key_len = r.varint()?;
        if p.require_keys && key_len < 0 {
            missing_keys += 1;
            if listed_missing_keys.len() < MAX_LISTED_MISSING_KEYS {
                listed_missing_keys.push(index);
            }
        }
        let mut accepted = true;
        match p.check {
            Some(check) if check_keys => {
                let n = r.prefix_field(key_len, true, "invalid key length", &mut prefix)?;
                accepted &= check.accepts(true, key_len, &prefix[..n]);
            }
            _ => r.skip_field(key_len, true, "invalid key length")?,
        }
        let value_len = r.varint()?;
        match p.check {
            Some(check) if check_values => {
                let n = r.prefix_field(value_len, true, "invalid value length", &mut prefix)?;
                accepted &= check.accepts(false, value_len, &prefix[..n]);
            }
            _ => r.skip_field(value_len, true, "invalid value length")?,
        }
        if !accepted {
            refused += 1;
            if listed_refused.len() < MAX_LISTED_MISSING_KEYS {
                listed_refused.push(index);
            }
        }
        let headers = r.varint()?;
        if headers < 0 {
            return Err(r.err("negative header count"));
        }
        // Each header takes at least two bytes (its two lengths).
        if headers as u64 > r.left() / 2 {
            return Err(r.err("header count larger than the record"));
        }
        for _ in 0..headers {
            let klen = r.varint()?;
            r.skip_field(klen, false, "invalid header key length")?;
            let vlen = r.varint()?;
            r.skip_field(vlen, true, "invalid header value length")?;
        }
        match r.src.consumed() {
            c if c > r.end => return Err(r.err("record fields run past its length")),
            c if c < r.end => return Err(r.err("record length does not match its fields")),
            _ => {}
        }
        consecutive &= i64::from(offset_delta) == i64::from(index);
        // Checked even when LogAppendTime replaces it, so that no stored batch has a
        // record whose `baseTimestamp + delta` overflows for a later reader.
        let create_ts =
            p.base_timestamp
                .checked_add(ts_delta)
                .ok_or(ValidationError::TimestampOverflow {
                    index,
                    delta: ts_delta,
                })?;
        let ts = p.log_append_time.unwrap_or(create_ts);
        max_ts = max_ts.max(ts);
        if ts != NO_TIMESTAMP {
            min_ts = Some(min_ts.map_or(ts, |m| m.min(ts)));
        }
    }
    if src.byte()?.is_some() {
        return Err(ValidationError::TrailingBytes { count: p.count });
    }
    if missing_keys > 0 {
        return Err(ValidationError::MissingKeys {
            count: missing_keys,
            records: listed_missing_keys,
        });
    }
    if refused > 0 {
        return Err(ValidationError::Refused {
            count: refused,
            records: listed_refused,
        });
    }
    Ok(BatchSummary {
        records: count,
        max_timestamp: max_ts,
        min_timestamp: min_ts,
        offsets_consecutive: consecutive,
        inflated_bytes: src.consumed(),
    })
}

impl RecordBatch {
    /// Validates the batch's records as Kafka's broker does for a produced batch (see
    /// the module docs for the rules and `docs/codec.md` for the error codes). A
    /// compressed batch may inflate to at most `max_inflated` bytes; it is streamed,
    /// never inflated into memory. Does not check the CRC.
    pub fn validate(&self, max_inflated: usize) -> Result<BatchSummary, ValidationError> {
        self.validate_with(max_inflated, RecordRules::default())
    }

    /// [`RecordBatch::validate`], applying the topic's `rules` to every record in the
    /// same walk.
    pub fn validate_with(
        &self,
        max_inflated: usize,
        rules: RecordRules,
    ) -> Result<BatchSummary, ValidationError> {
        self.validate_checked(max_inflated, rules, None)
    }

    /// [`RecordBatch::validate_with`], also running `check` on every record's key
    /// and/or value in the same walk.
    pub fn validate_checked(
        &self,
        max_inflated: usize,
        rules: RecordRules,
        check: Option<&dyn RecordCheck>,
    ) -> Result<BatchSummary, ValidationError> {
        let id = (self.attributes() & super::COMPRESSION_MASK) as u8;
        let codec = Compression::from_id(id).map_err(|_| ValidationError::UnknownCodec(id))?;
        let count = self.record_count();
        if count <= 0 {
            return Err(ValidationError::InvalidCount(count));
        }
        let last_offset_delta = self.last_offset_delta();
        if i64::from(last_offset_delta) + 1 != i64::from(count) {
            return Err(ValidationError::OffsetRange {
                last_offset_delta,
                count,
            });
        }
        if self.producer_id() >= 0 && self.base_sequence() < 0 {
            return Err(ValidationError::InvalidSequence {
                producer_id: self.producer_id(),
                base_sequence: self.base_sequence(),
            });
        }
        let params = WalkParams {
            count,
            base_timestamp: self.base_timestamp(),
            log_append_time: (self.timestamp_type() == TimestampType::LogAppendTime)
                .then(|| self.max_timestamp()),
            require_keys: rules.require_keys,
            check,
        };
        let body = &self.bytes()[HEADER_LEN..];
        if codec == Compression::None {
            return walk(&mut SliceSource { data: body, pos: 0 }, &params);
        }
        let decompress_err = |e: CompressionError| ValidationError::Decompress {
            codec: codec.name(),
            reason: e.to_string(),
        };
        let reader = compression::stream(codec, body, max_inflated).map_err(decompress_err)?;
        let mut src = StreamSource {
            reader,
            codec: codec.name(),
            buf: [0; STREAM_BUF],
            start: 0,
            end: 0,
            inflated: 0,
            cap: max_inflated as u64,
            consumed: 0,
        };
        walk(&mut src, &params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record_batch::{update_crc, RecordBatchBuilder, ATTRIBUTES_OFFSET};
    use crate::Encoder;
    use bytes::{Bytes, BytesMut};

    const ALL: [Compression; 5] = Compression::ALL;
    const CAP: usize = 64 << 20;

    fn builder(c: Compression, n: usize) -> RecordBatchBuilder {
        let mut b = RecordBatchBuilder::new(c).producer(7, 0, 0);
        for i in 0..n {
            let v = format!("value-{i}-{}", "x".repeat(i % 40));
            b.append(
                1_700_000_000_000 + i as i64,
                (i % 2 == 0).then_some(&b"key"[..]),
                Some(v.as_bytes()),
                &[("h", Some(b"v")), ("n", None)],
            );
        }
        b
    }

    fn zigzag(v: i64) -> u64 {
        ((v << 1) ^ (v >> 63)) as u64
    }

    fn put_var(out: &mut Vec<u8>, v: i64) {
        let mut n = zigzag(v);
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    /// One record: attributes, timestamp delta, offset delta, key, value, headers;
    /// `adjust` is added to the length prefix.
    fn rec(offset_delta: i64, ts_delta: i64, value: Option<&[u8]>, adjust: i64) -> Vec<u8> {
        let mut body = vec![0u8];
        put_var(&mut body, ts_delta);
        put_var(&mut body, offset_delta);
        put_var(&mut body, -1);
        match value {
            None => put_var(&mut body, -1),
            Some(v) => {
                put_var(&mut body, v.len() as i64);
                body.extend_from_slice(v);
            }
        }
        put_var(&mut body, 0);
        let mut out = Vec::new();
        put_var(&mut out, body.len() as i64 + adjust);
        out.extend_from_slice(&body);
        out
    }

    fn recs(n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| rec(i as i64, i as i64, Some(b"val"), 0))
            .collect()
    }

    /// A batch around an encoded records body (compressed with `c` here unless `raw_attrs`
    /// forces the attribute), with consistent CRC.
    fn batch_of(
        body: &[u8],
        c: Compression,
        count: i32,
        last_offset_delta: i32,
        base_ts: i64,
    ) -> RecordBatch {
        let records = match c {
            Compression::None => body.to_vec(),
            c => compression::compress(c, body).unwrap(),
        };
        raw_batch(&records, c.id() as i16, count, last_offset_delta, base_ts)
    }

    fn raw_batch(
        records: &[u8],
        attrs: i16,
        count: i32,
        last_offset_delta: i32,
        base_ts: i64,
    ) -> RecordBatch {
        let mut e = Encoder::new();
        e.put_i64(0);
        e.put_i32((HEADER_LEN - 12 + records.len()) as i32);
        e.put_i32(-1);
        e.put_i8(2);
        e.put_i32(0);
        e.put_i16(attrs);
        e.put_i32(last_offset_delta);
        e.put_i64(base_ts);
        e.put_i64(base_ts);
        e.put_i64(-1);
        e.put_i16(-1);
        e.put_i32(-1);
        e.put_i32(count);
        e.put_slice(records);
        let mut out = BytesMut::new();
        for c in e.finish() {
            out.extend_from_slice(&c);
        }
        update_crc(&mut out).unwrap();
        RecordBatch::parse(out.freeze()).unwrap()
    }

    fn code(r: Result<BatchSummary, ValidationError>) -> i16 {
        match r {
            Ok(_) => 0,
            Err(e) => e.error_code().code(),
        }
    }

    #[test]
    fn builder_batches_validate_in_every_codec() {
        for c in ALL {
            let b = RecordBatch::parse(builder(c, 200).build().unwrap()).unwrap();
            let s = b.validate(CAP).unwrap();
            assert_eq!(s.records, 200, "{c:?}");
            assert!(s.offsets_consecutive);
            assert_eq!(s.max_timestamp, 1_700_000_000_199);
            assert_eq!(s.min_timestamp, Some(1_700_000_000_000));
            let raw = b.records_data(CAP).unwrap().len();
            assert_eq!(s.inflated_bytes, raw as u64, "{c:?}");
        }
        // Raw (unframed) snappy, as librdkafka writes it.
        let body = recs(50);
        let z = compression::snappy_raw_compress(&body).unwrap();
        let b = raw_batch(&z, 2, 50, 49, 1000);
        assert_eq!(b.validate(CAP).unwrap().records, 50);
        // One record, null value, empty key, LogAppendTime.
        let mut one = RecordBatchBuilder::new(Compression::Lz4).log_append_time(true);
        one.append(5, Some(b""), None, &[]);
        let b = RecordBatch::parse(one.build().unwrap()).unwrap();
        let s = b.validate(CAP).unwrap();
        assert_eq!((s.records, s.max_timestamp), (1, 5));
    }

    #[test]
    fn client_fixtures_validate() {
        use crate::messages::ProduceRequest;
        use crate::Message;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !name.contains("-Produce-v") || !name.ends_with(".bin") {
                continue;
            }
            let mut frame = Bytes::from(std::fs::read(&path).unwrap());
            let header = crate::decode_request_header(&mut frame).unwrap();
            let req = ProduceRequest::decode(&mut frame, header.request_api_version).unwrap();
            for t in &req.topic_data {
                for p in &t.partition_data {
                    let Some(records) = &p.records else { continue };
                    for b in crate::record_batch::batches(records.to_contiguous()) {
                        let b = b.unwrap();
                        let s = b.validate(CAP).unwrap_or_else(|e| panic!("{name}: {e}"));
                        assert_eq!(s.records as i32, b.record_count());
                        assert!(s.offsets_consecutive, "{name}");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked >= 4, "{checked} fixture batches");
    }

    #[test]
    fn malformed_batches_are_refused_with_kafkas_codes() {
        let three = recs(3);
        let ts = 1_700_000_000_000;
        let mut cases: Vec<(&str, RecordBatch, i16)> = vec![
            (
                "count larger",
                batch_of(&three, Compression::None, 4, 3, ts),
                87,
            ),
            (
                "count smaller",
                batch_of(&three, Compression::None, 2, 1, ts),
                87,
            ),
            (
                "count zero",
                batch_of(&[], Compression::None, 0, -1, ts),
                87,
            ),
            (
                "count zero lod 0",
                batch_of(&[], Compression::None, 0, 0, ts),
                87,
            ),
            (
                "count negative",
                batch_of(&three, Compression::None, -1, -2, ts),
                87,
            ),
            (
                "lastOffsetDelta 1000",
                batch_of(&three, Compression::None, 3, 1000, ts),
                87,
            ),
            (
                "truncated record",
                batch_of(&three[..three.len() - 2], Compression::None, 3, 2, ts),
                87,
            ),
            (
                "random bytes",
                batch_of(
                    &(0..200u32)
                        .map(|i| (i * 151 % 251) as u8)
                        .collect::<Vec<_>>(),
                    Compression::None,
                    3,
                    2,
                    ts,
                ),
                87,
            ),
            (
                "timestamp overflow",
                batch_of(
                    &[rec(0, 0, None, 0), rec(1, i64::MAX, None, 0)].concat(),
                    Compression::None,
                    2,
                    1,
                    ts,
                ),
                32,
            ),
            (
                "timestamp underflow",
                batch_of(&rec(0, -10, None, 0), Compression::None, 1, 0, i64::MIN + 5),
                32,
            ),
        ];
        for adjust in [-3i64, -1, 1, 4, -1000] {
            let body = [
                rec(0, 0, Some(b"a"), 0),
                rec(1, 0, Some(b"bbbbbb"), adjust),
                rec(2, 0, Some(b"c"), 0),
            ]
            .concat();
            cases.push((
                "lying record length",
                batch_of(&body, Compression::None, 3, 2, ts),
                87,
            ));
        }
        // Field-level lies: key length < -1, header count < 0, header key null, header
        // count beyond the record, a 6-byte varint.
        let framed = |fields: &[u8]| {
            let mut out = Vec::new();
            put_var(&mut out, fields.len() as i64);
            out.extend_from_slice(fields);
            out
        };
        for (what, fields) in [
            ("key length -2", vec![0, 0, 0, 3, 0, 0]),
            ("header count -1", vec![0, 0, 0, 1, 0, 1]),
            ("header key null", vec![0, 0, 0, 1, 0, 2, 1, 0]),
            ("header count too big", vec![0, 0, 0, 1, 0, 40, 0, 0]),
            ("value past record", vec![0, 0, 0, 1, 20, 0]),
            (
                "long varint",
                vec![0, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 1, 1, 0],
            ),
            (
                "long varlong",
                [vec![0], vec![0x80; 10], vec![0x01, 0, 1, 1, 0]].concat(),
            ),
            (
                "offset varint > 32 bits",
                vec![0, 0, 0xff, 0xff, 0xff, 0xff, 0x7f, 1, 1, 0],
            ),
        ] {
            cases.push((
                what,
                batch_of(&framed(&fields), Compression::None, 1, 0, ts),
                87,
            ));
        }
        for c in &ALL[1..] {
            let garbage: Vec<u8> = (0..300u32).map(|i| (i * 37 % 253) as u8).collect();
            cases.push(("garbage", raw_batch(&garbage, c.id() as i16, 3, 2, ts), 87));
            cases.push((
                "compressed count larger",
                batch_of(&three, *c, 4, 3, ts),
                87,
            ));
            cases.push((
                "compressed count smaller",
                batch_of(&three, *c, 2, 1, ts),
                87,
            ));
            let z = compression::compress(*c, &three).unwrap();
            cases.push((
                "truncated stream",
                raw_batch(&z[..z.len() - 3], c.id() as i16, 3, 2, ts),
                87,
            ));
            let mut long = z.clone();
            long.extend_from_slice(b"trailing garbage");
            if *c != Compression::Snappy {
                cases.push((
                    "garbage after stream",
                    raw_batch(&long, c.id() as i16, 3, 2, ts),
                    87,
                ));
            }
            cases.push(("empty stream", raw_batch(&[], c.id() as i16, 3, 2, ts), 87));
        }
        for id in 5..=7 {
            cases.push(("unknown codec", raw_batch(&three, id, 3, 2, ts), 76));
        }
        // A producer id with a negative base sequence.
        let mut b = BytesMut::from(&builder(Compression::None, 2).build().unwrap()[..]);
        b[super::super::BASE_SEQUENCE_OFFSET..super::super::BASE_SEQUENCE_OFFSET + 4]
            .copy_from_slice(&(-1i32).to_be_bytes());
        update_crc(&mut b).unwrap();
        cases.push((
            "negative sequence",
            RecordBatch::parse(b.freeze()).unwrap(),
            87,
        ));

        for (what, batch, want) in cases {
            let got = batch.validate(CAP);
            let shown = format!("{got:?}");
            assert_eq!(
                code(got),
                want,
                "{what} ({:?}): {shown}",
                batch.compression().ok()
            );
        }
    }

    /// `n` records, the ones at `keyless` without a key, others with `key`.
    fn keyed(c: Compression, n: usize, keyless: &[usize], key: &[u8]) -> RecordBatch {
        let mut b = RecordBatchBuilder::new(c);
        for i in 0..n {
            let key = (!keyless.contains(&i)).then_some(key);
            b.append(1_700_000_000_000, key, Some(b"v"), &[]);
        }
        RecordBatch::parse(b.build().unwrap()).unwrap()
    }

    const KEYS: RecordRules = RecordRules { require_keys: true };

    #[test]
    fn compacted_topics_refuse_records_without_a_key() {
        for c in ALL {
            let b = keyed(c, 6, &[1, 3, 4], b"k");
            assert_eq!(b.validate(CAP).unwrap().records, 6, "{c:?}");
            match b.validate_with(CAP, KEYS) {
                Err(ValidationError::MissingKeys { count, records }) => {
                    assert_eq!((count, records), (3, vec![1, 3, 4]), "{c:?}")
                }
                other => panic!("{c:?}: {other:?}"),
            }
            assert_eq!(code(b.validate_with(CAP, KEYS)), 87);
            // Keys everywhere, or empty keys (a key all the same): accepted.
            assert_eq!(
                keyed(c, 6, &[], b"k")
                    .validate_with(CAP, KEYS)
                    .unwrap()
                    .records,
                6
            );
            assert_eq!(
                keyed(c, 6, &[], b"")
                    .validate_with(CAP, KEYS)
                    .unwrap()
                    .records,
                6
            );
        }
        // A framing error after a keyless record wins, as in Kafka (its iterator throws).
        let body = [rec(0, 0, Some(b"v"), 0), rec(1, 0, Some(b"v"), 1)].concat();
        let err = batch_of(&body, Compression::None, 2, 1, 0).validate_with(CAP, KEYS);
        assert!(
            matches!(err, Err(ValidationError::Record { index: 1, .. })),
            "{err:?}"
        );
        // Every keyless record is counted, the first MAX_LISTED_MISSING_KEYS listed.
        let n = MAX_LISTED_MISSING_KEYS + 500;
        let all: Vec<usize> = (0..n).collect();
        match keyed(Compression::Zstd, n, &all, b"k").validate_with(CAP, KEYS) {
            Err(ValidationError::MissingKeys { count, records }) => {
                assert_eq!(count as usize, n);
                assert_eq!(
                    records,
                    (0..MAX_LISTED_MISSING_KEYS as u32).collect::<Vec<_>>()
                );
            }
            other => panic!("{other:?}"),
        }
    }

    /// Accepts values starting with `0x00` (5 bytes at least) and null values; keys too
    /// when asked.
    struct MagicZero {
        keys: bool,
    }

    impl RecordCheck for MagicZero {
        fn fields(&self) -> (bool, bool) {
            (self.keys, true)
        }
        fn accepts(&self, _is_key: bool, len: i32, prefix: &[u8]) -> bool {
            len < 0 || (prefix.len() == CHECK_PREFIX && prefix[0] == 0)
        }
    }

    #[test]
    fn record_checks_see_prefixes_in_every_codec() {
        for c in ALL {
            let mut b = RecordBatchBuilder::new(c);
            let long = [&[0u8, 0, 0, 0, 7][..], &[b'x'; 3000][..]].concat();
            b.append(1, Some(b"\x00\x00\x00\x00\x01k"), Some(&long), &[]);
            b.append(2, None, None, &[]);
            b.append(3, None, Some(b"\x00abc"), &[]); // too short
            b.append(4, None, Some(b"\x01\x00\x00\x00\x07"), &[]); // bad magic
            b.append(5, Some(b"raw"), Some(&long), &[]); // bad key
            let batch = crate::record_batch::batches(b.build().unwrap())
                .next()
                .unwrap()
                .unwrap();
            let values = MagicZero { keys: false };
            match batch.validate_checked(CAP, RecordRules::default(), Some(&values)) {
                Err(ValidationError::Refused { count, records }) => {
                    assert_eq!((count, records), (2, vec![2, 3]), "{c:?}")
                }
                other => panic!("{c:?}: {other:?}"),
            }
            let both = MagicZero { keys: true };
            match batch.validate_checked(CAP, RecordRules::default(), Some(&both)) {
                Err(ValidationError::Refused { count, records }) => {
                    // Record 1 has a null key (accepted); 2 and 3 have null keys too.
                    assert_eq!((count, records), (3, vec![2, 3, 4]), "{c:?}")
                }
                other => panic!("{c:?}: {other:?}"),
            }
            assert_eq!(
                code(batch.validate_checked(CAP, RecordRules::default(), Some(&both))),
                87
            );
            // Without a check the batch is fine.
            assert_eq!(batch.validate(CAP).unwrap().records, 5);
        }
        // Framing errors still win over refusals.
        let body = [rec(0, 0, Some(b"v"), 0), rec(1, 0, Some(b"v"), 1)].concat();
        let err = batch_of(&body, Compression::None, 2, 1, 0).validate_checked(
            CAP,
            RecordRules::default(),
            Some(&MagicZero { keys: false }),
        );
        assert!(
            matches!(err, Err(ValidationError::Record { index: 1, .. })),
            "{err:?}"
        );
    }

    #[test]
    fn non_consecutive_offsets_are_reported() {
        let body = [rec(0, 0, None, 0), rec(2, 0, None, 0), rec(1, 0, None, 0)].concat();
        for c in ALL {
            let s = batch_of(&body, c, 3, 2, 10).validate(CAP).unwrap();
            assert!(!s.offsets_consecutive, "{c:?}");
        }
        let s = batch_of(&recs(3), Compression::None, 3, 2, 10)
            .validate(CAP)
            .unwrap();
        assert!(s.offsets_consecutive);
        // NO_TIMESTAMP records do not count as the smallest timestamp.
        let body = [rec(0, 0, None, 0), rec(1, 7, None, 0)].concat();
        let s = batch_of(&body, Compression::None, 2, 1, -1)
            .validate(CAP)
            .unwrap();
        assert_eq!((s.min_timestamp, s.max_timestamp), (Some(6), 6));
    }

    /// One record whose value is `size` zero bytes (well-framed), compressed.
    fn zero_record_bomb(c: Compression, size: usize) -> RecordBatch {
        let mut head = Vec::new();
        let body_len = 1 + 1 + 1 + 1 + varint_len(size) + size + 1;
        put_var(&mut head, body_len as i64);
        head.extend_from_slice(&[0, 0, 0, 1]);
        put_var(&mut head, size as i64);
        let mut raw = head;
        raw.resize(raw.len() + size, 0);
        raw.push(0);
        batch_of(&raw, c, 1, 0, 1)
    }

    fn varint_len(v: usize) -> usize {
        let mut out = Vec::new();
        put_var(&mut out, v as i64);
        out.len()
    }

    #[test]
    fn inflate_cap_stops_bombs() {
        for c in &ALL[1..] {
            let bomb = zero_record_bomb(*c, 8 << 20);
            assert!(bomb.size() < 1 << 20, "{c:?} {}", bomb.size());
            // Within the cap: valid.
            assert_eq!(bomb.validate(16 << 20).unwrap().records, 1, "{c:?}");
            let err = bomb.validate(1 << 20).unwrap_err();
            assert!(
                matches!(err, ValidationError::TooLarge { .. }),
                "{c:?} {err}"
            );
            assert_eq!(err.error_code(), ErrorCode::MessageTooLarge);
            // Raw zeros as records: refused at once by the framing (record length 0).
            let zeros = batch_of(&vec![0u8; 4 << 20], *c, 3, 2, 1);
            assert_eq!(code(zeros.validate(1 << 20)), 87, "{c:?}");
        }
        // A raw snappy block claiming far more than its size can hold.
        let b = raw_batch(&[0xff, 0xff, 0xff, 0x7f, 0x00], 2, 1, 0, 1);
        assert_eq!(code(b.validate(usize::MAX)), 87);
        let b = raw_batch(&[0xff, 0xff, 0xff, 0x7f, 0x00], 2, 1, 0, 1);
        assert_eq!(code(b.validate(1 << 20)), 10);
    }

    #[test]
    fn attribute_codec_bits_only() {
        // Other attribute bits (timestamp type, transactional) do not change the walk.
        let mut b = BytesMut::from(&builder(Compression::Zstd, 5).build().unwrap()[..]);
        let attrs = i16::from_be_bytes([b[ATTRIBUTES_OFFSET], b[ATTRIBUTES_OFFSET + 1]]) | 0x10;
        b[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attrs.to_be_bytes());
        update_crc(&mut b).unwrap();
        assert_eq!(
            RecordBatch::parse(b.freeze())
                .unwrap()
                .validate(CAP)
                .unwrap()
                .records,
            5
        );
    }

    #[test]
    fn no_panic_on_mutations() {
        // Every single-byte mutation and every truncation of the records section, in
        // every codec: an answer, never a panic.
        for c in ALL {
            let good = builder(c, 4).build().unwrap();
            for i in HEADER_LEN..good.len() {
                for x in [0x01u8, 0x80, 0xff] {
                    let mut m = BytesMut::from(&good[..]);
                    m[i] ^= x;
                    let _ = RecordBatch::parse(m.freeze()).unwrap().validate(1 << 20);
                }
                let t = raw_batch(&good[HEADER_LEN..i], c.id() as i16, 4, 3, 1);
                assert!(t.validate(1 << 20).is_err(), "{c:?} cut at {i}");
            }
        }
    }
}
