//! Snapshots of the metadata state on disk.
//!
//! A snapshot is, as in KRaft, the state written out as metadata records which, applied
//! in order to an empty state, rebuild it. File `<dir>/snapshot` (only the newest is
//! kept, replaced atomically):
//!
//! ```text
//! "SPATESN1"                       magic and format version
//! u32 LE, postcard(SnapshotMeta)   last log id, membership, snapshot id
//! u32 LE                           record count
//! (u32 LE, framed record) * count  ApiMessageAndVersion frames
//! u32 LE                           crc32c of everything before it
//! ```
//!
//! The same bytes are what a leader sends to a lagging follower.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use spate_net::metadata_frame::ApiMessageAndVersion;

use crate::files::{self, invalid};
use crate::types::SnapshotMeta;

const MAGIC: &[u8; 8] = b"SPATESN1";

/// A decoded snapshot.
pub struct Decoded {
    pub meta: SnapshotMeta,
    pub records: Vec<ApiMessageAndVersion>,
}

/// Encodes a snapshot of `records` (already framed).
pub fn encode(meta: &SnapshotMeta, records: &[Bytes]) -> io::Result<Vec<u8>> {
    let meta_bytes = postcard::to_allocvec(meta).map_err(io::Error::other)?;
    let size =
        MAGIC.len() + 12 + meta_bytes.len() + records.iter().map(|r| r.len() + 4).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(MAGIC);
    put_len(&mut out, meta_bytes.len())?;
    out.extend_from_slice(&meta_bytes);
    put_len(&mut out, records.len())?;
    for r in records {
        put_len(&mut out, r.len())?;
        out.extend_from_slice(r);
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

fn put_len(out: &mut Vec<u8>, len: usize) -> io::Result<()> {
    let len = u32::try_from(len).map_err(|_| invalid("snapshot part over 4 GiB".into()))?;
    out.extend_from_slice(&len.to_le_bytes());
    Ok(())
}

/// Decodes and checks a snapshot (checksum, framing, every record); never trusts a
/// length beyond the bytes present.
pub fn decode(bytes: &[u8]) -> io::Result<Decoded> {
    let bad = |what: &str| invalid(format!("snapshot: {what}"));
    let (body, crc) = bytes
        .split_at_checked(bytes.len().saturating_sub(4))
        .ok_or_else(|| bad("too short"))?;
    let crc: [u8; 4] = crc.try_into().map_err(|_| bad("too short"))?;
    if crc32c::crc32c(body) != u32::from_le_bytes(crc) {
        return Err(bad("checksum mismatch"));
    }
    let mut rest = body
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| bad("bad magic"))?;
    let meta_bytes = take(&mut rest)?;
    let meta: SnapshotMeta = postcard::from_bytes(meta_bytes).map_err(|_| bad("bad meta"))?;
    let count = read_u32(&mut rest)? as usize;
    // Each record takes at least its 4-byte length: bound the allocation by the input.
    let mut records = Vec::with_capacity(count.min(rest.len() / 4));
    for _ in 0..count {
        let frame = take(&mut rest)?;
        let record = ApiMessageAndVersion::decode(Bytes::copy_from_slice(frame))
            .map_err(|e| bad(&format!("bad record: {e}")))?;
        records.push(record);
    }
    if !rest.is_empty() {
        return Err(bad("bytes after the last record"));
    }
    Ok(Decoded { meta, records })
}

fn read_u32(rest: &mut &[u8]) -> io::Result<u32> {
    let (n, tail) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| invalid("snapshot: truncated".into()))?;
    *rest = tail;
    Ok(u32::from_le_bytes(*n))
}

fn take<'a>(rest: &mut &'a [u8]) -> io::Result<&'a [u8]> {
    let len = read_u32(rest)? as usize;
    let (part, tail) = rest
        .split_at_checked(len)
        .ok_or_else(|| invalid("snapshot: truncated".into()))?;
    *rest = tail;
    Ok(part)
}

