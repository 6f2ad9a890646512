//! Reconciliation of one member toward its target assignment, with Kafka's rules
//! (`CurrentAssignmentBuilder`): a member first gives up the partitions it must lose
//! (keeping its epoch: UNREVOKED_PARTITIONS); only then does it move to the target epoch
//! and receive new partitions, and a partition still owned by another member is held
//! back until that member has released it (UNRELEASED_PARTITIONS).

use super::member::{insert, Assignment, ConsumerMember, MemberState, TopicId};

/// The target the member reconciles toward.
pub struct Target<'a> {
    pub epoch: i32,
    pub assignment: &'a Assignment,
}

/// The member's next state. `owned_elsewhere(topic, partition)` tells whether another
/// member still owns a partition; `reported` is what the member said it owns in its
/// heartbeat (`None` when it did not say).
pub fn reconcile(
    member: &ConsumerMember,
    target: &Target,
    owned_elsewhere: impl Fn(&TopicId, i32) -> bool,
    reported: Option<&Assignment>,
) -> ConsumerMember {
    match member.state {
        MemberState::Stable if member.member_epoch == target.epoch => member.clone(),
        MemberState::UnrevokedPartitions if still_owns(&member.pending_revocation, reported) => {
            member.clone()
        }
        _ => next_assignment(member, target, owned_elsewhere, reported),
    }
}

/// Whether the member still holds any of `revoked` (Kafka's `ownsRevokedPartitions`). A
/// heartbeat that does not report its partitions counts as still holding them.
fn still_owns(revoked: &Assignment, reported: Option<&Assignment>) -> bool {
    let Some(reported) = reported else {
        return true;
    };
    revoked.iter().any(|(topic, parts)| {
        reported
            .get(topic)
            .is_some_and(|owned| parts.iter().any(|p| owned.contains(p)))
    })
}

fn next_assignment(
    member: &ConsumerMember,
    target: &Target,
    owned_elsewhere: impl Fn(&TopicId, i32) -> bool,
    reported: Option<&Assignment>,
) -> ConsumerMember {
    let mut kept = Assignment::new();
    let mut revoke = Assignment::new();
    let mut newly = Assignment::new();
    let mut unreleased = false;
    let empty = Default::default();
    let topics: std::collections::BTreeSet<&TopicId> = member
        .assigned
        .keys()
        .chain(target.assignment.keys())
        .collect();
    for topic in topics {
        let current = member.assigned.get(topic).unwrap_or(&empty);
        let wanted = target.assignment.get(topic).unwrap_or(&empty);
        for &p in current {
            if wanted.contains(&p) {
                insert(&mut kept, *topic, p);
            } else {
                insert(&mut revoke, *topic, p);
            }
        }
        for &p in wanted.difference(current) {
            if owned_elsewhere(topic, p) {
                unreleased = true;
            } else {
                insert(&mut newly, *topic, p);
            }
        }
    }
    let mut next = member.clone();
    if !revoke.is_empty() && still_owns(&revoke, reported) {
        // Revocation first: the member keeps its epoch until it has let go (a member
        // that reports it no longer holds them, as an eager classic member rejoining,
        // moves on at once).
        next.state = MemberState::UnrevokedPartitions;
        next.previous_member_epoch = member.member_epoch;
        next.assigned = kept;
        next.pending_revocation = revoke;
        next.assignment_epochs = epochs_of(member, &next.assigned, member.member_epoch);
        return next;
    }
    for (topic, parts) in newly {
        kept.entry(topic).or_default().extend(parts);
    }
    next.state = if unreleased {
        MemberState::UnreleasedPartitions
    } else {
        MemberState::Stable
    };
    next.previous_member_epoch = member.member_epoch;
    next.member_epoch = target.epoch;
    next.assigned = kept;
    next.pending_revocation = Assignment::new();
    next.assignment_epochs = epochs_of(member, &next.assigned, target.epoch);
    next
}

