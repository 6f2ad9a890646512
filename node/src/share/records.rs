//! The records of `__share_group_state` in Kafka 4.4's formats (the generated
//! `spate_net::share_records`), so that Kafka's tools read them and a Kafka broker could
//! load them: the key is the record type (the definition's `apiKey`: 0 ShareSnapshot, 1
//! ShareUpdate) then the key fields (group id, topic id, partition); the value is its
//! version (0) then the fields. A ShareSnapshot key with a null value deletes the state.

use bytes::{Buf, Bytes, BytesMut};
use spate_net::share_records as sr;
use spate_net::{Encoder, Message};

use super::persister::{ShareKey, StateBatch};
use super::state::{Offsets, Record, Update};

const SNAPSHOT: i16 = 0;
const UPDATE: i16 = 1;
const VALUE_VERSION: i16 = 0;

fn encoded<M: Message>(prefix: i16, m: &M) -> Bytes {
    let mut e = Encoder::new();
    e.put_i16(prefix);
    m.encode(&mut e, 0);
    let chunks = e.finish();
    let mut out = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
    for c in chunks {
        out.extend_from_slice(&c);
    }
    out.freeze()
}

fn snapshot_batches(batches: &[StateBatch]) -> Vec<sr::share_snapshot_value::StateBatch> {
    batches
        .iter()
        .map(|b| sr::share_snapshot_value::StateBatch {
            first_offset: b.first_offset,
            last_offset: b.last_offset,
            delivery_state: b.delivery_state,
            delivery_count: b.delivery_count,
        })
        .collect()
}

fn update_batches(batches: &[StateBatch]) -> Vec<sr::share_update_value::StateBatch> {
    batches
        .iter()
        .map(|b| sr::share_update_value::StateBatch {
            first_offset: b.first_offset,
            last_offset: b.last_offset,
            delivery_state: b.delivery_state,
            delivery_count: b.delivery_count,
        })
        .collect()
}

/// The record's key and value (`None`: a tombstone).
pub fn encode(record: &Record) -> (Bytes, Option<Bytes>) {
    let k = record.key();
    let snapshot_key = || {
        encoded(
            SNAPSHOT,
            &sr::ShareSnapshotKey {
                group_id: k.group_id.clone(),
                topic_id: k.topic_id,
                partition: k.partition,
            },
        )
    };
    match record {
        Record::Tombstone(_) => (snapshot_key(), None),
        Record::Snapshot(_, o) => (
            snapshot_key(),
            Some(encoded(
                VALUE_VERSION,
                &sr::ShareSnapshotValue {
                    snapshot_epoch: o.snapshot_epoch,
                    state_epoch: o.state_epoch,
                    leader_epoch: o.leader_epoch,
                    start_offset: o.start_offset,
                    delivery_complete_count: o.delivery_complete_count,
                    create_timestamp: o.create_ms,
                    write_timestamp: o.write_ms,
                    state_batches: snapshot_batches(&o.batches),
                },
            )),
        ),
        Record::Update(_, u) => (
            encoded(
                UPDATE,
                &sr::ShareUpdateKey {
                    group_id: k.group_id.clone(),
                    topic_id: k.topic_id,
                    partition: k.partition,
                },
            ),
            Some(encoded(
                VALUE_VERSION,
                &sr::ShareUpdateValue {
                    snapshot_epoch: u.snapshot_epoch,
                    leader_epoch: u.leader_epoch,
                    start_offset: u.start_offset,
                    delivery_complete_count: u.delivery_complete_count,
                    state_batches: update_batches(&u.batches),
                },
            )),
        ),
    }
}

