//! Appending: split the batches, decide on a roll, assign offsets and copy the
//! batches into the active segment's write buffer. Synchronous up to the write.

use std::future::Future;

use bytes::Bytes;

use crate::batch;
use crate::error::{LogError, Result};
use crate::segment::Segment;

use super::{wait_ticket, AppendInfo, PartitionLog, WriteTicket};

impl PartitionLog {
    /// Append batches, assigning offsets from the log end offset. Offsets are assigned
    /// when this is *called* (so calls made in order get ordered offsets, even if their
    /// futures are awaited together); the future resolves once the bytes are written
    /// (and synced, when the flush policy asks for it).
    pub fn append(&self, batches: Bytes) -> impl Future<Output = Result<AppendInfo>> + 'static {
        self.append_then_wait(batches, true)
    }

    /// Append batches keeping their own offsets (replication followers). The first base
    /// offset must be >= the log end offset and offsets must increase.
    pub fn append_with_offsets(
        &self,
        batches: Bytes,
    ) -> impl Future<Output = Result<AppendInfo>> + 'static {
        self.append_then_wait(batches, false)
    }

    fn append_then_wait(
        &self,
        batches: Bytes,
        assign: bool,
    ) -> impl Future<Output = Result<AppendInfo>> + 'static {
        let res = self.begin_append(batches, assign);
        let shared = self.shared.clone();
        async move {
            let (info, ticket) = res?;
            wait_ticket(&shared, ticket).await?;
            Ok(info)
        }
    }

    /// The synchronous half of [`append`](Self::append): offsets are assigned and the
    /// batches queued for the writer now; the ticket tells when they are written
    /// ([`written`](Self::written), [`is_written`](Self::is_written)). Nothing is queued
    /// when this fails.
    ///
    /// With `assign`, once the log has a leader epoch
    /// ([`assign_leader_epoch`](Self::assign_leader_epoch)), every batch's
    /// `partitionLeaderEpoch` is set to it (in the write buffer, like the base offset);
    /// before that, batches keep the client's value, which is not recorded. Without
    /// `assign` (a follower), every batch's epoch, the leader's, goes to the epoch
    /// cache.
    pub fn begin_append(&self, data: Bytes, assign: bool) -> Result<(AppendInfo, WriteTicket)> {
        let mut st = self.shared.state.borrow_mut();
        st.check_writable()?;
        let headers = batch::split_batches(&data).map_err(LogError::InvalidBatch)?;
        let seg_bytes = st.config.segment_bytes_clamped();
        if data.len() as u64 > seg_bytes {
            return Err(LogError::BatchTooLarge {
                size: data.len(),
                segment_bytes: seg_bytes,
            });
        }
        // Offsets.
        let mut next = st.leo;
        let mut bases = Vec::with_capacity(headers.len());
        for h in &headers {
            let base = if assign {
                next
            } else {
                if h.base_offset < next {
                    return Err(LogError::InvalidBatch(format!(
                        "batch base offset {} is below the expected next offset {next}",
                        h.base_offset
                    )));
                }
                h.base_offset
            };
            bases.push(base);
            next = base
                .checked_add(h.last_offset_delta as i64 + 1)
                .ok_or_else(|| LogError::InvalidBatch("offset overflow".into()))?;
        }
        let first = bases[0];
        let last = next - 1;
        let now = st.now();
        let incoming_max_ts = headers.iter().map(|h| h.max_timestamp).max().unwrap_or(-1);
        if st.should_roll(data.len(), now, incoming_max_ts, last) {
            st.roll(first, now);
        } else if let Some(seg) = st.active() {
            // A follower's offsets may jump; the segment base must stay below them.
            if seg.is_empty() && seg.base != first && seg.file.is_none() && !assign {
                let base = seg.base;
                st.segments.remove(&base);
                let seg = Segment::new(&st.dir, first, now);
                st.segments.insert(first, seg);
                if let Some(p) = st.pending.back_mut() {
                    p.seg_base = first;
                }
            }
        }
        let interval = st.config.index_interval_bytes as u64;
        let hint = st.buf_hint;
        // A leader (offsets assigned here) stamps its epoch, once it has one.
        let stamp = if assign {
            st.epochs.latest().map(|(e, _)| e)
        } else {
            None
        };
        let st = &mut *st;
        let (Some(p), Some(seg)) = (st.pending.back_mut(), st.segments.values_mut().next_back())
        else {
            return Err(LogError::Closed);
        };
        let need = p.buf.len() + data.len();
        if need > p.buf.capacity() {
            p.buf.reserve(need.max(hint) - p.buf.len());
        }
        let mut pos = 0usize;
        for (h, &base) in headers.iter().zip(&bases) {
            let in_buf = p.buf.len();
            p.buf.extend_from_slice(&data[pos..pos + h.total_len]);
            let end = in_buf + h.total_len;
            if assign {
                batch::set_base_offset(&mut p.buf.full_mut()[in_buf..end], base);
            }
            let epoch = match stamp {
                Some(e) => {
                    batch::set_partition_leader_epoch(&mut p.buf.full_mut()[in_buf..end], e);
                    Some(e)
                }
                // A client's value is no leader's epoch (Kafka's leader always
                // overwrites it): it stays in the batch but not in the cache.
                None if assign => None,
                None => Some(h.partition_leader_epoch),
            };
            // Kafka's `UnifiedLog.append`: every batch's epoch goes to the cache (a
            // missing one, -1, does not); the writer persists a change before this
            // write. (Field by field: the write buffer and segment are borrowed.)
            if let Some(e) = epoch.filter(|e| *e >= 0) {
                if st.epochs.assign(e, base) {
                    st.epochs_version += 1;
                }
            }
            let mut hh = *h;
            hh.base_offset = base;
            seg.on_batch(&hh, p.file_pos + in_buf as u64, interval);
            p.batches
                .push((base, hh.last_offset(), in_buf, h.total_len));
            p.messages += h.record_count.max(1) as i64;
            pos += h.total_len;
        }
        assert_eq!(
            seg.next_offset, next,
            "the active segment ends where the appended batches end"
        );
        assert_eq!(
            p.file_pos + p.buf.len() as u64,
            seg.logical_size,
            "the write buffer ends where the segment's appended data ends"
        );
        p.mark = seg.mark();
        p.end_offset = next;
        st.leo = next;
        st.stats.appends += 1;
        st.stats.batches += headers.len() as u64;
        st.stats.bytes_appended += data.len() as u64;
        let info = AppendInfo {
            base_offset: first,
            last_offset: last,
            log_end_offset: next,
            append_time_ms: now,
            log_start_offset: st.log_start,
        };
        let ticket = st.ticket(next);
        self.shared.work.notify(1);
        Ok((info, ticket))
    }
}
