//! 4 KiB-aligned heap buffers for O_DIRECT I/O.
//!
//! An [`AlignedBuf`] owns its memory; it is handed to compio by value for a read or
//! a write and comes back when the operation completes. After a read (or after a
//! write, for the batch cache) it is frozen into [`bytes::Bytes`] with
//! `Bytes::from_owner`, so batches are handed out as slices without copying.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::ptr::NonNull;

/// Page size every O_DIRECT offset, length and buffer address is aligned to.
pub const ALIGN: usize = 4096;

/// Round `n` up to a multiple of [`ALIGN`].
pub const fn align_up(n: usize) -> usize {
    (n + ALIGN - 1) & !(ALIGN - 1)
}

/// Round `n` down to a multiple of [`ALIGN`].
pub const fn align_down(n: u64) -> u64 {
    n & !(ALIGN as u64 - 1)
}

/// A zero-initialised, 4 KiB-aligned buffer whose capacity is a multiple of 4 KiB.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    cap: usize,
    len: usize,
}

// SAFETY: the buffer exclusively owns its allocation; moving it between threads is
// as safe as moving a Vec<u8>. (Needed for `Bytes::from_owner`.)
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only give `&[u8]` access.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A buffer with at least `capacity` bytes (rounded up to 4 KiB, at least 4 KiB),
    /// all zero, length 0.
    pub fn with_capacity(capacity: usize) -> AlignedBuf {
        let cap = align_up(capacity.max(1));
        let layout = Layout::from_size_align(cap, ALIGN).expect("aligned layout");
        // SAFETY: layout has non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = match NonNull::new(raw) {
            Some(p) => p,
            None => std::alloc::handle_alloc_error(layout),
        };
        AlignedBuf { ptr, cap, len: 0 }
    }

    /// A buffer with at least `capacity` bytes, reused from this thread's pool when one
    /// fits (its bytes beyond the length are stale, never zero-guaranteed), else fresh.
    /// Fresh large aligned allocations cost page faults and zeroing on every use, so
    /// write and read buffers cycle through the pool.
    pub fn take(capacity: usize) -> AlignedBuf {
        // Power-of-two size classes so that buffers of similar sizes are interchangeable.
        let want = align_up(capacity.max(1)).next_power_of_two();
        let reused = POOL
            .try_with(|p| {
                let mut p = p.borrow_mut();
                let i = p
                    .bufs
                    .iter()
                    .rposition(|b| b.cap >= want && b.cap <= want.saturating_mul(2))?;
                let b = p.bufs.swap_remove(i);
                p.bytes -= b.cap;
                Some(b)
            })
            .ok()
            .flatten();
        match reused {
            Some(mut b) => {
                b.len = 0;
                b
            }
            None => {
                FRESH_ALLOCS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                AlignedBuf::with_capacity(want)
            }
        }
    }

    /// Give the buffer back to this thread's pool (bounded: the oldest pooled buffers
    /// are dropped to make room).
    pub fn recycle(self) {
        let _ = POOL.try_with(|p| {
            let mut p = p.borrow_mut();
            if self.cap > POOL_MAX_BYTES {
                return;
            }
            while !p.bufs.is_empty()
                && (p.bufs.len() >= POOL_MAX_BUFS || p.bytes + self.cap > POOL_MAX_BYTES)
            {
                let old = p.bufs.remove(0);
                p.bytes -= old.cap;
            }
            p.bytes += self.cap;
            p.bufs.push(self);
        });
    }

    /// Freeze into `Bytes` (no copy); the buffer returns to the pool of the thread that
    /// drops the last reference.
    pub fn freeze(self) -> bytes::Bytes {
        bytes::Bytes::from_owner(Recycled(Some(self)))
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Number of initialised (meaningful) bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if no bytes are in use.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes in use.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: all `cap` bytes are initialised (zeroed at allocation).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The whole capacity, mutable.
    pub fn full_mut(&mut self) -> &mut [u8] {
        // SAFETY: all `cap` bytes are initialised and exclusively owned.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.cap) }
    }

    /// Set the length (must be <= capacity).
    pub fn set_len_checked(&mut self, len: usize) {
        assert!(len <= self.cap, "AlignedBuf length beyond capacity");
        self.len = len;
    }

    /// Make room for `additional` more bytes, moving the content if needed.
    pub fn reserve(&mut self, additional: usize) {
        let need = self.len + additional;
        if need <= self.cap {
            return;
        }
        let mut bigger = AlignedBuf::take(need.max(self.cap * 2));
        bigger.full_mut()[..self.len].copy_from_slice(self.as_slice());
        bigger.len = self.len;
        std::mem::replace(self, bigger).recycle();
    }

    /// Append bytes, growing if needed.
    pub fn extend_from_slice(&mut self, src: &[u8]) {
        self.reserve(src.len());
        let start = self.len;
        self.full_mut()[start..start + src.len()].copy_from_slice(src);
        self.len += src.len();
    }

    /// Zero the bytes between the length and the next 4 KiB boundary and return that
    /// padded length (what an O_DIRECT write of this buffer covers).
    pub fn pad_to_page(&mut self) -> usize {
        let padded = align_up(self.len);
        let len = self.len;
        self.full_mut()[len..padded].fill(0);
        padded
    }
}

