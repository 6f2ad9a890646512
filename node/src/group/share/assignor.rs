//! Kafka's share-group assignor, `simple` (KIP-932): several members may share a
//! partition. Every assignable partition goes to ⌈M/P⌉ members (M members, P partitions;
//! so with M ≤ P each partition has one member), and the P·⌈M/P⌉ places are split over
//! the members as evenly as integers allow; within that, members keep what they had
//! (stickiness). Balance comes before stickiness.
//!
//! The steps are Kafka's: drop partitions no longer subscribed or assignable, revoke
//! partitions shared by more members than desired (overfilled members first), revoke
//! from members that still have too many, then hand out what is missing by cycling over
//! the members that have too few. When every member subscribes to the same topics this
//! runs once over all their partitions; otherwise once per topic, over its subscribers.
//! Kafka iterates Java hash maps, so the order in which it picks is the maps' order;
//! Spate iterates members by id and partitions by (topic id, partition), which is
//! deterministic, and so may pick other (equally balanced) partitions than Kafka.

use std::collections::{BTreeMap, BTreeSet};

use crate::group::consumer::member::{Assignment, TopicId};

/// One member as the assignor sees it.
pub struct MemberSpec<'a> {
    /// Subscribed topics that exist.
    pub topics: BTreeSet<TopicId>,
    /// Its current target assignment.
    pub current: &'a Assignment,
}

/// The new target assignment of every member. `assignable`: per topic, the partitions
/// whose share state is initialized (only those are assigned).
pub fn assign(
    members: &BTreeMap<String, MemberSpec<'_>>,
    assignable: &BTreeMap<TopicId, BTreeSet<i32>>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = members
        .keys()
        .map(|id| (id.clone(), Assignment::new()))
        .collect();
    let homogeneous = members
        .values()
        .zip(members.values().skip(1))
        .all(|(a, b)| a.topics == b.topics);
    let groups: Vec<(Vec<&String>, BTreeSet<TopicId>)> = if homogeneous {
        let topics = members
            .values()
            .next()
            .map(|m| m.topics.clone())
            .unwrap_or_default();
        vec![(members.keys().collect(), topics)]
    } else {
        let all: BTreeSet<TopicId> = members.values().flat_map(|m| m.topics.clone()).collect();
        all.into_iter()
            .map(|t| {
                let subscribers = members
                    .iter()
                    .filter(|(_, m)| m.topics.contains(&t))
                    .map(|(id, _)| id)
                    .collect();
                (subscribers, BTreeSet::from([t]))
            })
            .collect()
    };
    for (ids, topics) in groups {
        let partitions: Vec<(TopicId, i32)> = topics
            .iter()
            .filter_map(|t| assignable.get(t).map(|ps| (t, ps)))
            .flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p)))
            .collect();
        let current: Vec<BTreeSet<(TopicId, i32)>> = ids
            .iter()
            .map(|id| {
                members[*id]
                    .current
                    .iter()
                    .filter(|(t, _)| topics.contains(*t))
                    .flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p)))
                    .collect()
            })
            .collect();
        for (i, parts) in balance(&partitions, &current).into_iter().enumerate() {
            let a = out.entry(ids[i].clone()).or_default();
            for (t, p) in parts {
                a.entry(t).or_default().insert(p);
            }
        }
    }
    out
}

/// How many partitions each of `members` members should get when `partitions`
/// partitions are each shared by `sharing` members: the total split as evenly as
/// integers allow, the larger parts first where it does not divide (Kafka's
/// ceil(k·x) − ceil((k−1)·x) with x = total/members, in integers).
fn desired_counts(members: usize, partitions: usize, sharing: usize) -> Vec<usize> {
    let total = sharing * partitions;
    let ceil = |k: usize| (total * k).div_ceil(members);
    (0..members).map(|k| ceil(k + 1) - ceil(k)).collect()
}