/// The directory holding the newest snapshot. Builders (openraft runs them in their own
/// task) and installs from a leader both store through it; an older snapshot never
/// replaces a newer one.
pub struct SnapshotStore {
    path: PathBuf,
    newest: Mutex<Option<SnapshotMeta>>,
}

impl SnapshotStore {
    /// Opens the snapshot directory; returns the newest snapshot, decoded, if any.
    pub fn open(dir: &Path) -> io::Result<(SnapshotStore, Option<Decoded>)> {
        files::create_dir(dir)?;
        let path = dir.join("snapshot");
        let newest = match std::fs::read(&path) {
            Ok(b) => Some(decode(&b)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let store = SnapshotStore {
            path,
            newest: Mutex::new(newest.as_ref().map(|d| d.meta.clone())),
        };
        Ok((store, newest))
    }

    /// Stores a snapshot durably unless a newer one is already stored; returns whether
    /// it was stored.
    pub fn store(&self, meta: &SnapshotMeta, bytes: &[u8]) -> io::Result<bool> {
        let mut newest = self.newest.lock().expect("snapshot lock poisoned");
        if newest
            .as_ref()
            .is_some_and(|n| n.last_log_id > meta.last_log_id)
        {
            return Ok(false);
        }
        files::replace_file(&self.path, bytes)?;
        *newest = Some(meta.clone());
        Ok(true)
    }

    /// The newest snapshot's metadata and bytes, if any.
    pub fn read(&self) -> io::Result<Option<(SnapshotMeta, Vec<u8>)>> {
        let newest = self.newest.lock().expect("snapshot lock poisoned");
        let Some(meta) = newest.as_ref() else {
            return Ok(None);
        };
        Ok(Some((meta.clone(), std::fs::read(&self.path)?)))
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, LogId};
    use spate_net::metadata_records::{MetadataRecord, TopicRecord};
    use spate_net::Uuid;

    use super::*;

    fn sample() -> (SnapshotMeta, Vec<ApiMessageAndVersion>) {
        let meta = SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(3, 1), 42)),
            last_membership: Default::default(),
            snapshot_id: "3-42".into(),
        };
        let records = (0..3)
            .map(|i| {
                ApiMessageAndVersion::latest(MetadataRecord::Topic(TopicRecord {
                    name: format!("t{i}"),
                    topic_id: Uuid([i; 16]),
                }))
            })
            .collect();
        (meta, records)
    }

    #[test]
    fn round_trip_and_damage() {
        let (meta, records) = sample();
        let framed: Vec<Bytes> = records.iter().map(ApiMessageAndVersion::to_bytes).collect();
        let bytes = encode(&meta, &framed).expect("encode");
        let d = decode(&bytes).expect("decode");
        assert_eq!(d.meta, meta);
        assert_eq!(d.records, records);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err());
        }
        for at in 0..bytes.len() {
            let mut b = bytes.clone();
            b[at] ^= 0x5a;
            assert!(decode(&b).is_err(), "flip at {at} accepted");
        }
    }

    #[test]
    fn an_older_snapshot_never_replaces_a_newer_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, none) = SnapshotStore::open(dir.path()).expect("open");
        assert!(none.is_none());
        let (meta, records) = sample();
        let framed: Vec<Bytes> = records.iter().map(ApiMessageAndVersion::to_bytes).collect();
        let bytes = encode(&meta, &framed).expect("encode");
        assert!(store.store(&meta, &bytes).expect("store"));
        let mut older = meta.clone();
        older.last_log_id = Some(LogId::new(CommittedLeaderId::new(3, 1), 41));
        let older_bytes = encode(&older, &[]).expect("encode");
        assert!(!store.store(&older, &older_bytes).expect("store"));
        assert_eq!(store.read().expect("read"), Some((meta.clone(), bytes)));
        drop(store);
        let (_store, stored) = SnapshotStore::open(dir.path()).expect("open");
        let stored = stored.expect("a snapshot");
        assert_eq!((stored.meta, stored.records), (meta, records));
    }
}
