#![allow(dead_code)]
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;

use bytes::Bytes;
use spate_log::batch::{build_test_batch, parse_header};
use spate_log::{Clock, LogConfig};

/// A temp dir on the repo's file system (target/tmp), where O_DIRECT works.
pub fn tempdir() -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).unwrap();
    tempfile::Builder::new()
        .prefix("spate-log-")
        .tempdir_in(base)
        .unwrap()
}

/// Deterministic payload for a batch identified by `seed`.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A batch of `count` records, `len` payload bytes, all derived from `seed`.
pub fn batch(seed: u64, count: i32, ts: i64, len: usize) -> Bytes {
    Bytes::from(build_test_batch(0, count, ts, &payload(seed, len)))
}

/// Same as the appended batch after the log rewrote its base offset.
pub fn with_base(b: &[u8], base: i64) -> Vec<u8> {
    let mut v = b.to_vec();
    v[0..8].copy_from_slice(&base.to_be_bytes());
    v
}

pub fn base_of(b: &[u8]) -> i64 {
    parse_header(b).unwrap().base_offset
}

pub fn last_of(b: &[u8]) -> i64 {
    parse_header(b).unwrap().last_offset()
}

pub struct TestClock;

impl TestClock {
    /// A settable clock starting at `t`.
    pub fn start_at(t: i64) -> (Clock, Rc<Cell<i64>>) {
        let c = Rc::new(Cell::new(t));
        let c2 = c.clone();
        (Rc::new(move || c2.get()), c)
    }
}

pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        preallocate_bytes: 1 << 20,
        allow_buffered_fallback: false,
        ..LogConfig::default()
    }
}

/// A tmpfs of `size` mounted for the test's lifetime (a small disk that fills up).
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    /// Mounts it at `at` (needs root); `None` when that is not possible.
    pub fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .ok()?
            .success();
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
