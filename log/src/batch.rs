//! The few RecordBatch v2 header fields the log needs (parsed here on purpose: the
//! log does not depend on the protocol crate).

/// Size of the RecordBatch v2 header.
pub const HEADER_LEN: usize = 61;
/// Bytes before and including the `batchLength` field.
pub const LOG_OVERHEAD: usize = 12;
const PARTITION_LEADER_EPOCH_OFFSET: usize = 12;
const MAGIC_OFFSET: usize = 16;
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;

/// Header fields of one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// `baseOffset`.
    pub base_offset: i64,
    /// Whole size of the batch on disk (`12 + batchLength`).
    pub total_len: usize,
    /// `partitionLeaderEpoch` (`-1` from clients; the leader stamps its epoch).
    pub partition_leader_epoch: i32,
    /// `lastOffsetDelta`.
    pub last_offset_delta: i32,
    /// `maxTimestamp`.
    pub max_timestamp: i64,
    /// `baseTimestamp`.
    pub base_timestamp: i64,
    /// `recordCount`.
    pub record_count: i32,
    /// Stored `crc`.
    pub crc: u32,
}

impl BatchHeader {
    /// Offset of the batch's last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}

/// Why a batch header could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderProblem {
    /// Fewer than 61 bytes left.
    Short,
    /// `batchLength` is zero (preallocated, never written space).
    Zero,
    /// Something else; the string says what.
    Bad(String),
}

/// Parse the header at the start of `b`. Checks sizes, magic and offset delta;
/// does not check the CRC and does not require the whole batch to be in `b`.
pub fn parse_header(b: &[u8]) -> Result<BatchHeader, HeaderProblem> {
    if b.len() < HEADER_LEN {
        if b.len() >= LOG_OVERHEAD && be_i32(b, 8) == 0 {
            return Err(HeaderProblem::Zero);
        }
        return Err(HeaderProblem::Short);
    }
    let batch_len = be_i32(b, 8);
    if batch_len == 0 && be_i64(b, 0) == 0 {
        return Err(HeaderProblem::Zero);
    }
    if batch_len < (HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Err(HeaderProblem::Bad(format!(
            "batch length {batch_len} too small"
        )));
    }
    let magic = b[MAGIC_OFFSET] as i8;
    if magic != 2 {
        return Err(HeaderProblem::Bad(format!("magic {magic}, expected 2")));
    }
    let last_offset_delta = be_i32(b, 23);
    if last_offset_delta < 0 {
        return Err(HeaderProblem::Bad(format!(
            "negative lastOffsetDelta {last_offset_delta}"
        )));
    }
    let base_offset = be_i64(b, 0);
    if !(0..=i64::MAX - (1i64 << 32)).contains(&base_offset) {
        return Err(HeaderProblem::Bad(format!(
            "baseOffset {base_offset} out of range"
        )));
    }
    Ok(BatchHeader {
        base_offset,
        total_len: LOG_OVERHEAD + batch_len as usize,
        partition_leader_epoch: be_i32(b, PARTITION_LEADER_EPOCH_OFFSET),
        last_offset_delta,
        base_timestamp: be_i64(b, 27),
        max_timestamp: be_i64(b, 35),
        record_count: be_i32(b, 57),
        crc: be_i32(b, CRC_OFFSET) as u32,
    })
}

/// True if the CRC32C of `batch` (a whole batch) matches its stored crc.
pub fn crc_ok(batch: &[u8], header: &BatchHeader) -> bool {
    batch.len() == header.total_len
        && batch.len() >= HEADER_LEN
        && crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]) == header.crc
}

