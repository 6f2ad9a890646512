//! The Raft log and vote, durable in a directory.
//!
//! Layout of `<dir>`:
//!
//! * `vote`: the last vote, `[crc32c][postcard(Vote)]`, replaced atomically;
//! * `purged`: the last purged log id, same format;
//! * `<first index, 20 digits>.log`: segments of entries, each entry framed as
//!   `[len: u32 LE][crc32c(payload): u32 LE][payload = postcard(Entry)]`.
//!
//! Every append is written and `fdatasync`ed before openraft is told it is flushed (so
//! before this node acknowledges it to a leader or counts it for a commit). At open,
//! the last segment is scanned and cut at the first torn or corrupt entry (a crash in
//! the middle of an append); damage in an earlier segment is an error, since those
//! entries may be committed.
//!
//! Every unpurged entry is also kept in memory, for the readers: the metadata log
//! between two snapshots is small (bounded by the snapshot policy and the batch size).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogReader};

use crate::files::{self, invalid, log_error, vote_error};
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

/// Bytes before an entry's payload: length and checksum.
const ENTRY_HEADER: usize = 8;

/// The durable Raft log and vote of one controller.
pub struct LogStore {
    inner: Arc<Mutex<LogInner>>,
}

/// Reads entries for replication; shares the store's in-memory copy.
#[derive(Clone)]
pub struct LogReader {
    inner: Arc<Mutex<LogInner>>,
}

struct LogInner {
    dir: PathBuf,
    /// Every entry after `purged`, with where it is on disk.
    entries: BTreeMap<u64, Stored>,
    /// Segment base (first index written to it) -> its length in bytes. Every entry of
    /// a segment has an index below the next segment's base.
    segments: BTreeMap<u64, u64>,
    /// The last segment, open for appending.
    active: Option<Active>,
    purged: Option<LogId>,
    vote: Option<Vote>,
    segment_bytes: u64,
    max_entry_bytes: usize,
}

struct Stored {
    entry: Entry,
    segment: u64,
    offset: u64,
}

struct Active {
    base: u64,
    file: File,
    len: u64,
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, cutting a torn tail. `segment_bytes` is the
    /// size at which a new segment is started; `max_entry_bytes` bounds one entry.
    pub fn open(dir: &Path, segment_bytes: u64, max_entry_bytes: usize) -> io::Result<LogStore> {
        files::create_dir(dir)?;
        let vote: Option<Vote> = files::load_value(&dir.join("vote"))?;
        let purged: Option<LogId> = files::load_value(&dir.join("purged"))?;
        let mut bases = Vec::new();
        for e in fs::read_dir(dir)? {
            let name = e?.file_name();
            let name = name.to_string_lossy();
            if let Some(base) = name.strip_suffix(".log") {
                let base = base
                    .parse::<u64>()
                    .map_err(|_| invalid(format!("{}: unexpected file {name}", dir.display())))?;
                bases.push(base);
            }
        }
        bases.sort_unstable();
        let mut inner = LogInner {
            dir: dir.to_path_buf(),
            entries: BTreeMap::new(),
            segments: BTreeMap::new(),
            active: None,
            purged,
            vote,
            segment_bytes,
            max_entry_bytes,
        };
        for (i, &base) in bases.iter().enumerate() {
            let last = i + 1 == bases.len();
            inner.load_segment(base, last)?;
        }
        if let Some((&base, &len)) = inner.segments.last_key_value() {
            let file = OpenOptions::new()
                .append(true)
                .open(inner.segment_path(base))?;
            inner.active = Some(Active { base, file, len });
        }
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, LogInner> {
        lock(&self.inner)
    }
}

/// The lock is only held for in-memory work and synchronous file calls, never across an
/// await; a poisoned lock means a panic while appending, after which nothing here can
/// be trusted, so it propagates.
fn lock(m: &Mutex<LogInner>) -> MutexGuard<'_, LogInner> {
    m.lock().expect("log store lock poisoned")
}

impl LogInner {
    fn segment_path(&self, base: u64) -> PathBuf {
        self.dir.join(format!("{base:020}.log"))
    }

