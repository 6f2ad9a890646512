//! The metadata log on disk: `<data_dir>/__cluster_metadata/metadata.log`, a sequence of
//! entries `[len: u32 BE][crc32c: u32 BE][JSON record]`. Replay stops at the first torn
//! or corrupt entry and truncates the file there.
//!
//! Writes are blocking `write` + `fdatasync` on the controller shard: metadata changes
//! are rare (topic create/delete/alter) and must be durable before they are answered.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{MetadataImage, MetadataRecord};

/// Largest single record accepted on replay (a topic with many partitions and configs).
const MAX_ENTRY: usize = 64 << 20;

pub struct MetadataStore {
    path: PathBuf,
    file: File,
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
        file.read_to_end(&mut bytes).with_context(|| format!("reading {}", path.display()))?;
        let (records, valid_len) = decode_entries(&bytes);
        if valid_len < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                valid_len,
                file_len = bytes.len(),
                "metadata log has a torn or corrupt tail; truncating"
            );
            file.set_len(valid_len as u64).context("truncating metadata log")?;
            file.sync_all().context("syncing metadata log")?;
        }
        let mut image = MetadataImage::default();
        for r in &records {
            image.apply(r);
        }
        Ok((MetadataStore { path, file }, image))
    }

    /// Append records durably (written and fdatasync'ed) before they are applied.
    pub fn append(&mut self, records: &[MetadataRecord]) -> anyhow::Result<()> {
        let mut buf = Vec::new();
        for r in records {
            encode_entry(r, &mut buf)?;
        }
        self.file
            .write_all(&buf)
            .and_then(|_| self.file.sync_data())
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

fn encode_entry(record: &MetadataRecord, out: &mut Vec<u8>) -> anyhow::Result<()> {
    let json = serde_json::to_vec(record).context("encoding metadata record")?;
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&json).to_be_bytes());
    out.extend_from_slice(&json);
    Ok(())
}

/// Decode entries up to the first bad one; returns them and the length of the good prefix.
fn decode_entries(bytes: &[u8]) -> (Vec<MetadataRecord>, usize) {
    let mut records = Vec::new();
    let mut pos = 0;
    while bytes.len() - pos >= 8 {
        let len = u32::from_be_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]]) as usize;
        let crc = u32::from_be_bytes([bytes[pos + 4], bytes[pos + 5], bytes[pos + 6], bytes[pos + 7]]);
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
                .append(&[MetadataRecord::CreateTopic { name: "a".into(), id: [7; 16], slots: vec![0], configs: BTreeMap::new() }])
                .unwrap();
            store.append(&[MetadataRecord::AddPartitions { name: "a".into(), slots: vec![1, 2] }]).unwrap();
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
}
