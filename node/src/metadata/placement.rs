//! Where new partitions' replicas go: spread over the live brokers, rack-aware when
//! brokers set `broker_rack`, with Kafka's round-robin assignment (the one its
//! `AdminUtils` documents): the first replicas of consecutive partitions go to
//! consecutive brokers from a random start, the followers are shifted by a random
//! amount that grows every time the partitions wrap around the brokers, and with racks
//! the brokers are ordered so that racks alternate and no rack holds a second replica
//! of a partition before every rack holds one.
//!
//! Which shard of a broker owns a partition is a separate, local choice
//! (`metadata::image::slot_of`).

use std::collections::{BTreeMap, HashSet};

/// A broker that can take replicas: its id and rack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: i32,
    pub rack: Option<String>,
}

/// The random choices of one placement (fixed in tests).
#[derive(Debug, Clone, Copy)]
pub struct Start {
    /// Index of the broker that gets partition 0's first replica.
    pub index: usize,
    /// Follower shift before any wrap-around.
    pub shift: usize,
}

impl Start {
    pub fn random(brokers: usize) -> Self {
        let n = brokers.max(1);
        let r = crate::random_id::uuid_v4();
        let a = u64::from_be_bytes(r[0..8].try_into().expect("8 bytes"));
        let b = u64::from_be_bytes(r[8..16].try_into().expect("8 bytes"));
        Start {
            index: (a % n as u64) as usize,
            shift: (b % n as u64) as usize,
        }
    }
}

/// Replica lists for partitions `first..first + count` with `replication_factor`
/// replicas each, preferred leader first.
pub fn place(
    candidates: &[Candidate],
    first: i32,
    count: i32,
    replication_factor: usize,
    start: Start,
) -> Result<Vec<Vec<i32>>, String> {
    let n = candidates.len();
    if replication_factor == 0 {
        return Err("Replication factor must be larger than 0.".into());
    }
    if replication_factor > n {
        return Err(format!(
            "Unable to replicate the partition {replication_factor} time(s): The target \
             replication factor of {replication_factor} cannot be reached because only {n} \
             broker(s) are registered."
        ));
    }
    let racked = candidates.iter().any(|c| c.rack.is_some());
    if racked && candidates.iter().any(|c| c.rack.is_none()) {
        return Err(
            "Not all brokers have rack information for replica rack aware assignment.".into(),
        );
    }
    let ordered = if racked {
        rack_alternating(candidates)
    } else {
        let mut c = candidates.to_vec();
        c.sort_by_key(|c| c.id);
        c
    };
    let racks = ordered
        .iter()
        .filter_map(|c| c.rack.as_deref())
        .collect::<HashSet<_>>()
        .len();
    let mut shift = start.shift;
    let mut out = Vec::with_capacity(count.max(0) as usize);
    for p in first..first + count {
        let p = p as usize;
        if p > 0 && p.is_multiple_of(n) {
            shift += 1;
        }
        let lead = (p + start.index) % n;
        let mut replicas = vec![ordered[lead].id];
        if racked {
            let mut used_racks: HashSet<&str> = HashSet::new();
            used_racks.insert(ordered[lead].rack.as_deref().unwrap_or_default());
            let mut k = 0;
            while replicas.len() < replication_factor {
                // Every other broker is looked at within n - 1 steps, and one always
                // fits (an unused rack's broker, or any unused broker once all racks are).
                assert!(k < 2 * n, "rack-aware placement found no broker");
                let c = &ordered[follower_index(lead, shift, k, n)];
                k += 1;
                let rack = c.rack.as_deref().unwrap_or_default();
                // A rack takes a second replica only once every rack has one.
                let rack_ok = !used_racks.contains(rack) || used_racks.len() == racks;
                if replicas.contains(&c.id) || !rack_ok {
                    continue;
                }
                replicas.push(c.id);
                used_racks.insert(rack);
            }
        } else {
            for j in 0..replication_factor - 1 {
                replicas.push(ordered[follower_index(lead, shift, j, n)].id);
            }
        }
        debug_assert_eq!(
            replicas.iter().collect::<HashSet<_>>().len(),
            replicas.len(),
            "a partition's replicas are distinct brokers"
        );
        out.push(replicas);
    }
    Ok(out)
}

/// The broker `j` steps after the first replica at `lead`, never `lead` itself.
fn follower_index(lead: usize, shift: usize, j: usize, n: usize) -> usize {
    if n == 1 {
        return lead;
    }
    (lead + 1 + (shift + j) % (n - 1)) % n
}