    fn last_index(&self) -> Option<u64> {
        self.entries
            .last_key_value()
            .map(|(&i, _)| i)
            .or(self.purged.map(|p| p.index))
    }

    /// Reads one segment into memory. The last segment is cut at its first bad entry;
    /// any other damage is an error.
    fn load_segment(&mut self, base: u64, last: bool) -> io::Result<()> {
        let path = self.segment_path(base);
        let bytes = fs::read(&path)?;
        let mut pos = 0usize;
        while pos < bytes.len() {
            match decode_entry(&bytes[pos..], self.max_entry_bytes) {
                Some((entry, used)) => {
                    self.keep_loaded(entry, base, pos as u64, &path)?;
                    pos += used;
                }
                None if last => {
                    tracing::warn!(
                        segment = %path.display(),
                        at = pos,
                        dropped = bytes.len() - pos,
                        "torn or corrupt entry at the end of the controller log; cutting it"
                    );
                    let f = OpenOptions::new().write(true).open(&path)?;
                    f.set_len(pos as u64)?;
                    f.sync_all()?;
                    break;
                }
                None => {
                    return Err(invalid(format!(
                        "{}: corrupt entry at byte {pos} of a sealed segment",
                        path.display()
                    )))
                }
            }
        }
        self.segments.insert(base, pos as u64);
        Ok(())
    }

    /// Keeps a loaded entry unless it is purged; entries after the purge point must
    /// follow each other without gaps.
    fn keep_loaded(
        &mut self,
        entry: Entry,
        segment: u64,
        offset: u64,
        path: &Path,
    ) -> io::Result<()> {
        let index = entry.log_id.index;
        if self.purged.is_some_and(|p| index <= p.index) {
            return Ok(());
        }
        let expected = match self.entries.last_key_value() {
            Some((&prev, _)) => Some(prev + 1),
            None => self.purged.map(|p| p.index + 1),
        };
        if expected.is_some_and(|e| e != index) {
            return Err(invalid(format!(
                "{}: entry {index} where {expected:?} was expected",
                path.display()
            )));
        }
        self.entries.insert(
            index,
            Stored {
                entry,
                segment,
                offset,
            },
        );
        Ok(())
    }

    /// Writes entries to the active segment (rolling when it is full) and syncs them.
    fn append(&mut self, entries: Vec<Entry>) -> io::Result<()> {
        for entry in entries {
            let index = entry.log_id.index;
            if let Some(last) = self.last_index() {
                if index != last + 1 {
                    return Err(invalid(format!(
                        "append of entry {index} after entry {last}"
                    )));
                }
            }
            let frame = encode_entry(&entry)?;
            if frame.len() - ENTRY_HEADER > self.max_entry_bytes {
                return Err(invalid(format!(
                    "entry {index} has {} bytes, more than {}",
                    frame.len(),
                    self.max_entry_bytes
                )));
            }
            if self
                .active
                .as_ref()
                .is_none_or(|a| a.len >= self.segment_bytes)
            {
                self.roll(index)?;
            }
            let active = self
                .active
                .as_mut()
                .ok_or_else(|| invalid("no active segment after a roll".into()))?;
            active.file.write_all(&frame)?;
            let offset = active.len;
            active.len += frame.len() as u64;
            let (segment, len) = (active.base, active.len);
            self.segments.insert(segment, len);
            self.entries.insert(
                index,
                Stored {
                    entry,
                    segment,
                    offset,
                },
            );
        }
        match &self.active {
            Some(a) => a.file.sync_data(),
            None => Ok(()),
        }
    }

