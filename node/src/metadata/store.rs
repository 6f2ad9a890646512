//! The metadata log on disk: `<data_dir>/__cluster_metadata/metadata.log`, a sequence of
//! entries `[len: u32 BE][crc32c: u32 BE][JSON record]`. Replay stops at the first torn
//! or corrupt entry and truncates the file there.
//!
//! Writes are blocking `write` + `fdatasync` on the controller shard: metadata changes
//! are rare (topic create/delete/alter) and must be durable before they are answered.
//!
//! A failed append (short write, ENOSPC, EIO, failed fdatasync) may leave part of an
//! entry in the file. Entries appended after it would sit behind the torn one, and replay
//! (which stops at the first bad entry) would drop them on the next start. So a failed
//! append cuts the file back to the end of the last good entry and syncs that, and the
//! caller stops the broker ([`AppendError`]): a controller that cannot persist metadata
//! must not keep serving (Kafka's `ProcessTerminatingFaultHandler`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{MetadataImage, MetadataRecord};

/// Largest single record accepted on replay (a topic with many partitions and configs).
const MAX_ENTRY: usize = 64 << 20;

/// The file operations the store needs; a trait so that tests can make them fail.
pub trait LogFile: Send {
    fn append_all(&mut self, buf: &[u8]) -> std::io::Result<()>;
    fn sync(&mut self) -> std::io::Result<()>;
    /// Cut the file to `len` bytes and make that durable.
    fn truncate(&mut self, len: u64) -> std::io::Result<()>;
}

impl LogFile for File {
    fn append_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.write_all(buf)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.sync_data()
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.set_len(len)?;
        self.sync_all()
    }
}

/// A failed append. The records were not (durably) written; whatever part of them
/// reached the file was cut off again when `rolled_back` is true.
#[derive(Debug, thiserror::Error)]
#[error("writing {path}: {source}{}", rollback_note(.rollback))]
pub struct AppendError {
    path: String,
    source: std::io::Error,
    /// `None`: the file was truncated back to its last good entry. `Some`: that failed
    /// too; replay will cut the torn tail on the next start.
    rollback: Option<std::io::Error>,
}

fn rollback_note(rollback: &Option<std::io::Error>) -> String {
    match rollback {
        None => String::new(),
        Some(e) => format!(" (truncating back to the last good entry failed too: {e})"),
    }
}

impl AppendError {
    #[cfg(test)]
    pub fn rolled_back(&self) -> bool {
        self.rollback.is_none()
    }
}

pub struct MetadataStore {
    path: PathBuf,
    file: Box<dyn LogFile>,
    /// End of the last good entry: what the file holds after a successful append.
    len: u64,
}

impl MetadataStore {
    /// Open (or create) the metadata log and replay it into an image.
    pub fn open(data_dir: &Path) -> anyhow::Result<(MetadataStore, MetadataImage)> {
        let dir = data_dir.join("__cluster_metadata");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("metadata.log");
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .with_context(|| format!("reading {}", path.display()))?;
        let (records, valid_len) = decode_entries(&bytes);
        if valid_len < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                valid_len,
                file_len = bytes.len(),
                "metadata log has a torn or corrupt tail; truncating"
            );
            file.set_len(valid_len as u64)
                .context("truncating metadata log")?;
            file.sync_all().context("syncing metadata log")?;
        }
        let mut image = MetadataImage::default();
        for r in &records {
            image.apply(r);
        }
        Ok((
            MetadataStore {
                path,
                file: Box::new(file),
                len: valid_len as u64,
            },
            image,
        ))
    }

    /// Append records durably (written and fdatasync'ed) before they are applied. On
    /// failure the file is cut back to the last good entry (see [`AppendError`]); the
    /// caller must stop the broker.
    pub fn append(&mut self, records: &[MetadataRecord]) -> Result<(), AppendError> {
        let mut buf = Vec::new();
        for r in records {
            // The records are our own serde types: encoding cannot fail.
            encode_entry(r, &mut buf);
        }
        match self.file.append_all(&buf).and_then(|_| self.file.sync()) {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(())
            }
            Err(source) => {
                let rollback = self.file.truncate(self.len).err();
                Err(AppendError {
                    path: self.path.display().to_string(),
                    source,
                    rollback,
                })
            }
        }
    }
}