/// Assignment epochs of `assigned`: what the member held keeps its epoch, the rest is
/// assigned at `epoch`.
fn epochs_of(
    member: &ConsumerMember,
    assigned: &Assignment,
    epoch: i32,
) -> std::collections::BTreeMap<(TopicId, i32), i32> {
    assigned
        .iter()
        .flat_map(|(t, parts)| parts.iter().map(move |p| (*t, *p)))
        .map(|(t, p)| ((t, p), member.assignment_epoch(&t, p).unwrap_or(epoch)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: TopicId = [1; 16];
    const T2: TopicId = [2; 16];

    fn a(entries: &[(TopicId, &[i32])]) -> Assignment {
        entries
            .iter()
            .map(|(t, p)| (*t, p.iter().copied().collect()))
            .collect()
    }

    fn member(epoch: i32, assigned: Assignment) -> ConsumerMember {
        let mut m = ConsumerMember::new("m");
        m.member_epoch = epoch;
        m.previous_member_epoch = epoch - 1;
        m.assigned = assigned;
        m
    }

    #[test]
    fn stable_member_at_target_epoch_is_unchanged() {
        let m = member(3, a(&[(T1, &[0, 1])]));
        let target = a(&[(T1, &[0])]);
        let t = Target {
            epoch: 3,
            assignment: &target,
        };
        assert_eq!(reconcile(&m, &t, |_, _| false, None), m);
    }

    #[test]
    fn free_partitions_are_assigned_at_the_new_epoch() {
        let m = member(3, a(&[(T1, &[0])]));
        let target = a(&[(T1, &[0, 1]), (T2, &[4])]);
        let t = Target {
            epoch: 5,
            assignment: &target,
        };
        let n = reconcile(&m, &t, |_, _| false, None);
        assert_eq!(n.state, MemberState::Stable);
        assert_eq!((n.member_epoch, n.previous_member_epoch), (5, 3));
        assert_eq!(n.assigned, target);
        assert!(n.pending_revocation.is_empty());
    }

    #[test]
    fn revocation_comes_before_assignment() {
        let m = member(3, a(&[(T1, &[0, 1])]));
        let target = a(&[(T1, &[0]), (T2, &[0])]);
        let t = Target {
            epoch: 4,
            assignment: &target,
        };
        let n = reconcile(&m, &t, |_, _| false, None);
        assert_eq!(n.state, MemberState::UnrevokedPartitions);
        assert_eq!(n.member_epoch, 3, "the epoch waits for the revocation");
        assert_eq!(n.assigned, a(&[(T1, &[0])]), "nothing new before revoking");
        assert_eq!(n.pending_revocation, a(&[(T1, &[1])]));
        // Still reporting the revoked partition (or not reporting): no progress.
        let still = a(&[(T1, &[0, 1])]);
        assert_eq!(reconcile(&n, &t, |_, _| false, Some(&still)), n);
        assert_eq!(reconcile(&n, &t, |_, _| false, None), n);
        // Once it reports it let go, it moves on to the target.
        let done = a(&[(T1, &[0])]);
        let s = reconcile(&n, &t, |_, _| false, Some(&done));
        assert_eq!(s.state, MemberState::Stable);
        assert_eq!(s.member_epoch, 4);
        assert_eq!(s.assigned, target);
        assert!(s.pending_revocation.is_empty());
        // What it kept dates from epoch 3, what it got from epoch 4.
        assert_eq!(s.assignment_epoch(&T1, 0), Some(3));
        assert_eq!(s.assignment_epoch(&T2, 0), Some(4));
        assert_eq!(s.assignment_epoch(&T1, 1), None);
        // A member that already reports none of the partitions to revoke (an eager classic
        // member rejoining) skips the revocation step.
        let none = a(&[(T1, &[0])]);
        let direct = reconcile(&m, &t, |_, _| false, Some(&none));
        assert_eq!(
            (direct.state, direct.member_epoch),
            (MemberState::Stable, 4)
        );
        assert_eq!(direct.assigned, target);
    }

    #[test]
    fn partitions_owned_elsewhere_wait_until_released() {
        let m = member(3, a(&[(T1, &[0])]));
        let target = a(&[(T1, &[0, 1, 2])]);
        let t = Target {
            epoch: 4,
            assignment: &target,
        };
        let busy = |_: &TopicId, p: i32| p == 2;
        let n = reconcile(&m, &t, busy, None);
        assert_eq!(n.state, MemberState::UnreleasedPartitions);
        assert_eq!(n.member_epoch, 4);
        assert_eq!(n.assigned, a(&[(T1, &[0, 1])]));
        // Still busy: unchanged but for the previous epoch.
        let again = reconcile(&n, &t, busy, None);
        assert_eq!(again.assigned, n.assigned);
        assert_eq!(again.state, MemberState::UnreleasedPartitions);
        // Released: the member gets it and is stable.
        let s = reconcile(&n, &t, |_, _| false, None);
        assert_eq!(s.state, MemberState::Stable);
        assert_eq!(s.assigned, target);
    }
}
