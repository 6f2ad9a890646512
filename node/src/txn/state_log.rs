//! Transaction metadata as records of `__transaction_state`, in Kafka's own formats
//! (`TransactionLogKey` v0 and `TransactionLogValue` v0/v1, vendored in
//! net/kafka-protocol/transaction-coordinator/), so that Kafka's tools can read them.
//! A null value (tombstone) removes an expired transactional id.

use bytes::{Buf, Bytes};
use spate_net::codec::{self, Encoder};

/// Kafka's `TransactionState` ids, as stored in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnStatus {
    Empty = 0,
    Ongoing = 1,
    PrepareCommit = 2,
    PrepareAbort = 3,
    CompleteCommit = 4,
    CompleteAbort = 5,
    Dead = 6,
    PrepareEpochFence = 7,
}

impl TxnStatus {
    fn from_id(id: i8) -> Option<TxnStatus> {
        use TxnStatus::*;
        Some(match id {
            0 => Empty,
            1 => Ongoing,
            2 => PrepareCommit,
            3 => PrepareAbort,
            4 => CompleteCommit,
            5 => CompleteAbort,
            6 => Dead,
            7 => PrepareEpochFence,
            _ => return None,
        })
    }

    /// The name Kafka's DescribeTransactions and ListTransactions use.
    pub fn name(self) -> &'static str {
        use TxnStatus::*;
        match self {
            Empty => "Empty",
            Ongoing => "Ongoing",
            PrepareCommit => "PrepareCommit",
            PrepareAbort => "PrepareAbort",
            CompleteCommit => "CompleteCommit",
            CompleteAbort => "CompleteAbort",
            Dead => "Dead",
            PrepareEpochFence => "PrepareEpochFence",
        }
    }
}

/// One transactional id's durable state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnRecord {
    pub producer_id: i64,
    /// The producer id before the last epoch exhaustion (-1: none).
    pub previous_producer_id: i64,
    /// The producer id handed out next when the epoch is exhausted (-1: none).
    pub next_producer_id: i64,
    pub producer_epoch: i16,
    pub next_producer_epoch: i16,
    pub timeout_ms: i32,
    pub status: TxnStatus,
    /// (topic, partitions) in the transaction.
    pub partitions: Vec<(String, Vec<i32>)>,
    pub last_update_ms: i64,
    pub start_ms: i64,
    /// 0 or 1: the classic protocol; 2: KIP-890's epoch bump per transaction.
    pub client_transaction_version: i16,
}

const KEY_VERSION: i16 = 0;

pub fn encode_key(transactional_id: &str) -> Bytes {
    let mut e = Encoder::new();
    e.put_i16(KEY_VERSION);
    e.put_string(transactional_id, false);
    join(e)
}

/// The transactional id of a key record, or `None` for other versions and garbage.
pub fn decode_key(mut buf: Bytes) -> Option<String> {
    if buf.remaining() < 2 || buf.get_i16() != KEY_VERSION {
        return None;
    }
    codec::read_string(&mut buf, false).ok()
}

fn join(e: Encoder) -> Bytes {
    let parts = e.finish();
    if parts.len() == 1 {
        return parts.into_iter().next().unwrap_or_default();
    }
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(&p);
    }
    Bytes::from(out)
}

/// Kafka writes version 1 (flexible, with the tagged fields) for clients on transaction
/// version 2, and version 0 otherwise.
pub fn encode_value(r: &TxnRecord) -> Bytes {
    let flexible = r.client_transaction_version >= 2;
    let mut e = Encoder::new();
    e.put_i16(i16::from(flexible));
    e.put_i64(r.producer_id);
    e.put_i16(r.producer_epoch);
    e.put_i32(r.timeout_ms);
    e.put_i8(r.status as i8);
    // Kafka stores no partition list for an Empty transaction.
    if r.status == TxnStatus::Empty {
        put_len(&mut e, -1, flexible);
    } else {
        put_len(&mut e, r.partitions.len() as i32, flexible);
        for (topic, parts) in &r.partitions {
            e.put_string(topic, flexible);
            put_len(&mut e, parts.len() as i32, flexible);
            for p in parts {
                e.put_i32(*p);
            }
            if flexible {
                e.put_uvarint(0);
            }
        }
    }
    e.put_i64(r.last_update_ms);
    e.put_i64(r.start_ms);
    if flexible {
        let mut tags: Vec<(u32, Vec<u8>)> = Vec::new();
        if r.previous_producer_id != -1 {
            tags.push((0, r.previous_producer_id.to_be_bytes().to_vec()));
        }
        if r.next_producer_id != -1 {
            tags.push((1, r.next_producer_id.to_be_bytes().to_vec()));
        }
        if r.client_transaction_version != 0 {
            tags.push((2, r.client_transaction_version.to_be_bytes().to_vec()));
        }
        if r.next_producer_epoch != -1 {
            tags.push((3, r.next_producer_epoch.to_be_bytes().to_vec()));
        }
        e.put_uvarint(tags.len() as u32);
        for (tag, data) in tags {
            e.put_uvarint(tag);
            e.put_uvarint(data.len() as u32);
            e.put_slice(&data);
        }
    }
    join(e)
}