static FRESH_ALLOCS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many buffers `AlignedBuf::take` had to allocate because the pool had none that fit.
pub fn fresh_allocations() -> u64 {
    FRESH_ALLOCS.load(std::sync::atomic::Ordering::Relaxed)
}

const POOL_MAX_BUFS: usize = 16;
const POOL_MAX_BYTES: usize = 256 << 20;

#[derive(Default)]
struct Pool {
    bufs: Vec<AlignedBuf>,
    bytes: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// Owner of a frozen buffer: recycles it when the last `Bytes` goes away.
struct Recycled(Option<AlignedBuf>);

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        self.0.as_ref().map(|b| b.as_slice()).unwrap_or(&[])
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            b.recycle();
        }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.cap, ALIGN).expect("aligned layout");
        // SAFETY: allocated in `with_capacity` with this layout.
        unsafe { dealloc(self.ptr.as_ptr(), layout) }
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("cap", &self.cap)
            .finish()
    }
}

impl compio::buf::IoBuf for AlignedBuf {
    fn as_init(&self) -> &[u8] {
        self.as_slice()
    }
}

impl compio::buf::SetLen for AlignedBuf {
    unsafe fn set_len(&mut self, len: usize) {
        self.set_len_checked(len);
    }
}

impl compio::buf::IoBufMut for AlignedBuf {
    fn as_uninit(&mut self) -> &mut [MaybeUninit<u8>] {
        // SAFETY: same memory viewed as MaybeUninit, which has the same layout.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().cast(), self.cap) }
    }
}

/// A view of the first `len` bytes of an [`AlignedBuf`] used for writes that cover
/// padding beyond the buffer's logical length.
pub struct PaddedWrite {
    pub(crate) buf: AlignedBuf,
    pub(crate) len: usize,
}

impl compio::buf::IoBuf for PaddedWrite {
    fn as_init(&self) -> &[u8] {
        // SAFETY: `len <= cap` is checked when built; all capacity is initialised.
        unsafe { std::slice::from_raw_parts(self.buf.ptr.as_ptr(), self.len) }
    }
}

impl PaddedWrite {
    /// The bytes to write (the padded length).
    pub fn as_bytes(&self) -> &[u8] {
        compio::buf::IoBuf::as_init(self)
    }

    /// Pad `buf` to a page boundary and wrap it for writing.
    pub fn new(mut buf: AlignedBuf) -> PaddedWrite {
        let len = buf.pad_to_page();
        PaddedWrite { buf, len }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_reuses_buffers() {
        let a = AlignedBuf::take(40_000);
        let p = a.as_slice().as_ptr();
        assert_eq!(a.capacity(), 65536);
        a.recycle();
        let b = AlignedBuf::take(65536);
        assert_eq!(b.as_slice().as_ptr(), p);
        let mut b = b;
        b.set_len_checked(100);
        let f = b.freeze();
        let s = f.slice(10..20);
        drop(f);
        drop(s);
        let c = AlignedBuf::take(1000 * 60);
        assert_eq!(c.as_slice().as_ptr(), p);
    }
}