/// The homogeneous case over one set of partitions: the new partitions of each member,
/// in the order of `current`.
fn balance(
    partitions: &[(TopicId, i32)],
    current: &[BTreeSet<(TopicId, i32)>],
) -> Vec<BTreeSet<(TopicId, i32)>> {
    let n = current.len();
    if n == 0 {
        return Vec::new();
    }
    if partitions.is_empty() {
        return vec![BTreeSet::new(); n];
    }
    let sharing = n.div_ceil(partitions.len());
    let desired = desired_counts(n, partitions.len(), sharing);
    let valid: BTreeSet<&(TopicId, i32)> = partitions.iter().collect();
    // 1. Keep only what is still assignable.
    let mut by_member: Vec<BTreeSet<(TopicId, i32)>> = current
        .iter()
        .map(|c| c.iter().filter(|p| valid.contains(p)).copied().collect())
        .collect();
    let mut by_partition: BTreeMap<(TopicId, i32), BTreeSet<usize>> =
        partitions.iter().map(|p| (*p, BTreeSet::new())).collect();
    for (m, ps) in by_member.iter().enumerate() {
        for p in ps {
            by_partition.entry(*p).or_default().insert(m);
        }
    }
    let overfilled: BTreeSet<usize> = (0..n)
        .filter(|m| by_member[*m].len() > desired[*m])
        .collect();
    // 2. Partitions shared by more members than desired: overfilled members give them up
    //    first, then the others.
    for (p, holders) in by_partition.iter_mut() {
        for pass_overfilled in [true, false] {
            let candidates: Vec<usize> = holders
                .iter()
                .copied()
                .filter(|m| overfilled.contains(m) == pass_overfilled)
                .collect();
            for m in candidates {
                if holders.len() <= sharing {
                    break;
                }
                holders.remove(&m);
                by_member[m].remove(p);
            }
        }
    }
    // 3. Members still over their count give up partitions.
    for m in 0..n {
        while by_member[m].len() > desired[m] {
            let Some(p) = by_member[m].iter().next_back().copied() else {
                break;
            };
            by_member[m].remove(&p);
            if let Some(h) = by_partition.get_mut(&p) {
                h.remove(&m);
            }
        }
    }
    // 4. Hand out what is missing, cycling over the members that have too few; a
    //    partition that no member with room can take (they all have it) stays short.
    let mut unfilled: Vec<usize> = (0..n)
        .filter(|m| by_member[*m].len() < desired[*m])
        .collect();
    let mut cursor = 0;
    for (p, holders) in by_partition.iter_mut() {
        let mut fruitless = 0;
        while holders.len() < sharing && !unfilled.is_empty() && fruitless < unfilled.len() {
            cursor %= unfilled.len();
            let m = unfilled[cursor];
            if holders.contains(&m) {
                cursor += 1;
                fruitless += 1;
                continue;
            }
            fruitless = 0;
            holders.insert(m);
            by_member[m].insert(*p);
            if by_member[m].len() >= desired[m] {
                unfilled.remove(cursor);
            } else {
                cursor += 1;
            }
        }
    }
    debug_assert!(by_partition.values().all(|h| h.len() <= sharing));
    by_member
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: TopicId = [1; 16];
    const T2: TopicId = [2; 16];

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("m{i}")).collect()
    }

    fn run(
        members: &[(String, BTreeSet<TopicId>, Assignment)],
        assignable: &BTreeMap<TopicId, BTreeSet<i32>>,
    ) -> BTreeMap<String, Assignment> {
        let specs = members
            .iter()
            .map(|(id, topics, current)| {
                (
                    id.clone(),
                    MemberSpec {
                        topics: topics.clone(),
                        current,
                    },
                )
            })
            .collect();
        assign(&specs, assignable)
    }

    fn count(a: &Assignment) -> usize {
        a.values().map(BTreeSet::len).sum()
    }

    fn sharing(out: &BTreeMap<String, Assignment>) -> BTreeMap<(TopicId, i32), usize> {
        let mut s = BTreeMap::new();
        for a in out.values() {
            for (t, ps) in a {
                for p in ps {
                    *s.entry((*t, *p)).or_insert(0) += 1;
                }
            }
        }
        s
    }

    #[test]
    fn desired_counts_match_kafkas_split() {
        // Kafka's examples: 3 members over 4 partitions: 2, 1, 1 would be ceil-based:
        // x = 4/3: ceil(4/3)=2, ceil(8/3)-2=1, 4-3=1.
        assert_eq!(desired_counts(3, 4, 1), vec![2, 1, 1]);
        assert_eq!(desired_counts(2, 6, 1), vec![3, 3]);
        // 5 members over 2 partitions: each partition shared by 3, 6 slots.
        assert_eq!(desired_counts(5, 2, 3), vec![2, 1, 1, 1, 1]);
    }

    #[test]
    fn fewer_members_than_partitions_each_partition_once() {
        let all = BTreeMap::from([(T1, (0..6).collect::<BTreeSet<i32>>())]);
        let members: Vec<_> = ids(4)
            .into_iter()
            .map(|id| (id, BTreeSet::from([T1]), Assignment::new()))
            .collect();
        let out = run(&members, &all);
        assert!(sharing(&out).values().all(|n| *n == 1));
        assert_eq!(sharing(&out).len(), 6);
        let counts: Vec<usize> = out.values().map(count).collect();
        assert_eq!(counts, vec![2, 1, 2, 1]);
    }

    #[test]
    fn more_members_than_partitions_share_them() {
        let all = BTreeMap::from([(T1, BTreeSet::from([0, 1]))]);
        let members: Vec<_> = ids(5)
            .into_iter()
            .map(|id| (id, BTreeSet::from([T1]), Assignment::new()))
            .collect();
        let out = run(&members, &all);
        // Each partition goes to ⌈5/2⌉ = 3 members; every member gets at least one.
        assert_eq!(
            sharing(&out).values().copied().collect::<Vec<_>>(),
            vec![3, 3]
        );
        assert!(out.values().all(|a| count(a) >= 1));
    }

    #[test]
    fn sticky_when_a_member_joins() {
        let all = BTreeMap::from([(T1, (0..4).collect::<BTreeSet<i32>>())]);
        let first = run(
            &[("a".into(), BTreeSet::from([T1]), Assignment::new())],
            &all,
        );
        assert_eq!(count(&first["a"]), 4);
        let out = run(
            &[
                ("a".into(), BTreeSet::from([T1]), first["a"].clone()),
                ("b".into(), BTreeSet::from([T1]), Assignment::new()),
            ],
            &all,
        );
        assert_eq!((count(&out["a"]), count(&out["b"])), (2, 2));
        // a kept two of its own, b got the other two.
        assert!(out["a"][&T1].is_subset(&first["a"][&T1]));
        assert!(out["a"][&T1].is_disjoint(&out["b"][&T1]));
        // The same inputs give the same answer.
        let again = run(
            &[
                ("a".into(), BTreeSet::from([T1]), first["a"].clone()),
                ("b".into(), BTreeSet::from([T1]), Assignment::new()),
            ],
            &all,
        );
        assert_eq!(out, again);
    }

    #[test]
    fn heterogeneous_by_topic_and_only_assignable_partitions() {
        // T2's partition 1 is not initialized yet: not assigned.
        let all = BTreeMap::from([(T1, BTreeSet::from([0, 1])), (T2, BTreeSet::from([0]))]);
        let out = run(
            &[
                ("a".into(), BTreeSet::from([T1]), Assignment::new()),
                ("b".into(), BTreeSet::from([T1, T2]), Assignment::new()),
            ],
            &all,
        );
        assert_eq!(out["a"].get(&T2), None);
        assert_eq!(out["b"][&T2], BTreeSet::from([0]));
        assert_eq!(
            count(&out["a"]) + out["b"].get(&T1).map_or(0, BTreeSet::len),
            2
        );
        // A member whose topic went away loses it.
        let out = run(&[("a".into(), BTreeSet::new(), out["b"].clone())], &all);
        assert!(out["a"].is_empty());
    }
}