/// A record read back, or `None` for other record types, other versions and garbage
/// (skipped, as Kafka skips unknown record types); a ShareUpdate without a value too.
pub fn decode(mut key: Bytes, value: Option<Bytes>) -> Option<Record> {
    if key.remaining() < 2 {
        return None;
    }
    let kind = key.get_i16();
    let mut value = match value {
        Some(mut v) if v.remaining() >= 2 => {
            if v.get_i16() != VALUE_VERSION {
                return None;
            }
            Some(v)
        }
        Some(_) => return None,
        None => None,
    };
    match kind {
        SNAPSHOT => {
            let k = sr::ShareSnapshotKey::decode(&mut key, 0).ok()?;
            let key = ShareKey {
                group_id: k.group_id,
                topic_id: k.topic_id,
                partition: k.partition,
            };
            let Some(v) = value.as_mut() else {
                return Some(Record::Tombstone(key));
            };
            let v = sr::ShareSnapshotValue::decode(v, 0).ok()?;
            Some(Record::Snapshot(
                key,
                Offsets {
                    snapshot_epoch: v.snapshot_epoch,
                    state_epoch: v.state_epoch,
                    leader_epoch: v.leader_epoch,
                    start_offset: v.start_offset,
                    delivery_complete_count: v.delivery_complete_count,
                    batches: v
                        .state_batches
                        .iter()
                        .map(|b| StateBatch {
                            first_offset: b.first_offset,
                            last_offset: b.last_offset,
                            delivery_state: b.delivery_state,
                            delivery_count: b.delivery_count,
                        })
                        .collect(),
                    create_ms: v.create_timestamp,
                    write_ms: v.write_timestamp,
                },
            ))
        }
        UPDATE => {
            let k = sr::ShareUpdateKey::decode(&mut key, 0).ok()?;
            let v = sr::ShareUpdateValue::decode(value.as_mut()?, 0).ok()?;
            Some(Record::Update(
                ShareKey {
                    group_id: k.group_id,
                    topic_id: k.topic_id,
                    partition: k.partition,
                },
                Update {
                    snapshot_epoch: v.snapshot_epoch,
                    leader_epoch: v.leader_epoch,
                    start_offset: v.start_offset,
                    delivery_complete_count: v.delivery_complete_count,
                    batches: v
                        .state_batches
                        .iter()
                        .map(|b| StateBatch {
                            first_offset: b.first_offset,
                            last_offset: b.last_offset,
                            delivery_state: b.delivery_state,
                            delivery_count: b.delivery_count,
                        })
                        .collect(),
                },
            ))
        }
        _ => None,
    }
}

/// Kafka's share-partition key → `__share_group_state` partition mapping: the coordinator
/// key `groupId:topicId:partition` (the topic id in Kafka's base64 form) hashed as the
/// transaction coordinator hashes transactional ids (`Utils.abs` of the Java hash).
pub fn partition_for(key: &ShareKey, partitions: i32) -> i32 {
    crate::txn::partition_for(&coordinator_key(key), partitions)
}

/// Kafka's `SharePartitionKey.asCoordinatorKey()`.
pub fn coordinator_key(key: &ShareKey) -> String {
    format!(
        "{}:{}:{}",
        key.group_id,
        crate::random_id::base64_of(key.topic_id.0),
        key.partition
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use spate_net::Uuid;

    fn key() -> ShareKey {
        ShareKey {
            group_id: "grp".into(),
            topic_id: Uuid([1; 16]),
            partition: 3,
        }
    }

    #[test]
    fn records_round_trip() {
        let batches = vec![StateBatch {
            first_offset: 4,
            last_offset: 9,
            delivery_state: 2,
            delivery_count: 1,
        }];
        let records = [
            Record::Tombstone(key()),
            Record::Snapshot(
                key(),
                Offsets {
                    snapshot_epoch: 2,
                    state_epoch: 1,
                    leader_epoch: 5,
                    start_offset: 4,
                    delivery_complete_count: -1,
                    batches: batches.clone(),
                    create_ms: 10,
                    write_ms: 11,
                },
            ),
            Record::Update(
                key(),
                Update {
                    snapshot_epoch: 2,
                    leader_epoch: 5,
                    start_offset: -1,
                    delivery_complete_count: 3,
                    batches,
                },
            ),
        ];
        for r in records {
            let (k, v) = encode(&r);
            assert_eq!(decode(k, v), Some(r));
        }
        // Unknown record types and value versions are skipped.
        assert_eq!(decode(Bytes::from_static(&[0, 9, 0]), None), None);
        let (k, _) = encode(&Record::Tombstone(key()));
        assert_eq!(decode(k, Some(Bytes::from_static(&[0, 1, 0]))), None);
    }

    #[test]
    fn keys_hash_as_kafka_coordinator_keys() {
        let k = ShareKey {
            group_id: "g1".into(),
            topic_id: Uuid([0; 16]),
            partition: 0,
        };
        // Kafka prints the zero topic id as "AAAAAAAAAAAAAAAAAAAAAA".
        assert_eq!(coordinator_key(&k), "g1:AAAAAAAAAAAAAAAAAAAAAA:0");
        // Java's "g1:AAAAAAAAAAAAAAAAAAAAAA:0".hashCode() is -1506055834; abs mod 50.
        assert_eq!(partition_for(&k, 50), 34);
    }
}
