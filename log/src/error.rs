//! Error type of the log engine.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in a [`crate::PartitionLog`].
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A read or a `delete_records` asked for an offset outside `[log_start, log_end]`.
    #[error("offset {requested} out of range (log start {log_start}, log end {log_end})")]
    OffsetOutOfRange {
        /// The offset the caller asked for.
        requested: i64,
        /// First offset still in the log.
        log_start: i64,
        /// Next offset to be written (for reads: the written end offset).
        log_end: i64,
    },
    /// An I/O call failed; `context` says which one and on what file.
    #[error("{context}: {source}")]
    Io {
        /// What the log was doing (operation and path).
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Data on disk that must be intact (a closed segment or its checkpoint) is not.
    #[error("corrupt log data in {path}: {reason}")]
    Corrupt {
        /// File that failed the check.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// The bytes given to `append` are not a sequence of whole RecordBatch v2 batches,
    /// or their offsets do not fit the log.
    #[error("invalid record batch: {0}")]
    InvalidBatch(String),
    /// The appended batches are larger than a whole segment may be.
    #[error("record batch set of {size} bytes is larger than segment.bytes ({segment_bytes})")]
    BatchTooLarge {
        /// Size of the appended bytes.
        size: usize,
        /// Configured `segment.bytes`.
        segment_bytes: u64,
    },
    /// A previous write failed; the log accepts no more writes until it is reopened
    /// (Kafka takes the log directory offline in this case).
    #[error("log {dir} is offline after an earlier I/O failure: {reason}")]
    Offline {
        /// The partition directory.
        dir: PathBuf,
        /// The failure that took it offline.
        reason: String,
    },
    /// The log was closed or is closing.
    #[error("log is closed")]
    Closed,
}

impl LogError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> LogError {
        LogError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = LogError> = std::result::Result<T, E>;
