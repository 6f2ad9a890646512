//! Committed offsets as records of `__consumer_offsets`, in Kafka's own formats so that
//! Kafka tooling can read them: key version 1 (group, topic, partition) and value
//! version 3 (offset, leader epoch, metadata, commit time); a null value deletes.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Offset-commit key versions 0 and 1 share a layout; version 2 keys are group metadata.
const OFFSET_KEY_VERSION: i16 = 1;
const GROUP_METADATA_KEY_VERSION: i16 = 2;
const OFFSET_VALUE_VERSION: i16 = 3;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OffsetKey {
    pub group: String,
    pub topic: String,
    pub partition: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

fn put_string(out: &mut BytesMut, s: &str) {
    out.put_i16(s.len() as i16);
    out.put_slice(s.as_bytes());
}

fn get_string(buf: &mut Bytes) -> Option<String> {
    if buf.remaining() < 2 {
        return None;
    }
    let len = buf.get_i16();
    if len < 0 {
        return Some(String::new());
    }
    let len = len as usize;
    if buf.remaining() < len {
        return None;
    }
    String::from_utf8(buf.split_to(len).to_vec()).ok()
}

pub fn encode_key(key: &OffsetKey) -> Bytes {
    let mut out = BytesMut::with_capacity(10 + key.group.len() + key.topic.len());
    out.put_i16(OFFSET_KEY_VERSION);
    put_string(&mut out, &key.group);
    put_string(&mut out, &key.topic);
    out.put_i32(key.partition);
    out.freeze()
}

pub fn encode_value(v: &CommittedOffset) -> Bytes {
    let mut out = BytesMut::with_capacity(26 + v.metadata.len());
    out.put_i16(OFFSET_VALUE_VERSION);
    out.put_i64(v.offset);
    out.put_i32(v.leader_epoch);
    put_string(&mut out, &v.metadata);
    out.put_i64(v.commit_timestamp);
    out.freeze()
}

/// An offset-commit key, or `None` for other record kinds (group metadata) and garbage.
pub fn decode_key(mut buf: Bytes) -> Option<OffsetKey> {
    if buf.remaining() < 2 {
        return None;
    }
    match buf.get_i16() {
        0 | OFFSET_KEY_VERSION => {
            let group = get_string(&mut buf)?;
            let topic = get_string(&mut buf)?;
            if buf.remaining() < 4 {
                return None;
            }
            Some(OffsetKey {
                group,
                topic,
                partition: buf.get_i32(),
            })
        }
        GROUP_METADATA_KEY_VERSION => None,
        _ => None,
    }
}

/// Offset-commit values of versions 0 to 3.
pub fn decode_value(mut buf: Bytes) -> Option<CommittedOffset> {
    if buf.remaining() < 2 {
        return None;
    }
    let version = buf.get_i16();
    if buf.remaining() < 8 {
        return None;
    }
    let offset = buf.get_i64();
    let leader_epoch = if version >= 3 {
        if buf.remaining() < 4 {
            return None;
        }
        buf.get_i32()
    } else {
        -1
    };
    let metadata = get_string(&mut buf)?;
    if buf.remaining() < 8 {
        return None;
    }
    let commit_timestamp = buf.get_i64();
    Some(CommittedOffset {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp,
    })
}

/// Kafka's group → `__consumer_offsets` partition mapping: the Java `String.hashCode`
/// of the group id (over UTF-16 code units), sign bit cleared, modulo the partitions.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let hash = group
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    (hash & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_value_round_trip() {
        let key = OffsetKey {
            group: "g".into(),
            topic: "orders".into(),
            partition: 7,
        };
        assert_eq!(decode_key(encode_key(&key)), Some(key));
        let v = CommittedOffset {
            offset: 42,
            leader_epoch: 0,
            metadata: "m".into(),
            commit_timestamp: 1_700_000_000_000,
        };
        assert_eq!(decode_value(encode_value(&v)), Some(v));
        assert_eq!(decode_key(Bytes::from_static(&[0, 2, 0, 1, b'g'])), None);
        assert_eq!(decode_value(Bytes::from_static(&[0, 3, 1])), None);
    }

    #[test]
    fn partition_matches_kafka() {
        // Java: "my-group".hashCode() == -1906497762; Kafka clears the sign bit: 36.
        assert_eq!(partition_for("my-group", 50), 36);
        // "test-consumer-group".hashCode() == -1793216381 -> 17.
        assert_eq!(partition_for("test-consumer-group", 50), 17);
        assert_eq!(partition_for("", 50), 0);
    }
}
