//! The `range` assignor: per topic, its subscribers (sorted by member id) get
//! consecutive ranges of partitions, the first ones one more when the count does not
//! divide. Members subscribed to the same topics get the same partition numbers of each
//! (co-partitioning), as Kafka's range assignor gives them.

use std::collections::BTreeMap;

use super::{MemberSpec, Targets};
use crate::group::consumer::member::{Assignment, TopicId};

pub fn assign(members: &[MemberSpec], topics: &BTreeMap<TopicId, i32>) -> Targets {
    let mut out: Targets = members
        .iter()
        .map(|m| (m.member_id.to_string(), Assignment::new()))
        .collect();
    for (topic, &count) in topics {
        let mut subscribers: Vec<&str> = members
            .iter()
            .filter(|m| m.topics.contains(topic))
            .map(|m| m.member_id)
            .collect();
        if subscribers.is_empty() || count <= 0 {
            continue;
        }
        subscribers.sort_unstable();
        let k = subscribers.len() as i32;
        let (quota, extra) = (count / k, count % k);
        let mut start = 0;
        for (i, id) in subscribers.iter().enumerate() {
            let len = quota + i32::from((i as i32) < extra);
            if len > 0 {
                if let Some(a) = out.get_mut(*id) {
                    a.insert(*topic, (start..start + len).collect());
                }
            }
            start += len;
        }
        debug_assert_eq!(start, count);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn ranges_are_co_partitioned() {
        let (t1, t2) = ([1; 16], [2; 16]);
        let topics = BTreeMap::from([(t1, 5), (t2, 5)]);
        let empty = Assignment::new();
        let both: BTreeSet<TopicId> = [t1, t2].into();
        let members = [
            MemberSpec {
                member_id: "b",
                topics: both.clone(),
                previous: &empty,
            },
            MemberSpec {
                member_id: "a",
                topics: both,
                previous: &empty,
            },
        ];
        let out = assign(&members, &topics);
        let a: Assignment = [(t1, [0, 1, 2].into()), (t2, [0, 1, 2].into())].into();
        let b: Assignment = [(t1, [3, 4].into()), (t2, [3, 4].into())].into();
        assert_eq!(out["a"], a);
        assert_eq!(out["b"], b);
        assert!(super::super::covers_exactly_once(&members, &topics, &out));
    }

    #[test]
    fn only_subscribers_get_a_topic() {
        let (t1, t2) = ([1; 16], [2; 16]);
        let topics = BTreeMap::from([(t1, 2), (t2, 3)]);
        let empty = Assignment::new();
        let members = [
            MemberSpec {
                member_id: "a",
                topics: [t1].into(),
                previous: &empty,
            },
            MemberSpec {
                member_id: "b",
                topics: [t1, t2].into(),
                previous: &empty,
            },
        ];
        let out = assign(&members, &topics);
        assert_eq!(out["a"], Assignment::from([(t1, [0].into())]));
        assert_eq!(
            out["b"],
            Assignment::from([(t1, [1].into()), (t2, [0, 1, 2].into())])
        );
    }
}
