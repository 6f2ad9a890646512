//! The `uniform` assignor: balanced and sticky. Members keep what they had (where they
//! still subscribe to it), the partitions nobody keeps go to the least loaded subscriber,
//! and then partitions move from the most to the least loaded members while the
//! difference is more than one and the receiver subscribes to the topic. With identical
//! subscriptions this gives every member ⌊P/N⌋ or ⌈P/N⌉ partitions while moving as few
//! as balance allows; with different subscriptions it balances as far as they permit.

use std::collections::{BTreeMap, BTreeSet};

use super::{MemberSpec, Targets};
use crate::group::consumer::member::{insert, partition_count, Assignment, TopicId};

pub fn assign(members: &[MemberSpec], topics: &BTreeMap<TopicId, i32>) -> Targets {
    let mut out: Targets = BTreeMap::new();
    let mut taken: BTreeSet<(TopicId, i32)> = BTreeSet::new();
    // 1. Stickiness: keep what is still subscribed to and still exists.
    for m in members {
        let mut kept = Assignment::new();
        for (topic, parts) in m.previous {
            let Some(&count) = topics.get(topic) else {
                continue;
            };
            if !m.topics.contains(topic) {
                continue;
            }
            for &p in parts.iter().filter(|&&p| p < count) {
                if taken.insert((*topic, p)) {
                    insert(&mut kept, *topic, p);
                }
            }
        }
        out.insert(m.member_id.to_string(), kept);
    }
    // 2. Partitions nobody kept go to the least loaded subscriber (ties: member id).
    for (topic, &count) in topics {
        let subscribers: Vec<&str> = members
            .iter()
            .filter(|m| m.topics.contains(topic))
            .map(|m| m.member_id)
            .collect();
        if subscribers.is_empty() {
            continue;
        }
        for p in 0..count {
            if taken.contains(&(*topic, p)) {
                continue;
            }
            let least = subscribers
                .iter()
                .min_by_key(|id| (out.get(**id).map_or(0, partition_count), **id));
            if let Some(a) = least.and_then(|id| out.get_mut(*id)) {
                insert(a, *topic, p);
                taken.insert((*topic, p));
            }
        }
    }
    // 3. Balance. Every move lowers the sum of squared loads, so this ends; the bound
    // is a guard against a mistake, not a limit that is reached.
    let total: usize = out.values().map(partition_count).sum();
    for _ in 0..=total.saturating_mul(total) {
        if !move_one(members, &mut out) {
            break;
        }
    }
    out
}

/// Moves one partition from a member with more than one partition above another member
/// that subscribes to its topic; false when there is no such move.
fn move_one(members: &[MemberSpec], out: &mut Targets) -> bool {
    let load = |out: &Targets, id: &str| out.get(id).map_or(0, partition_count);
    let mut by_load: Vec<&MemberSpec> = members.iter().collect();
    by_load.sort_by_key(|m| (std::cmp::Reverse(load(out, m.member_id)), m.member_id));
    for giver in &by_load {
        for taker in by_load.iter().rev() {
            if load(out, giver.member_id) <= load(out, taker.member_id) + 1 {
                break;
            }
            let candidate = out.get(giver.member_id).and_then(|a| {
                a.iter()
                    .rev()
                    .filter(|(t, _)| taker.topics.contains(*t))
                    .find_map(|(t, parts)| parts.iter().next_back().map(|p| (*t, *p)))
            });
            if let Some((topic, p)) = candidate {
                if let Some(a) = out.get_mut(giver.member_id) {
                    if let Some(parts) = a.get_mut(&topic) {
                        parts.remove(&p);
                        if parts.is_empty() {
                            a.remove(&topic);
                        }
                    }
                }
                if let Some(a) = out.get_mut(taker.member_id) {
                    insert(a, topic, p);
                }
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::consumer::assignor::covers_exactly_once;

    const T1: TopicId = [1; 16];
    const T2: TopicId = [2; 16];

    fn loads(out: &Targets) -> Vec<usize> {
        out.values().map(partition_count).collect()
    }

    #[test]
    fn balanced_over_identical_subscriptions() {
        let topics = BTreeMap::from([(T1, 4), (T2, 3)]);
        let empty = Assignment::new();
        let members: Vec<MemberSpec> = ["a", "b", "c"]
            .iter()
            .map(|id| MemberSpec {
                member_id: id,
                topics: [T1, T2].into(),
                previous: &empty,
            })
            .collect();
        let out = assign(&members, &topics);
        assert_eq!(loads(&out), vec![3, 2, 2]);
        assert!(covers_exactly_once(&members, &topics, &out));
    }

    #[test]
    fn sticky_when_a_member_joins() {
        let topics = BTreeMap::from([(T1, 6)]);
        let all: Assignment = [(T1, (0..6).collect())].into();
        let empty = Assignment::new();
        let before = [MemberSpec {
            member_id: "a",
            topics: [T1].into(),
            previous: &all,
        }];
        assert_eq!(assign(&before, &topics)["a"], all);
        let after = [
            MemberSpec {
                member_id: "a",
                topics: [T1].into(),
                previous: &all,
            },
            MemberSpec {
                member_id: "b",
                topics: [T1].into(),
                previous: &empty,
            },
        ];
        let out = assign(&after, &topics);
        assert_eq!(loads(&out), vec![3, 3]);
        // "a" only gave partitions away, it got none that it did not have.
        assert!(out["a"][&T1].is_subset(&all[&T1]));
        assert!(covers_exactly_once(&after, &topics, &out));
        // A third member takes two, one from each: nobody else moves.
        let (pa, pb) = (out["a"].clone(), out["b"].clone());
        let third = [
            MemberSpec {
                member_id: "a",
                topics: [T1].into(),
                previous: &pa,
            },
            MemberSpec {
                member_id: "b",
                topics: [T1].into(),
                previous: &pb,
            },
            MemberSpec {
                member_id: "c",
                topics: [T1].into(),
                previous: &empty,
            },
        ];
        let out3 = assign(&third, &topics);
        assert_eq!(loads(&out3), vec![2, 2, 2]);
        assert!(out3["a"][&T1].is_subset(&pa[&T1]));
        assert!(out3["b"][&T1].is_subset(&pb[&T1]));
    }

    #[test]
    fn different_subscriptions_balance_where_they_can() {
        let topics = BTreeMap::from([(T1, 4), (T2, 2)]);
        let empty = Assignment::new();
        let members = [
            MemberSpec {
                member_id: "a",
                topics: [T1, T2].into(),
                previous: &empty,
            },
            MemberSpec {
                member_id: "b",
                topics: [T1].into(),
                previous: &empty,
            },
        ];
        let out = assign(&members, &topics);
        assert_eq!(loads(&out), vec![3, 3]);
        assert_eq!(out["a"][&T2].len(), 2, "only a subscribes to T2");
        assert!(covers_exactly_once(&members, &topics, &out));
    }
}
