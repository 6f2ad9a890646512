//! Per-partition log configuration (Kafka topic config names in the docs).

/// Configuration of one partition's log. `Default` gives Kafka's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: roll to a new segment before the active one would exceed
    /// this size. Default 1 GiB. Values above `i32::MAX` are clamped (index positions
    /// are 32-bit, as in Kafka).
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment's first batch (or its creation, if it
    /// carries no timestamp) is older than this. Default 7 days.
    pub segment_ms: i64,
    /// `retention.ms`: delete closed segments whose largest timestamp is older than
    /// this. Default 7 days; `-1` keeps data forever.
    pub retention_ms: i64,
    /// `retention.bytes`: delete the oldest closed segments while the log is larger
    /// than this. Default `-1` (unlimited).
    pub retention_bytes: i64,
    /// `cleanup.policy` contains `delete`: `retention.ms` and `retention.bytes` apply.
    /// Without it (compact only, or an empty policy) nothing is deleted by age or size.
    /// Default true.
    pub retention_enabled: bool,
    /// `index.interval.bytes`: bytes of batches between two sparse index entries.
    /// Default 4096.
    pub index_interval_bytes: u32,
    /// `segment.index.bytes`: maximum size of an offset index file; a segment whose
    /// offset index is full is rolled. Default 10 MiB.
    pub max_index_bytes: u32,
    /// `flush.messages`: fdatasync after this many records. `1` means every write,
    /// `i64::MAX` (default) means never (leave it to the device: O_DIRECT writes have
    /// reached the device when they complete, but file metadata such as extent
    /// conversion and size is only made durable by a sync).
    pub flush_messages: i64,
    /// `flush.ms`: fdatasync when the oldest unsynced write is this old.
    /// `i64::MAX` (default) means never.
    pub flush_ms: i64,
    /// Largest `fallocate` step of segment files (rounded to 4 KiB; `0` disables
    /// preallocation). Steps start at 64 KiB and grow with the segment up to this; a
    /// value of at least `segment_bytes` allocates the whole segment at once (Kafka's
    /// `preallocate`). Default 64 MiB.
    pub preallocate_bytes: u64,
    /// Largest zero-fill step of the active segment (rounded to 4 KiB; `0` disables
    /// zero filling). On O_DIRECT logs a background write puts zeros into the space
    /// ahead of the data, in steps that grow with the segment up to this, so that data
    /// writes overwrite written blocks: a write into preallocated (unwritten) space
    /// must have its extents converted when it completes, which ext4 and XFS do in a
    /// kernel worker that can delay the write's completion by hundreds of
    /// milliseconds. Default 0 (off): it writes every segment byte twice.
    pub zero_ahead_bytes: u64,
    /// Memory budget of this log's own batch cache (recently written batches served to
    /// readers without disk I/O), used when the log is opened without a shared cache
    /// (`PartitionLog::open_with`); ignored otherwise. Default 16 MiB; `0` disables it.
    pub cache_bytes: usize,
    /// Read-ahead of a partition read sequentially from disk: after a read that missed
    /// the batch cache, the log reads the next this-many bytes of the segment in the
    /// background and puts the batches into the cache, and reads on again when a reader
    /// has consumed half of that, so that disk reads overlap with sending and with the
    /// consumer's own work (what the page cache's read-ahead does for buffered files).
    /// Memory: the batches count against the cache budget; the reads in flight of all
    /// the logs sharing a cache hold at most a quarter of its budget. Rounded to 4 KiB;
    /// `0` disables it. Default 4 MiB.
    pub read_ahead_bytes: usize,
    /// When the file system rejects `O_DIRECT` (tmpfs, some FUSE/overlay setups), fall
    /// back to buffered I/O (with a warning) instead of failing `open`. Default true.
    pub allow_buffered_fallback: bool,
}

/// Seven days in milliseconds.
pub const SEVEN_DAYS_MS: i64 = 7 * 24 * 60 * 60 * 1000;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: SEVEN_DAYS_MS,
            retention_ms: SEVEN_DAYS_MS,
            retention_bytes: -1,
            retention_enabled: true,
            index_interval_bytes: 4096,
            max_index_bytes: 10 * 1024 * 1024,
            flush_messages: i64::MAX,
            flush_ms: i64::MAX,
            preallocate_bytes: 64 << 20,
            zero_ahead_bytes: 0,
            cache_bytes: 16 << 20,
            read_ahead_bytes: 4 << 20,
            allow_buffered_fallback: true,
        }
    }
}

impl LogConfig {
    pub(crate) fn segment_bytes_clamped(&self) -> u64 {
        self.segment_bytes.clamp(4096, i32::MAX as u64)
    }
    pub(crate) fn max_offset_index_entries(&self) -> usize {
        ((self.max_index_bytes as usize) / 8).max(1)
    }
}
