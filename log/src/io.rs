//! Runtime-specific file operations (compio). Everything that talks to the I/O
//! driver lives here so the runtime could be swapped without touching the log logic.
//!
//! Blocking calls, all off the per-append hot path:
//! * `fallocate` (no compio op exists for it): called inline on the shard thread once
//!   per preallocation step (64 MiB by default); on ext4/xfs it only reserves
//!   unwritten extents and takes microseconds.
//! * directory listing and index `mmap` at `open` (recovery), plus `remove_dir` walks in
//!   `delete`: plain `std::fs` calls, not on the data path.
//!
//! Opening, reading, writing, fdatasync, ftruncate, unlink and rename go through the
//! driver (io_uring ops; with the epoll fallback compio runs the ones without a
//! readiness model on its own blocking pool; ftruncate on kernels before 6.9 too).

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use compio::fs::{File, OpenOptions};
use compio::io::{AsyncReadAt, AsyncWriteAtExt};
use compio::BufResult;

use crate::buf::{align_up, AlignedBuf, PaddedWrite};

/// Open (optionally create) a segment data file with `O_DIRECT`. Returns the file and
/// whether O_DIRECT is in effect. If the file system rejects O_DIRECT with EINVAL and
/// `allow_fallback` is set, the file is opened buffered instead.
pub async fn open_data_file(
    path: &Path,
    create: bool,
    writable: bool,
    allow_fallback: bool,
) -> io::Result<(File, bool)> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(writable).create(create && writable);
    opts.custom_flags(libc::O_DIRECT);
    match opts.open(path).await {
        Ok(f) => Ok((f, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) && allow_fallback => {
            tracing::warn!(
                path = %path.display(),
                "file system rejects O_DIRECT; using buffered I/O for this segment"
            );
            let mut opts = OpenOptions::new();
            opts.read(true).write(writable).create(create && writable);
            Ok((opts.open(path).await?, false))
        }
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Err(io::Error::new(
            e.kind(),
            format!(
                "O_DIRECT not supported on this file system ({e}); \
                 set allow_buffered_fallback or use a disk-backed file system"
            ),
        )),
        Err(e) => Err(e),
    }
}

/// Reserve `len` bytes from `offset` (file size grows, like Kafka's preallocate).
/// Blocking syscall, see the module docs. Returns Ok(false) if the file system does
/// not support fallocate.
pub fn fallocate(file: &File, offset: u64, len: u64) -> io::Result<bool> {
    let fd = file.as_raw_fd();
    // SAFETY: plain syscall on a file descriptor we own.
    let r = unsafe { libc::fallocate(fd, 0, offset as libc::off_t, len as libc::off_t) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Ok(false),
        _ => Err(e),
    }
}

/// Read `len` bytes (a multiple of 4 KiB) at `pos` (4 KiB aligned) into a fresh
/// aligned buffer. Stops early at end of file; the buffer's length says how much was
/// read.
pub async fn read_aligned(file: &File, pos: u64, len: usize) -> io::Result<AlignedBuf> {
    let len = align_up(len.max(1));
    let mut buf = AlignedBuf::take(len);
    loop {
        let done = buf.len();
        if done >= len {
            return Ok(buf);
        }
        // Read into the remaining (aligned) part of the buffer.
        let tail = ReadTail {
            buf,
            from: done,
            to: len,
        };
        let BufResult(res, tail) = file.read_at(tail, pos + done as u64).await;
        buf = tail.buf;
        match res {
            Ok(0) => return Ok(buf),
            Ok(n) => {
                buf.set_len_checked(done + n);
                if n % 4096 != 0 {
                    // Short read at end of file.
                    return Ok(buf);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The uninitialised part of an [`AlignedBuf`] from `from` on, as a read target.
struct ReadTail {
    buf: AlignedBuf,
    from: usize,
    to: usize,
}

impl compio::buf::IoBuf for ReadTail {
    fn as_init(&self) -> &[u8] {
        &[]
    }
}
impl compio::buf::SetLen for ReadTail {
    unsafe fn set_len(&mut self, _len: usize) {}
}
impl compio::buf::IoBufMut for ReadTail {
    fn as_uninit(&mut self) -> &mut [std::mem::MaybeUninit<u8>] {
        let (from, to) = (self.from, self.to);
        let full = self.buf.full_mut();
        let to = to.min(full.len());
        let part = &mut full[from.min(to)..to];
        // SAFETY: same layout; initialised bytes are valid MaybeUninit.
        unsafe { std::slice::from_raw_parts_mut(part.as_mut_ptr().cast(), part.len()) }
    }
}

/// Write the whole padded buffer at `pos`.
///
/// On an `O_DIRECT` file the write is a plain synchronous `pwrite` on a thread of the
/// runtime's blocking pool (started from, and so pinned like, the shard thread), not
/// an io_uring op. Why: an asynchronous direct write on ext4 or XFS completes through
/// the file system's completion worker (`dio/<dev>` kworker), queued on the CPU that
/// took the device interrupt, even for plain overwrites; when that CPU is busy (another
/// shard, the client, any load) the completion waits for the scheduler, and with
/// unwritten extents it also waits for their conversion. Produce acknowledgements were
/// seen waiting 0.3-3 s on an idle broker core that way (issue 19, in
/// docs/benchmarks.md). A synchronous direct write is completed by the thread that
/// waits for it, woken straight from the interrupt, so the broker's own threads finish
/// it. Buffered (fallback) files keep the io_uring op.
pub async fn write_all(
    file: &File,
    data: PaddedWrite,
    pos: u64,
    direct: bool,
) -> (io::Result<()>, PaddedWrite) {
    if direct {
        // The pool thread gets its own descriptor: if this future is dropped while the
        // write runs, the file may close, and its number could be reused by another
        // file before the write happens.
        let fd = match own_fd(file) {
            Ok(fd) => fd,
            Err(e) => return (Err(e), data),
        };
        let res = compio::runtime::spawn_blocking(move || {
            let r = pwrite_all(fd.as_raw_fd(), data.as_bytes(), pos);
            (r, data)
        })
        .await;
        return match res {
            Ok(r) => r,
            Err(_) => std::panic::resume_unwind(Box::new("blocking write panicked")),
        };
    }
    let mut f = file;
    let BufResult(res, data) = f.write_all_at(data, pos).await;
    (res, data)
}

/// A descriptor of `file` of its own (`dup`), closed when dropped.
fn own_fd(file: &File) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsFd;
    file.as_fd().try_clone_to_owned()
}

/// `pwrite` all of `buf` at `pos`, going on after short writes and EINTR.
fn pwrite_all(fd: std::os::fd::RawFd, mut buf: &[u8], mut pos: u64) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is a valid readable slice for its length; `fd` is open.
        let n = unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), pos as libc::off_t) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "pwrite wrote nothing",
            ));
        }
        buf = &buf[n as usize..];
        pos += n as u64;
    }
    Ok(())
}

