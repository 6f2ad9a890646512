//! Writing a cleaned segment (`<base>.log.cleaned` and its two index files) with plain
//! blocking I/O, for a cleaner thread. Nothing written here is part of the log until
//! `PartitionLog::replace_segments` swaps it in.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use crate::batch::parse_header;
use crate::segment::{paths_with_suffix, Segment};

use super::swap::CLEANED_SUFFIX;

/// A cleaned segment, written and synced, not yet swapped in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanedSegment {
    /// Base offset (that of the first segment it replaces).
    pub base: i64,
    /// Bytes of batches.
    pub size: u64,
    /// Offset after its last batch (`base` when empty).
    pub next_offset: i64,
    /// Batches written.
    pub batches: u64,
    /// Largest batch max timestamp, `-1` if none.
    pub max_timestamp: i64,
}

/// Writes one cleaned segment. Batches must come in increasing offset order.
pub struct CleanedSegmentWriter {
    dir: PathBuf,
    files: (PathBuf, PathBuf, PathBuf),
    out: io::BufWriter<File>,
    seg: Segment,
    interval: u64,
    batches: u64,
}

const WRITE_BUFFER: usize = 1 << 20;

impl CleanedSegmentWriter {
    /// Create (or truncate) the `.cleaned` files of a segment based at `base` in `dir`.
    pub fn create(dir: &Path, base: i64, index_interval_bytes: u32) -> io::Result<Self> {
        let files = paths_with_suffix(dir, base, CLEANED_SUFFIX);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&files.0)?;
        Ok(CleanedSegmentWriter {
            dir: dir.to_path_buf(),
            out: io::BufWriter::with_capacity(WRITE_BUFFER, file),
            seg: Segment::new(dir, base, 0),
            files,
            interval: u64::from(index_interval_bytes),
            batches: 0,
        })
    }

    /// Bytes appended so far.
    pub fn bytes_appended(&self) -> u64 {
        self.seg.logical_size
    }

    /// Append one whole batch. Refuses a batch that does not parse, comes before the
    /// previous one, or would take the segment past 2 GiB (index positions are 32-bit).
    pub fn append(&mut self, batch: &[u8]) -> io::Result<()> {
        let bad = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
        let h = parse_header(batch).map_err(|e| bad(format!("cleaned batch: {e:?}")))?;
        if h.total_len != batch.len() {
            return Err(bad(format!(
                "cleaned batch of {} bytes says it has {}",
                batch.len(),
                h.total_len
            )));
        }
        if h.base_offset < self.seg.next_offset {
            return Err(bad(format!(
                "cleaned batch at offset {} after offset {}",
                h.base_offset,
                self.seg.next_offset - 1
            )));
        }
        let pos = self.seg.logical_size;
        if pos + batch.len() as u64 > i32::MAX as u64 {
            return Err(bad("cleaned segment would exceed 2 GiB".into()));
        }
        self.out.write_all(batch)?;
        self.seg.on_batch(&h, pos, self.interval);
        self.batches += 1;
        Ok(())
    }

    /// Write out and sync the data file and its indexes; the file's modification time
    /// becomes `modified_ms` (that of the newest replaced segment, as Kafka keeps it),
    /// so time-based retention treats the cleaned data as old as it is.
    pub fn finish(mut self, modified_ms: i64) -> io::Result<CleanedSegment> {
        self.out.flush()?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| io::Error::other(e.to_string()))?;
        file.sync_data()?;
        if modified_ms > 0 {
            file.set_modified(UNIX_EPOCH + Duration::from_millis(modified_ms as u64))?;
        }
        // SAFETY: plain advice on an open descriptor.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
        drop(file);
        self.seg.finish_time_index();
        write_synced(&self.files.1, self.seg.index.bytes())?;
        write_synced(&self.files.2, self.seg.time_index.bytes())?;
        File::open(&self.dir)?.sync_all()?;
        Ok(CleanedSegment {
            base: self.seg.base,
            size: self.seg.logical_size,
            next_offset: self.seg.next_offset,
            batches: self.batches,
            max_timestamp: self.seg.max_ts,
        })
    }
}

fn write_synced(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.write_all(data)?;
    f.sync_data()
}