fn encode_entry(record: &MetadataRecord, out: &mut Vec<u8>) {
    // serde_json fails only on maps with non-string keys or failing Serialize impls;
    // MetadataRecord has neither.
    let json = serde_json::to_vec(record).expect("metadata records always encode");
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&json).to_be_bytes());
    out.extend_from_slice(&json);
}

/// Decode entries up to the first bad one; returns them and the length of the good prefix.
fn decode_entries(bytes: &[u8]) -> (Vec<MetadataRecord>, usize) {
    let mut records = Vec::new();
    let mut pos = 0;
    while bytes.len() - pos >= 8 {
        let len = u32::from_be_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]])
            as usize;
        let crc = u32::from_be_bytes([
            bytes[pos + 4],
            bytes[pos + 5],
            bytes[pos + 6],
            bytes[pos + 7],
        ]);
        if len > MAX_ENTRY || bytes.len() - pos - 8 < len {
            break;
        }
        let body = &bytes[pos + 8..pos + 8 + len];
        if crc32c::crc32c(body) != crc {
            break;
        }
        match serde_json::from_slice(body) {
            Ok(r) => records.push(r),
            Err(_) => break,
        }
        pos += 8 + len;
    }
    (records, pos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("spate-meta-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn replay_and_torn_tail() {
        let dir = temp_dir("torn");
        {
            let (mut store, img) = MetadataStore::open(&dir).unwrap();
            assert!(img.topics.is_empty());
            store
                .append(&[MetadataRecord::CreateTopic {
                    name: "a".into(),
                    id: [7; 16],
                    slots: vec![0],
                    configs: BTreeMap::new(),
                }])
                .unwrap();
            store
                .append(&[MetadataRecord::AddPartitions {
                    name: "a".into(),
                    slots: vec![1, 2],
                }])
                .unwrap();
        }
        // A torn third entry: a length with too few bytes behind it.
        let path = dir.join("__cluster_metadata/metadata.log");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[0, 0, 1, 0, 1, 2, 3, 4, b'{']).unwrap();
        drop(f);
        let good_len;
        {
            let (_, img) = MetadataStore::open(&dir).unwrap();
            assert_eq!(img.topic("a").unwrap().partitions.len(), 3);
            good_len = std::fs::metadata(&path).unwrap().len();
        }
        // Flip a byte inside the second entry: replay keeps only the first.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (_, img) = MetadataStore::open(&dir).unwrap();
        assert_eq!(img.topic("a").unwrap().partitions.len(), 1);
        assert!(std::fs::metadata(&path).unwrap().len() < good_len);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The real file, with failures on demand: a write lets `write_budget` bytes through
    /// and then fails (a full disk mid-entry), sync and truncate fail when told to.
    struct Faulty {
        inner: File,
        write_budget: Option<usize>,
        fail_sync: bool,
        fail_truncate: bool,
    }

    impl LogFile for Faulty {
        fn append_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
            match self.write_budget {
                Some(n) if n < buf.len() => {
                    self.inner.write_all(&buf[..n])?;
                    Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
                }
                _ => self.inner.write_all(buf),
            }
        }
        fn sync(&mut self) -> std::io::Result<()> {
            if self.fail_sync {
                return Err(std::io::Error::from_raw_os_error(libc::EIO));
            }
            self.inner.sync_data()
        }
        fn truncate(&mut self, len: u64) -> std::io::Result<()> {
            if self.fail_truncate {
                return Err(std::io::Error::from_raw_os_error(libc::EIO));
            }
            LogFile::truncate(&mut self.inner, len)
        }
    }

    fn faulty(
        path: &Path,
        write_budget: Option<usize>,
        fail_sync: bool,
        fail_truncate: bool,
    ) -> Box<dyn LogFile> {
        let inner = OpenOptions::new().append(true).open(path).unwrap();
        Box::new(Faulty {
            inner,
            write_budget,
            fail_sync,
            fail_truncate,
        })
    }

    fn topic(name: &str) -> MetadataRecord {
        MetadataRecord::CreateTopic {
            name: name.into(),
            id: [name.len() as u8; 16],
            slots: vec![0],
            configs: BTreeMap::new(),
        }
    }

    /// A write that fails mid-entry leaves the file holding exactly the good entries,
    /// and what is appended after a reopen is replayed (not lost behind a torn entry).
    #[test]
    fn failed_append_is_cut_back_and_later_appends_survive() {
        let dir = temp_dir("failed-append");
        let path = dir.join("__cluster_metadata/metadata.log");
        let (mut store, _) = MetadataStore::open(&dir).unwrap();
        store.append(&[topic("a")]).unwrap();
        store.append(&[topic("bb")]).unwrap();
        let good = std::fs::read(&path).unwrap();

        // ENOSPC after 11 bytes of a two-record append: a torn entry on disk...
        store.file = faulty(&path, Some(11), false, false);
        let err = store.append(&[topic("ccc"), topic("dddd")]).unwrap_err();
        assert!(err.rolled_back(), "{err}");
        assert!(err.to_string().contains("metadata.log"), "{err}");
        // ...cut back: the file is byte for byte the good entries.
        assert_eq!(std::fs::read(&path).unwrap(), good);
        drop(store);

        let (mut store, img) = MetadataStore::open(&dir).unwrap();
        assert_eq!(img.topics.keys().collect::<Vec<_>>(), ["a", "bb"]);
        store.append(&[topic("eeeee")]).unwrap();
        drop(store);
        let (_, img) = MetadataStore::open(&dir).unwrap();
        assert_eq!(img.topics.keys().collect::<Vec<_>>(), ["a", "bb", "eeeee"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A failed fdatasync: the written (but not known durable) entry is cut off too.
    #[test]
    fn failed_sync_is_cut_back() {
        let dir = temp_dir("failed-sync");
        let path = dir.join("__cluster_metadata/metadata.log");
        let (mut store, _) = MetadataStore::open(&dir).unwrap();
        store.append(&[topic("a")]).unwrap();
        let good = std::fs::read(&path).unwrap();
        store.file = faulty(&path, None, true, false);
        assert!(store.append(&[topic("bb")]).unwrap_err().rolled_back());
        assert_eq!(std::fs::read(&path).unwrap(), good);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// When cutting back fails as well, the error says so; replay on the next start
    /// still drops the torn entry and keeps the good ones.
    #[test]
    fn failed_rollback_is_reported_and_replay_recovers() {
        let dir = temp_dir("failed-rollback");
        let path = dir.join("__cluster_metadata/metadata.log");
        let (mut store, _) = MetadataStore::open(&dir).unwrap();
        store.append(&[topic("a")]).unwrap();
        store.file = faulty(&path, Some(5), false, true);
        let err = store.append(&[topic("bb")]).unwrap_err();
        assert!(!err.rolled_back());
        assert!(err.to_string().contains("truncating back"), "{err}");
        drop(store);
        let (mut store, img) = MetadataStore::open(&dir).unwrap();
        assert_eq!(img.topics.keys().collect::<Vec<_>>(), ["a"]);
        store.append(&[topic("ccc")]).unwrap();
        drop(store);
        let (_, img) = MetadataStore::open(&dir).unwrap();
        assert_eq!(img.topics.keys().collect::<Vec<_>>(), ["a", "ccc"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