/// Brokers ordered so that racks alternate: the first broker of each rack (racks and
/// brokers in id order), then the second of each, and so on.
fn rack_alternating(candidates: &[Candidate]) -> Vec<Candidate> {
    let mut by_rack: BTreeMap<&str, Vec<&Candidate>> = BTreeMap::new();
    for c in candidates {
        by_rack
            .entry(c.rack.as_deref().unwrap_or_default())
            .or_default()
            .push(c);
    }
    for list in by_rack.values_mut() {
        list.sort_by_key(|c| c.id);
    }
    let deepest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    let mut out = Vec::with_capacity(candidates.len());
    for i in 0..deepest {
        for list in by_rack.values() {
            if let Some(c) = list.get(i) {
                out.push((*c).clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(specs: &[(i32, Option<&str>)]) -> Vec<Candidate> {
        specs
            .iter()
            .map(|(id, rack)| Candidate {
                id: *id,
                rack: rack.map(str::to_string),
            })
            .collect()
    }

    const FIXED: Start = Start { index: 0, shift: 0 };

    #[test]
    fn leaders_go_round_robin_over_the_brokers() {
        let b = brokers(&[(2, None), (0, None), (1, None)]);
        let placed = place(&b, 0, 6, 1, FIXED).unwrap();
        assert_eq!(placed, [[0], [1], [2], [0], [1], [2]]);
        let from_start = place(&b, 0, 3, 1, Start { index: 1, shift: 0 }).unwrap();
        assert_eq!(from_start, [[1], [2], [0]]);
    }

    #[test]
    fn followers_are_distinct_and_shift_after_each_wrap() {
        let b = brokers(&[(0, None), (1, None), (2, None), (3, None)]);
        let placed = place(&b, 0, 8, 3, FIXED).unwrap();
        assert_eq!(placed[0], [0, 1, 2]);
        assert_eq!(placed[1], [1, 2, 3]);
        // Past the first wrap the followers shift by one.
        assert_eq!(placed[4], [0, 2, 3]);
        for r in &placed {
            assert_eq!(r.iter().collect::<HashSet<_>>().len(), 3);
        }
        // Every broker leads the same number of partitions.
        for id in 0..4 {
            assert_eq!(placed.iter().filter(|r| r[0] == id).count(), 2);
        }
    }

    #[test]
    fn added_partitions_continue_the_sequence() {
        let b = brokers(&[(0, None), (1, None), (2, None)]);
        let all = place(&b, 0, 5, 2, FIXED).unwrap();
        let tail = place(&b, 3, 2, 2, FIXED).unwrap();
        assert_eq!(&all[3..], &tail[..]);
    }

    #[test]
    fn racks_alternate_and_each_partition_spans_racks() {
        let b = brokers(&[
            (0, Some("a")),
            (1, Some("a")),
            (2, Some("b")),
            (3, Some("b")),
            (4, Some("c")),
            (5, Some("c")),
        ]);
        let rack = |id: i32| b.iter().find(|c| c.id == id).unwrap().rack.clone();
        let placed = place(&b, 0, 12, 3, Start { index: 2, shift: 1 }).unwrap();
        for replicas in &placed {
            let racks: HashSet<_> = replicas.iter().map(|&r| rack(r)).collect();
            assert_eq!(racks.len(), 3, "{replicas:?} spans every rack");
        }
        let order: Vec<i32> = rack_alternating(&b).iter().map(|c| c.id).collect();
        assert_eq!(order, [0, 2, 4, 1, 3, 5]);
    }

    #[test]
    fn more_replicas_than_racks_fill_racks_evenly_first() {
        let b = brokers(&[
            (0, Some("a")),
            (1, Some("a")),
            (2, Some("b")),
            (3, Some("b")),
        ]);
        for replicas in place(&b, 0, 8, 3, FIXED).unwrap() {
            let in_a = replicas.iter().filter(|&&r| r < 2).count();
            assert!((1..=2).contains(&in_a), "{replicas:?}");
        }
    }

    #[test]
    fn refusals() {
        let b = brokers(&[(0, None)]);
        let e = place(&b, 0, 1, 3, FIXED).unwrap_err();
        assert!(e.contains("only 1 broker(s) are registered"), "{e}");
        assert!(place(&[], 0, 1, 1, FIXED).is_err());
        let mixed = brokers(&[(0, Some("a")), (1, None)]);
        assert!(place(&mixed, 0, 1, 1, FIXED)
            .unwrap_err()
            .contains("rack information"));
    }
}