fn put_len(e: &mut Encoder, len: i32, flexible: bool) {
    if flexible {
        e.put_uvarint((len + 1) as u32);
    } else {
        e.put_i32(len);
    }
}

/// A value record of version 0 or 1, or `None` for other versions and garbage.
pub fn decode_value(mut buf: Bytes) -> Option<TxnRecord> {
    if buf.remaining() < 2 {
        return None;
    }
    let version = buf.get_i16();
    if !(0..=1).contains(&version) {
        return None;
    }
    let flexible = version >= 1;
    let b = &mut buf;
    let producer_id = codec::read_i64(b).ok()?;
    let producer_epoch = codec::read_i16(b).ok()?;
    let timeout_ms = codec::read_i32(b).ok()?;
    let status = TxnStatus::from_id(codec::read_i8(b).ok()?)?;
    let partitions = codec::read_nullable_array(b, flexible, 6, |b| {
        let topic = codec::read_string(b, flexible)?;
        let parts = codec::read_array(b, flexible, 4, codec::read_i32)?;
        if flexible {
            codec::read_tagged_fields(b, |_, _| Ok(()))?;
        }
        Ok((topic, parts))
    })
    .ok()?
    .unwrap_or_default();
    let last_update_ms = codec::read_i64(b).ok()?;
    let start_ms = codec::read_i64(b).ok()?;
    let mut r = TxnRecord {
        producer_id,
        previous_producer_id: -1,
        next_producer_id: -1,
        producer_epoch,
        next_producer_epoch: -1,
        timeout_ms,
        status,
        partitions,
        last_update_ms,
        start_ms,
        client_transaction_version: 0,
    };
    if flexible {
        codec::read_tagged_fields(b, |tag, data| {
            match tag {
                0 => r.previous_producer_id = codec::read_i64(data)?,
                1 => r.next_producer_id = codec::read_i64(data)?,
                2 => r.client_transaction_version = codec::read_i16(data)?,
                3 => r.next_producer_epoch = codec::read_i16(data)?,
                _ => {}
            }
            Ok(())
        })
        .ok()?;
    }
    Some(r)
}

/// Kafka's transactional id → `__transaction_state` partition mapping:
/// `Utils.abs(transactionalId.hashCode) % partitions` (Java `String.hashCode` over UTF-16
/// code units; `Utils.abs` maps `Integer.MIN_VALUE` to 0).
pub fn partition_for(transactional_id: &str, partitions: i32) -> i32 {
    let hash = transactional_id
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(tv: i16, status: TxnStatus) -> TxnRecord {
        TxnRecord {
            producer_id: 4000,
            previous_producer_id: if tv >= 2 { 3999 } else { -1 },
            next_producer_id: -1,
            producer_epoch: 7,
            next_producer_epoch: -1,
            timeout_ms: 60_000,
            status,
            partitions: if status == TxnStatus::Empty {
                Vec::new()
            } else {
                vec![
                    ("orders".into(), vec![0, 3]),
                    ("__consumer_offsets".into(), vec![12]),
                ]
            },
            last_update_ms: 1_700_000_000_123,
            start_ms: 1_700_000_000_000,
            client_transaction_version: tv,
        }
    }

    #[test]
    fn keys_and_values_round_trip() {
        assert_eq!(decode_key(encode_key("app-1")), Some("app-1".into()));
        assert_eq!(decode_key(Bytes::from_static(&[0, 1, 0, 1, b'x'])), None);
        for tv in [0, 2] {
            for s in [
                TxnStatus::Empty,
                TxnStatus::Ongoing,
                TxnStatus::CompleteCommit,
            ] {
                let r = record(tv, s);
                assert_eq!(decode_value(encode_value(&r)), Some(r), "tv {tv} {s:?}");
            }
        }
        assert_eq!(decode_value(Bytes::from_static(&[0, 9])), None);
    }

    #[test]
    fn partition_matches_kafka() {
        // Kafka 4.4 stores group "my-group" (hashCode -1906497762) in partition 12 of 50;
        // transactional ids use the same mapping.
        assert_eq!(partition_for("my-group", 50), 12);
        assert_eq!(partition_for("", 50), 0);
    }

    #[test]
    fn version_0_layout() {
        let v = encode_value(&record(0, TxnStatus::Empty));
        // version, pid, epoch, timeout, status, null partitions, two timestamps.
        assert_eq!(v.len(), 2 + 8 + 2 + 4 + 1 + 4 + 8 + 8);
        assert_eq!(&v[..2], &[0, 0]);
        assert_eq!(&v[17..21], &[0xff, 0xff, 0xff, 0xff]);
    }
}