    /// Seals the active segment (synced) and starts a new one at `base`.
    fn roll(&mut self, base: u64) -> io::Result<()> {
        if let Some(old) = self.active.take() {
            old.file.sync_data()?;
        }
        let path = self.segment_path(base);
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)?;
        files::sync_dir(&self.dir)?;
        self.segments.insert(base, 0);
        self.active = Some(Active { base, file, len: 0 });
        Ok(())
    }

    /// Removes entry `index` and everything after it, on disk first.
    fn truncate(&mut self, index: u64) -> io::Result<()> {
        let Some(stored) = self.entries.get(&index) else {
            // Nothing at or after `index` (openraft never truncates purged entries).
            return Ok(());
        };
        let (segment, offset) = (stored.segment, stored.offset);
        // Later segments go first: a crash in between leaves the removed entries in
        // place, which is a log openraft may truncate again, never one with a gap.
        let later: Vec<u64> = self
            .segments
            .range(segment + 1..)
            .map(|(&b, _)| b)
            .collect();
        self.active = None;
        for base in later.into_iter().rev() {
            fs::remove_file(self.segment_path(base))?;
            self.segments.remove(&base);
        }
        if offset == 0 {
            fs::remove_file(self.segment_path(segment))?;
            self.segments.remove(&segment);
        } else {
            let f = OpenOptions::new()
                .write(true)
                .open(self.segment_path(segment))?;
            f.set_len(offset)?;
            f.sync_all()?;
            self.segments.insert(segment, offset);
        }
        files::sync_dir(&self.dir)?;
        if let Some((&base, &len)) = self.segments.last_key_value() {
            let file = OpenOptions::new()
                .append(true)
                .open(self.segment_path(base))?;
            self.active = Some(Active { base, file, len });
        }
        self.entries.split_off(&index);
        Ok(())
    }

    /// Forgets every entry up to `log_id` (they are in a snapshot): records the purge
    /// point durably, then removes segments that hold nothing newer.
    fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        files::store_value(&self.dir.join("purged"), &log_id)?;
        self.purged = Some(log_id);
        self.entries = self.entries.split_off(&(log_id.index + 1));
        // A segment whose successor starts at or before `index + 1` holds only purged
        // entries; the active (last) segment always stays.
        let bases: Vec<u64> = self.segments.keys().copied().collect();
        let mut removed = false;
        for pair in bases.windows(2) {
            if pair[1] <= log_id.index + 1 {
                fs::remove_file(self.segment_path(pair[0]))?;
                self.segments.remove(&pair[0]);
                removed = true;
            }
        }
        if removed {
            files::sync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn read_range<RB: RangeBounds<u64>>(&self, range: RB) -> Vec<Entry> {
        self.entries
            .range(range)
            .map(|(_, s)| s.entry.clone())
            .collect()
    }
}