/// Largest single write of [`write_zeros`].
const ZERO_CHUNK: usize = 1 << 20;

/// A page-aligned run of zeros that O_DIRECT writes can take by reference.
#[repr(C, align(4096))]
struct Zeros([u8; ZERO_CHUNK]);
static ZEROS: Zeros = Zeros([0; ZERO_CHUNK]);

/// Write zeros over `[pos, pos + len)` (both 4 KiB aligned), in writes of at most 1 MiB.
/// Used to turn preallocated (unwritten) extents into written ones ahead of the data,
/// so that data writes are plain overwrites (see `log::writer::maybe_fill`).
pub async fn write_zeros(file: &File, pos: u64, len: u64) -> io::Result<()> {
    debug_assert!(
        pos.is_multiple_of(4096) && len.is_multiple_of(4096),
        "aligned zero fill"
    );
    // Synchronous direct writes on a pool thread, as `write_all` (and for the same
    // reasons, with its own descriptor).
    let fd = own_fd(file)?;
    compio::runtime::spawn_blocking(move || {
        let mut at = pos;
        let end = pos + len;
        while at < end {
            let n = ((end - at) as usize).min(ZERO_CHUNK);
            pwrite_all(fd.as_raw_fd(), &ZEROS.0[..n], at)?;
            at += n as u64;
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|_| Err(io::Error::other("zero fill thread panicked")))
}

/// fdatasync.
pub async fn sync_data(file: &File) -> io::Result<()> {
    file.sync_data().await
}

/// ftruncate.
pub async fn set_len(file: &File, len: u64) -> io::Result<()> {
    file.set_len(len).await
}

/// File size.
pub async fn file_len(file: &File) -> io::Result<u64> {
    Ok(file.metadata().await?.len())
}

/// Write a small file (index, checkpoint) with buffered I/O and fdatasync it.
pub async fn write_small_file(path: &Path, data: Vec<u8>) -> io::Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .await?;
    if !data.is_empty() {
        let mut f = &file;
        let BufResult(res, _) = f.write_all_at(data, 0).await;
        res?;
    }
    file.sync_data().await?;
    file.close().await
}

/// Atomically replace `path` with `data` (write temp, sync, rename, sync directory).
pub async fn replace_file(dir: &Path, path: &Path, data: Vec<u8>) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    write_small_file(&tmp, data).await?;
    compio::fs::rename(&tmp, path).await?;
    sync_dir(dir).await
}

/// fsync a directory (makes file creations, renames and deletions durable).
pub async fn sync_dir(dir: &Path) -> io::Result<()> {
    let d = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)
        .await?;
    d.sync_all().await?;
    d.close().await
}

/// Unlink a file; a missing file is not an error.
pub async fn remove_file(path: &Path) -> io::Result<()> {
    match compio::fs::remove_file(path).await {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Rename a file or directory (through the driver).
pub async fn rename(from: &Path, to: &Path) -> io::Result<()> {
    compio::fs::rename(from, to).await
}