/// Split appended bytes into whole batches (headers checked, CRC not: the caller
/// validated the batches).
pub fn split_batches(b: &[u8]) -> Result<Vec<BatchHeader>, String> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < b.len() {
        let h = match parse_header(&b[pos..]) {
            Ok(h) => h,
            Err(HeaderProblem::Short) => {
                return Err(format!("truncated batch header at byte {pos}"));
            }
            Err(HeaderProblem::Zero) => return Err(format!("zero batch length at byte {pos}")),
            Err(HeaderProblem::Bad(s)) => return Err(format!("at byte {pos}: {s}")),
        };
        if h.total_len > b.len() - pos {
            return Err(format!(
                "batch at byte {pos} claims {} bytes, only {} left",
                h.total_len,
                b.len() - pos
            ));
        }
        out.push(h);
        pos += h.total_len;
    }
    if out.is_empty() {
        return Err("no batches".into());
    }
    Ok(out)
}

/// Overwrite the `baseOffset` field (not covered by the CRC).
pub fn set_base_offset(batch: &mut [u8], offset: i64) {
    batch[0..8].copy_from_slice(&offset.to_be_bytes());
}

/// Overwrite the `partitionLeaderEpoch` field (not covered by the CRC either).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[PARTITION_LEADER_EPOCH_OFFSET..MAGIC_OFFSET].copy_from_slice(&epoch.to_be_bytes());
}

/// Build a valid RecordBatch v2 with `count` dummy records' worth of header fields and
/// `payload` as the records section, and no partition leader epoch (`-1`, as clients
/// send it). For tests and benchmarks: the records section is
/// not decoded by the log, so any bytes do.
pub fn build_test_batch(base_offset: i64, count: i32, timestamp: i64, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_LEN];
    b.extend_from_slice(payload);
    let batch_len = (b.len() - LOG_OVERHEAD) as i32;
    b[0..8].copy_from_slice(&base_offset.to_be_bytes());
    b[8..12].copy_from_slice(&batch_len.to_be_bytes());
    b[12..16].copy_from_slice(&(-1i32).to_be_bytes());
    b[16] = 2;
    b[21..23].copy_from_slice(&0i16.to_be_bytes());
    b[23..27].copy_from_slice(&(count - 1).to_be_bytes());
    b[27..35].copy_from_slice(&timestamp.to_be_bytes());
    b[35..43].copy_from_slice(&timestamp.to_be_bytes());
    b[43..51].copy_from_slice(&(-1i64).to_be_bytes());
    b[51..53].copy_from_slice(&(-1i16).to_be_bytes());
    b[53..57].copy_from_slice(&(-1i32).to_be_bytes());
    b[57..61].copy_from_slice(&count.to_be_bytes());
    let crc = crc32c::crc32c(&b[ATTRIBUTES_OFFSET..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_built_batches() {
        let b = build_test_batch(42, 3, 7, b"abc");
        let h = parse_header(&b).unwrap();
        assert_eq!(
            (h.base_offset, h.last_offset(), h.max_timestamp, h.total_len),
            (42, 44, 7, b.len())
        );
        assert!(crc_ok(&b, &h));
        assert_eq!(h.partition_leader_epoch, -1);
        let mut stamped = b.clone();
        set_partition_leader_epoch(&mut stamped, 7);
        let h = parse_header(&stamped).unwrap();
        assert_eq!(h.partition_leader_epoch, 7);
        assert!(crc_ok(&stamped, &h), "the epoch is not covered by the CRC");
        let mut two = b.clone();
        two.extend_from_slice(&b);
        assert_eq!(split_batches(&two).unwrap().len(), 2);
    }

    #[test]
    fn garbage_never_panics() {
        let mut x = 0x1234_5678_9abc_def0u64;
        for len in 0..2000usize {
            let mut v = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.push(x as u8);
            }
            if len > 16 && len % 3 == 0 {
                v[16] = 2; // get past the magic check sometimes
                v[8..12].copy_from_slice(&((len as i32) - 12).to_be_bytes());
            }
            let _ = split_batches(&v);
            if let Ok(h) = parse_header(&v) {
                let _ = crc_ok(&v, &h);
                let _ = h.last_offset();
            }
        }
    }
}