/// `[len][crc][postcard(entry)]`.
fn encode_entry(entry: &Entry) -> io::Result<Vec<u8>> {
    let body = postcard::to_allocvec(entry).map_err(io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(|_| invalid("entry over 4 GiB".into()))?;
    let mut out = Vec::with_capacity(ENTRY_HEADER + body.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// One entry from the front of `bytes` and the bytes it used; `None` if it is torn
/// (too short), too large, fails its checksum or does not decode.
fn decode_entry(bytes: &[u8], max_entry_bytes: usize) -> Option<(Entry, usize)> {
    let header = bytes.get(..ENTRY_HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    if len > max_entry_bytes {
        return None;
    }
    let body = bytes.get(ENTRY_HEADER..ENTRY_HEADER + len)?;
    if crc32c::crc32c(body) != crc {
        return None;
    }
    let entry = postcard::from_bytes(body).ok()?;
    Some((entry, ENTRY_HEADER + len))
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(lock(&self.inner).read_range(range))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self.lock().read_range(range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = self.lock();
        let last = inner
            .entries
            .last_key_value()
            .map(|(_, s)| s.entry.log_id)
            .or(inner.purged);
        Ok(LogState {
            last_purged_log_id: inner.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            inner: self.inner.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let mut inner = self.lock();
        let path = inner.dir.join("vote");
        files::store_value(&path, vote).map_err(vote_error)?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.lock().vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let result = self.lock().append(entries.into_iter().collect());
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                Err(log_error(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.lock().truncate(log_id.index).map_err(log_error)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.lock().purge(log_id).map_err(log_error)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::types::MetadataBatch;

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 0), index),
            payload: EntryPayload::Normal(MetadataBatch {
                records: vec![Bytes::from(format!("record {index}"))],
            }),
        }
    }

    fn indexes(store: &LogStore) -> Vec<u64> {
        store.lock().entries.keys().copied().collect()
    }

    fn open(dir: &Path) -> LogStore {
        LogStore::open(dir, 200, 1 << 20).expect("open")
    }

    #[test]
    fn entries_survive_reopen_across_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        store
            .lock()
            .append((0..20).map(|i| entry(1, i)).collect())
            .expect("append");
        assert!(store.lock().segments.len() > 2, "small segments roll");
        drop(store);
        let store = open(dir.path());
        assert_eq!(indexes(&store), (0..20).collect::<Vec<_>>());
        assert_eq!(
            store.lock().read_range(5..7),
            vec![entry(1, 5), entry(1, 6)]
        );
    }

    #[test]
    fn a_torn_tail_is_cut_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        store
            .lock()
            .append((0..3).map(|i| entry(1, i)).collect())
            .expect("append");
        let (base, len) = {
            let inner = store.lock();
            let (&b, &l) = inner.segments.last_key_value().expect("segment");
            (b, l)
        };
        drop(store);
        let path = dir.path().join(format!("{base:020}.log"));
        // Half of a new entry, then garbage in place of the last byte of the previous.
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(&encode_entry(&entry(1, 3)).expect("encode")[..10])
            .expect("write");
        drop(f);
        let store = open(dir.path());
        assert_eq!(indexes(&store), vec![0, 1, 2]);
        assert_eq!(fs::metadata(&path).expect("stat").len(), len);
        // The log goes on after the cut.
        store.lock().append(vec![entry(2, 3)]).expect("append");
        drop(store);
        let store = open(dir.path());
        assert_eq!(indexes(&store), vec![0, 1, 2, 3]);

        // A flipped byte in the last entry: cut too.
        let bytes = fs::read(&path).expect("read");
        let mut damaged = bytes.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        fs::write(&path, &damaged).expect("write");
        drop(store);
        let store = open(dir.path());
        assert_eq!(*indexes(&store).last().expect("entries"), 2);
    }

    #[test]
    fn damage_in_a_sealed_segment_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        store
            .lock()
            .append((0..20).map(|i| entry(1, i)).collect())
            .expect("append");
        drop(store);
        let first = dir.path().join(format!("{:020}.log", 0));
        let mut bytes = fs::read(&first).expect("read");
        bytes[ENTRY_HEADER + 1] ^= 0xff;
        fs::write(&first, &bytes).expect("write");
        assert!(LogStore::open(dir.path(), 200, 1 << 20).is_err());
    }

    #[test]
    fn truncate_and_purge_are_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        store
            .lock()
            .append((0..20).map(|i| entry(1, i)).collect())
            .expect("append");
        store.lock().truncate(12).expect("truncate");
        store.lock().append(vec![entry(2, 12)]).expect("append");
        store
            .lock()
            .purge(LogId::new(CommittedLeaderId::new(1, 0), 8))
            .expect("purge");
        drop(store);
        let store = open(dir.path());
        assert_eq!(indexes(&store), (9..=12).collect::<Vec<_>>());
        assert_eq!(store.lock().read_range(12..), vec![entry(2, 12)]);
        assert_eq!(store.lock().purged.map(|p| p.index), Some(8));
        // Appends must follow the last entry.
        assert!(store.lock().append(vec![entry(2, 20)]).is_err());
    }

    #[test]
    fn purge_past_the_end_then_append_after_a_snapshot() {
        // A follower that installs a snapshot ahead of its log purges past its last
        // entry and goes on from the snapshot's index.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        store
            .lock()
            .append((0..3).map(|i| entry(1, i)).collect())
            .expect("append");
        store
            .lock()
            .purge(LogId::new(CommittedLeaderId::new(3, 0), 100))
            .expect("purge");
        store
            .lock()
            .append(vec![entry(3, 101), entry(3, 102)])
            .expect("append");
        drop(store);
        let store = open(dir.path());
        assert_eq!(indexes(&store), vec![101, 102]);
    }

    #[test]
    fn vote_is_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = open(dir.path());
        let vote = Vote::new(7, 2);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(store.save_vote(&vote)).expect("save");
        drop(store);
        let mut store = open(dir.path());
        assert_eq!(rt.block_on(store.read_vote()).expect("read"), Some(vote));
    }
}
