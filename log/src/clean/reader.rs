//! Reading a sealed segment batch by batch with plain blocking I/O, for a cleaner
//! thread (not a shard's runtime). Pages read are dropped from the page cache again:
//! the cleaner reads each byte once and must not evict what readers use.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};

use crate::batch::{crc_ok, parse_header, BatchHeader, HEADER_LEN};

/// The batches of one sealed segment file, in order.
pub struct SegmentBatches {
    file: File,
    path: PathBuf,
    /// Bytes of batches in the file (its sealed size).
    size: u64,
    /// File position of `window[0]`.
    window_pos: u64,
    window: Bytes,
    /// Position of the next batch.
    pos: u64,
    chunk: usize,
    bytes_read: u64,
}

fn invalid(path: &Path, pos: u64, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{} at position {pos}: {what}", path.display()),
    )
}

impl SegmentBatches {
    /// Open `path`, whose batches take its first `size` bytes, reading `chunk` bytes at
    /// a time (more when one batch is larger).
    pub fn open(path: &Path, size: u64, chunk: usize) -> io::Result<SegmentBatches> {
        let file = File::open(path)?;
        // SAFETY: plain advice on an open descriptor.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
        }
        Ok(SegmentBatches {
            file,
            path: path.to_path_buf(),
            size,
            window_pos: 0,
            window: Bytes::new(),
            pos: 0,
            chunk: chunk.max(HEADER_LEN),
            bytes_read: 0,
        })
    }

    /// Bytes read from the file so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Make `[pos, pos + len)` available in the window.
    fn fill(&mut self, len: usize) -> io::Result<()> {
        let end = self.pos + len as u64;
        if self.pos >= self.window_pos && end <= self.window_pos + self.window.len() as u64 {
            return Ok(());
        }
        let want = len.max(self.chunk).min((self.size - self.pos) as usize);
        let mut buf = BytesMut::zeroed(want);
        self.file.read_exact_at(&mut buf, self.pos)?;
        // SAFETY: plain advice on an open descriptor.
        unsafe {
            libc::posix_fadvise(
                self.file.as_raw_fd(),
                self.pos as libc::off_t,
                want as libc::off_t,
                libc::POSIX_FADV_DONTNEED,
            );
        }
        self.bytes_read += want as u64;
        self.window_pos = self.pos;
        self.window = buf.freeze();
        Ok(())
    }

    /// The next whole batch (CRC checked) and its header, or `None` at the end.
    pub fn next_batch(&mut self) -> io::Result<Option<(BatchHeader, Bytes)>> {
        if self.pos >= self.size {
            return Ok(None);
        }
        if self.size - self.pos < HEADER_LEN as u64 {
            return Err(invalid(&self.path, self.pos, "partial batch header"));
        }
        self.fill(HEADER_LEN)?;
        let off = (self.pos - self.window_pos) as usize;
        let h = parse_header(&self.window[off..])
            .map_err(|e| invalid(&self.path, self.pos, format!("{e:?}")))?;
        if self.pos + h.total_len as u64 > self.size {
            return Err(invalid(
                &self.path,
                self.pos,
                "batch beyond the segment's end",
            ));
        }
        self.fill(h.total_len)?;
        let off = (self.pos - self.window_pos) as usize;
        let batch = self.window.slice(off..off + h.total_len);
        if !crc_ok(&batch, &h) {
            return Err(invalid(&self.path, self.pos, "CRC mismatch"));
        }
        self.pos += h.total_len as u64;
        Ok(Some((h, batch)))
    }
}
