//! A share group (KIP-932): its members, epochs, target assignment and which
//! share-partitions have durable state. The heartbeat changes it and returns the records
//! that make the change durable (written before the answer), and the share-partitions
//! whose state the coordinator must now initialize through the persister.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use spate_net::ErrorCode;

use super::assignor::{self, MemberSpec};
use super::member::ShareMember;
use super::records::ShareRecord;
use crate::group::consumer::member::{Assignment, TopicId};
use crate::group::consumer::{GroupError, TopicsView};

/// The epoch a member leaves with.
pub const LEAVE_EPOCH: i32 = -1;

/// The group coordinator's settings for one share group.
#[derive(Debug, Clone)]
pub struct ShareGroupSettings {
    pub session_timeout: Duration,
    pub heartbeat_interval_ms: i32,
    pub max_size: usize,
    /// `group.share.initialize.retry.interval.ms`.
    pub initialize_retry: Duration,
}

/// A ShareGroupHeartbeat as the group sees it (validated by `share::validate`).
#[derive(Debug, Clone, Default)]
pub struct ShareHeartbeatArgs {
    pub member_id: String,
    pub member_epoch: i32,
    pub rack_id: Option<String>,
    /// None: unchanged since the last heartbeat.
    pub topic_names: Option<Vec<String>>,
    pub client_id: String,
    pub client_host: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ShareHeartbeatReply {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// Sent when the member joins or its assignment changed.
    pub assignment: Option<Assignment>,
}

/// Share-partitions by topic: its name and partitions.
pub type TopicPartitions = BTreeMap<TopicId, (String, BTreeSet<i32>)>;

/// Which share-partitions have state (the ShareGroupStatePartitionMetadata record).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatePartitions {
    /// Asked to be initialized, not yet confirmed.
    pub initializing: TopicPartitions,
    /// Initialized: these may be assigned.
    pub initialized: TopicPartitions,
    /// Topics whose state is being deleted: id → name.
    pub deleting: BTreeMap<TopicId, String>,
}

impl StatePartitions {
    /// Every share-partition that has or may have state: (topic, partitions).
    pub fn with_state(&self) -> TopicPartitions {
        let mut all = self.initialized.clone();
        for (t, (name, ps)) in &self.initializing {
            all.entry(*t)
                .or_insert_with(|| (name.clone(), BTreeSet::new()))
                .1
                .extend(ps);
        }
        all
    }
}

/// Share-partitions to initialize through the persister: per topic, the partitions and
/// the start offset (-1: the leader resolves it by `share.auto.offset.reset`; 0: a
/// partition added to a topic the group already reads, which starts at its beginning,
/// as Kafka does).
pub type InitRequest = BTreeMap<TopicId, (BTreeSet<i32>, i64)>;

#[derive(Debug, Default)]
pub struct ShareGroup {
    pub id: String,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub metadata_hash: i64,
    pub members: BTreeMap<String, ShareMember>,
    /// Member id → target assignment at `assignment_epoch`.
    pub targets: BTreeMap<String, Assignment>,
    pub state: StatePartitions,
    sessions: HashMap<String, Instant>,
    /// When the partitions now initializing were asked for (a later heartbeat asks
    /// again after `initialize_retry`). Not durable: after a load they are asked again.
    initializing_since: Option<Instant>,
}

fn not_member(member_id: &str, group_id: &str) -> GroupError {
    GroupError::new(
        ErrorCode::UnknownMemberId,
        format!("Member {member_id} is not a member of group {group_id}."),
    )
}

impl ShareGroup {
    pub fn new(id: &str) -> ShareGroup {
        ShareGroup {
            id: id.to_string(),
            ..Default::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Kafka's share-group states.
    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else {
            "Stable"
        }
    }

    pub fn subscribed_names(&self) -> BTreeSet<String> {
        self.members
            .values()
            .flat_map(|m| m.subscribed_topic_names.iter().cloned())
            .collect()
    }

    /// A hash of the subscribed topics as they exist (names, ids, partition counts).
    fn metadata_hash(&self, topics: &TopicsView) -> i64 {
        let mut bytes = Vec::new();
        for (name, (id, count)) in topics.resolve(self.subscribed_names().iter()) {
            bytes.extend_from_slice(&(name.len() as u32).to_be_bytes());
            bytes.extend_from_slice(name.as_bytes());
            bytes.extend_from_slice(&id);
            bytes.extend_from_slice(&count.to_be_bytes());
        }
        twox_hash::XxHash3_128::oneshot(&bytes) as i64
    }

    fn bump_epoch(&mut self, hash: i64, out: &mut Vec<ShareRecord>) {
        self.group_epoch = self.group_epoch.max(self.assignment_epoch) + 1;
        self.metadata_hash = hash;
        out.push(ShareRecord::Metadata {
            epoch: self.group_epoch,
            metadata_hash: hash,
        });
    }

    /// The initialized share-partitions of the subscribed topics that exist.
    fn assignable(&self, topics: &TopicsView) -> BTreeMap<TopicId, BTreeSet<i32>> {
        let subscribed = topics.resolve(self.subscribed_names().iter());
        subscribed
            .values()
            .filter_map(|(id, count)| {
                let (_, ps) = self.state.initialized.get(id)?;
                let ps: BTreeSet<i32> = ps.iter().copied().filter(|p| p < count).collect();
                (!ps.is_empty()).then_some((*id, ps))
            })
            .collect()
    }

    /// Whether the initialized partitions differ from what the target assignment
    /// covers (Kafka bumps the group epoch for that, so members get them).
    fn assignment_pending(&self, topics: &TopicsView) -> bool {
        if self.members.is_empty() {
            return false;
        }
        let mut covered: BTreeMap<TopicId, BTreeSet<i32>> = BTreeMap::new();
        for a in self.targets.values() {
            for (t, ps) in a {
                covered.entry(*t).or_default().extend(ps);
            }
        }
        covered != self.assignable(topics)
    }

    /// A new target assignment at the group epoch.
    fn assign(&mut self, topics: &TopicsView, out: &mut Vec<ShareRecord>) {
        let assignable = self.assignable(topics);
        let empty = Assignment::new();
        let specs: BTreeMap<String, MemberSpec<'_>> = self
            .members
            .values()
            .map(|m| {
                (
                    m.member_id.clone(),
                    MemberSpec {
                        topics: topics
                            .resolve(m.subscribed_topic_names.iter())
                            .values()
                            .map(|(id, _)| *id)
                            .collect(),
                        current: self.targets.get(&m.member_id).unwrap_or(&empty),
                    },
                )
            })
            .collect();
        let targets = assignor::assign(&specs, &assignable);
        for (id, a) in &targets {
            if self.targets.get(id) != Some(a) {
                out.push(ShareRecord::TargetMember(id.clone(), a.clone()));
            }
        }
        self.targets = targets;
        self.assignment_epoch = self.group_epoch;
        out.push(ShareRecord::TargetMetadata(self.assignment_epoch));
    }

    /// Moves a member to the target assignment when its epoch is behind (share members
    /// take it at once: nothing to revoke first).
    fn reconcile(&self, member: &mut ShareMember, subscription_changed: bool) -> bool {
        let target = self
            .targets
            .get(&member.member_id)
            .cloned()
            .unwrap_or_default();
        if member.member_epoch != self.assignment_epoch {
            member.previous_member_epoch = member.member_epoch;
            member.member_epoch = self.assignment_epoch;
            member.assigned = target;
            true
        } else if subscription_changed && member.assigned != target {
            member.assigned = target;
            true
        } else {
            false
        }
    }

    /// Serves one heartbeat (a leave included). The records must be written before the
    /// answer is sent; the init request, if any, goes to the persister after that.
    pub fn heartbeat(
        &mut self,
        args: ShareHeartbeatArgs,
        topics: &TopicsView,
        settings: &ShareGroupSettings,
        now: Instant,
    ) -> Result<(ShareHeartbeatReply, Vec<ShareRecord>, InitRequest), GroupError> {
        let mut out = Vec::new();
        if args.member_epoch == LEAVE_EPOCH {
            if !self.members.contains_key(&args.member_id) {
                return Err(not_member(&args.member_id, &self.id));
            }
            out.extend(self.fence(&args.member_id, topics));
            let reply = ShareHeartbeatReply {
                member_id: args.member_id,
                member_epoch: LEAVE_EPOCH,
                heartbeat_interval_ms: 0,
                assignment: None,
            };
            return Ok((reply, out, InitRequest::new()));
        }
        let joining = args.member_epoch == 0;
        let before = match self.members.get(&args.member_id) {
            Some(m) => {
                if !joining {
                    check_epoch(m, args.member_epoch)?;
                }
                Some(m.clone())
            }
            None if !joining => return Err(not_member(&args.member_id, &self.id)),
            None => {
                if self.members.len() >= settings.max_size {
                    return Err(GroupError::new(
                        ErrorCode::GroupMaxSizeReached,
                        format!(
                            "The share group has reached its maximum capacity of {} members.",
                            settings.max_size
                        ),
                    ));
                }
                None
            }
        };
        let mut member = before
            .clone()
            .unwrap_or_else(|| ShareMember::new(&args.member_id));
        if args.rack_id.is_some() {
            member.rack_id = args.rack_id;
        }
        member.client_id = args.client_id;
        member.client_host = args.client_host;
        if let Some(names) = args.topic_names {
            member.subscribed_topic_names = names;
        }
        let subscription_changed = before
            .as_ref()
            .is_none_or(|b| b.subscribed_topic_names != member.subscribed_topic_names);
        // The member record changes with its metadata; its epoch is in another record.
        let metadata_changed = before.as_ref().is_none_or(|b| {
            (
                &b.rack_id,
                &b.client_id,
                &b.client_host,
                &b.subscribed_topic_names,
            ) != (
                &member.rack_id,
                &member.client_id,
                &member.client_host,
                &member.subscribed_topic_names,
            )
        });
        if metadata_changed {
            out.push(ShareRecord::Member(member.clone()));
        }
        self.members
            .insert(member.member_id.clone(), member.clone());
        let hash = self.metadata_hash(topics);
        if subscription_changed
            || hash != self.metadata_hash
            || (self.assignment_epoch >= self.group_epoch && self.assignment_pending(topics))
        {
            self.bump_epoch(hash, &mut out);
        }
        if self.group_epoch > self.assignment_epoch {
            self.assign(topics, &mut out);
        }
        let assigned_before = member.assigned.clone();
        if self.reconcile(&mut member, subscription_changed) || before.is_none() {
            out.push(ShareRecord::CurrentAssignment(member.clone()));
        }
        let assignment =
            (joining || member.assigned != assigned_before).then(|| member.assigned.clone());
        self.members
            .insert(member.member_id.clone(), member.clone());
        self.sessions
            .insert(member.member_id.clone(), now + settings.session_timeout);
        let init = self.needing_initialization(topics, settings, now, &mut out);
        let reply = ShareHeartbeatReply {
            member_id: member.member_id,
            member_epoch: member.member_epoch,
            heartbeat_interval_ms: settings.heartbeat_interval_ms,
            assignment,
        };
        Ok((reply, out, init))
    }

    /// The subscribed share-partitions without state, and those whose initialization has
    /// been pending longer than the retry interval: marked initializing (a record) and
    /// returned for the persister.
    fn needing_initialization(
        &mut self,
        topics: &TopicsView,
        settings: &ShareGroupSettings,
        now: Instant,
        out: &mut Vec<ShareRecord>,
    ) -> InitRequest {
        let retry = self
            .initializing_since
            .is_none_or(|t| now.duration_since(t) >= settings.initialize_retry);
        let mut request = InitRequest::new();
        for (name, (id, count)) in topics.resolve(self.subscribed_names().iter()) {
            let known =
                |m: &TopicPartitions, p: i32| m.get(&id).is_some_and(|(_, s)| s.contains(&p));
            let missing: BTreeSet<i32> = (0..count)
                .filter(|p| !known(&self.state.initialized, *p))
                .filter(|p| retry || !known(&self.state.initializing, *p))
                .collect();
            if missing.is_empty() {
                continue;
            }
            // A topic the group already has state for gains partitions: they start at
            // their beginning; a topic new to the group starts where the leader's
            // `share.auto.offset.reset` says.
            let seen = self.state.initialized.contains_key(&id);
            let start = if seen { 0 } else { -1 };
            self.state
                .initializing
                .entry(id)
                .or_insert_with(|| (name.clone(), BTreeSet::new()))
                .1
                .extend(&missing);
            self.state.deleting.remove(&id);
            request.insert(id, (missing, start));
        }
        if !request.is_empty() {
            self.initializing_since = Some(now);
            out.push(ShareRecord::StatePartitions(self.state.clone()));
        }
        request
    }

    /// The persister initialized these share-partitions: they may be assigned (from
    /// the next heartbeat, which bumps the group epoch). Returns the record, if any
    /// changed.
    pub fn initialized(&mut self, done: &InitRequest) -> Option<ShareRecord> {
        let mut changed = false;
        for (t, (ps, _)) in done {
            let Some((name, pending)) = self.state.initializing.get_mut(t) else {
                continue;
            };
            let name = name.clone();
            for p in ps {
                changed |= pending.remove(p);
            }
            if pending.is_empty() {
                self.state.initializing.remove(t);
            }
            self.state
                .initialized
                .entry(*t)
                .or_insert_with(|| (name, BTreeSet::new()))
                .1
                .extend(ps);
        }
        changed.then(|| ShareRecord::StatePartitions(self.state.clone()))
    }

    /// AlterShareGroupOffsets (the caller checked the group is empty): `topics` are
    /// initialized again, at the offsets the request gives; marked initializing (a
    /// record) until the persister confirms. Returns the state epoch to write with (the
    /// group epoch, as Kafka).
    pub fn prepare_alter(&mut self, topics: &TopicPartitions, out: &mut Vec<ShareRecord>) -> i32 {
        for (id, (name, ps)) in topics {
            self.state
                .initializing
                .entry(*id)
                .or_insert_with(|| (name.clone(), BTreeSet::new()))
                .1
                .extend(ps);
            self.state.deleting.remove(id);
        }
        if !topics.is_empty() {
            out.push(ShareRecord::StatePartitions(self.state.clone()));
        }
        self.group_epoch
    }

    /// DeleteShareGroupOffsets (the caller checked the group is empty): the requested
    /// topics that have state move to deleting (a record); returns them with their
    /// partitions, for the persister.
    pub fn prepare_delete(
        &mut self,
        topics: &BTreeSet<TopicId>,
        out: &mut Vec<ShareRecord>,
    ) -> TopicPartitions {
        let doomed: TopicPartitions = self
            .state
            .with_state()
            .into_iter()
            .filter(|(id, _)| topics.contains(id))
            .collect();
        for (id, (name, _)) in &doomed {
            self.state.initialized.remove(id);
            self.state.initializing.remove(id);
            self.state.deleting.insert(*id, name.clone());
        }
        if !doomed.is_empty() {
            out.push(ShareRecord::StatePartitions(self.state.clone()));
        }
        doomed
    }

    /// Topics that no longer exist lose their state: they move to deleting (returned,
    /// for the persister) until the deletion is confirmed.
    pub fn on_metadata_change(
        &mut self,
        topics: &TopicsView,
        out: &mut Vec<ShareRecord>,
    ) -> TopicPartitions {
        let live: BTreeSet<TopicId> = topics.by_name.values().map(|(id, _)| *id).collect();
        let gone: TopicPartitions = self
            .state
            .with_state()
            .into_iter()
            .filter(|(id, _)| !live.contains(id))
            .collect();
        if !gone.is_empty() {
            for (id, (name, _)) in &gone {
                self.state.initialized.remove(id);
                self.state.initializing.remove(id);
                self.state.deleting.insert(*id, name.clone());
            }
            out.push(ShareRecord::StatePartitions(self.state.clone()));
        }
        if !self.members.is_empty() {
            let hash = self.metadata_hash(topics);
            if hash != self.metadata_hash {
                self.bump_epoch(hash, out);
            }
        }
        gone
    }

    /// The persister deleted these topics' state.
    pub fn deleted(&mut self, topics: &BTreeSet<TopicId>) -> Option<ShareRecord> {
        let before = self.state.deleting.len();
        self.state.deleting.retain(|t, _| !topics.contains(t));
        (self.state.deleting.len() != before)
            .then(|| ShareRecord::StatePartitions(self.state.clone()))
    }

    /// Removes a member (it left or its session expired): its records go, the group
    /// epoch moves and the others get a new target.
    pub fn fence(&mut self, member_id: &str, topics: &TopicsView) -> Vec<ShareRecord> {
        let mut out = Vec::new();
        if self.members.remove(member_id).is_none() {
            return out;
        }
        self.sessions.remove(member_id);
        out.push(ShareRecord::CurrentAssignmentTombstone(
            member_id.to_string(),
        ));
        if self.targets.remove(member_id).is_some() {
            out.push(ShareRecord::TargetMemberTombstone(member_id.to_string()));
        }
        out.push(ShareRecord::MemberTombstone(member_id.to_string()));
        let hash = self.metadata_hash(topics);
        self.bump_epoch(hash, &mut out);
        self.assign(topics, &mut out);
        out
    }

    /// Members whose session ran out.
    pub fn expired(&self, now: Instant) -> Vec<String> {
        self.sessions
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(m, _)| m.clone())
            .collect()
    }

    /// After a load: every member gets a fresh session.
    pub fn restart_sessions(&mut self, now: Instant, session_timeout: Duration) {
        self.sessions = self
            .members
            .keys()
            .map(|m| (m.clone(), now + session_timeout))
            .collect();
    }

    /// Every record of the group deleted (DeleteGroups, expiry), in Kafka's order:
    /// members' assignments, target members, members, then the group's own records.
    pub fn tombstones(&self) -> Vec<ShareRecord> {
        let mut out = Vec::new();
        for id in self.members.keys() {
            out.push(ShareRecord::CurrentAssignmentTombstone(id.clone()));
        }
        for id in self.targets.keys() {
            out.push(ShareRecord::TargetMemberTombstone(id.clone()));
        }
        for id in self.members.keys() {
            out.push(ShareRecord::MemberTombstone(id.clone()));
        }
        out.push(ShareRecord::TargetMetadataTombstone);
        out.push(ShareRecord::StatePartitionsTombstone);
        out.push(ShareRecord::MetadataTombstone);
        out
    }
}

/// Kafka's share-member epoch check: a greater epoch than known, or a smaller one that
/// is not the previous, is fenced.
fn check_epoch(member: &ShareMember, epoch: i32) -> Result<(), GroupError> {
    if epoch > member.member_epoch {
        return Err(GroupError::new(
            ErrorCode::FencedMemberEpoch,
            format!(
                "The share group member has a greater member epoch ({epoch}) than the one known by the group coordinator ({}). The member must abandon all its partitions and rejoin.",
                member.member_epoch
            ),
        ));
    }
    if epoch < member.member_epoch && epoch != member.previous_member_epoch {
        return Err(GroupError::new(
            ErrorCode::FencedMemberEpoch,
            format!(
                "The share group member has a smaller member epoch ({epoch}) than the one known by the group coordinator ({}), and it does not match the previous member epoch ({}). The member must abandon all its partitions and rejoin.",
                member.member_epoch, member.previous_member_epoch
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: TopicId = [7; 16];

    fn topics(partitions: i32) -> TopicsView {
        TopicsView {
            by_name: BTreeMap::from([("t".to_string(), (T, partitions))]),
            access: None,
        }
    }

    fn settings() -> ShareGroupSettings {
        ShareGroupSettings {
            session_timeout: Duration::from_secs(45),
            heartbeat_interval_ms: 5000,
            max_size: 2,
            initialize_retry: Duration::from_secs(30),
        }
    }

    fn join(member: &str) -> ShareHeartbeatArgs {
        ShareHeartbeatArgs {
            member_id: member.into(),
            member_epoch: 0,
            topic_names: Some(vec!["t".into()]),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            ..Default::default()
        }
    }

    fn beat(member: &str, epoch: i32) -> ShareHeartbeatArgs {
        ShareHeartbeatArgs {
            member_id: member.into(),
            member_epoch: epoch,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            ..Default::default()
        }
    }

    fn count(a: &Option<Assignment>) -> usize {
        a.as_ref()
            .map_or(0, |a| a.values().map(BTreeSet::len).sum())
    }

    #[test]
    fn partitions_are_assigned_once_initialized() {
        let (t, s, now) = (topics(4), settings(), Instant::now());
        let mut g = ShareGroup::new("g");
        let (r, records, init) = g.heartbeat(join("a"), &t, &s, now).unwrap();
        // Joined at epoch 1 with nothing: no share state yet.
        assert_eq!((r.member_epoch, count(&r.assignment)), (1, 0));
        assert_eq!(init, BTreeMap::from([(T, ((0..4).collect(), -1))]));
        assert!(records.contains(&ShareRecord::StatePartitions(g.state.clone())));
        // A heartbeat before the retry interval does not ask again.
        let (_, _, init) = g.heartbeat(beat("a", 1), &t, &s, now).unwrap();
        assert!(init.is_empty());
        assert!(g
            .initialized(&BTreeMap::from([(T, ((0..4).collect(), -1))]))
            .is_some());
        // The next heartbeat bumps the epoch and hands the member all four.
        let (r, _, _) = g.heartbeat(beat("a", 1), &t, &s, now).unwrap();
        assert_eq!((r.member_epoch, count(&r.assignment)), (2, 4));
        // A second member: the group epoch moves, each gets two, no revocation phase.
        let (r, _, _) = g.heartbeat(join("b"), &t, &s, now).unwrap();
        assert_eq!((r.member_epoch, count(&r.assignment)), (3, 2));
        let (r, _, _) = g.heartbeat(beat("a", 2), &t, &s, now).unwrap();
        assert_eq!((r.member_epoch, count(&r.assignment)), (3, 2));
        // A partition added to the topic is initialized from offset 0.
        let (_, _, init) = g.heartbeat(beat("a", 3), &topics(5), &s, now).unwrap();
        assert_eq!(init, BTreeMap::from([(T, (BTreeSet::from([4]), 0))]));
    }

    #[test]
    fn epochs_are_checked_and_the_size_is_bounded() {
        let (t, s, now) = (topics(2), settings(), Instant::now());
        let mut g = ShareGroup::new("g");
        g.heartbeat(join("a"), &t, &s, now).unwrap();
        g.heartbeat(join("b"), &t, &s, now).unwrap();
        let e = g.heartbeat(join("c"), &t, &s, now).unwrap_err();
        assert_eq!(e.code, ErrorCode::GroupMaxSizeReached);
        assert_eq!(
            e.message.as_deref(),
            Some("The share group has reached its maximum capacity of 2 members.")
        );
        let e = g.heartbeat(beat("a", 9), &t, &s, now).unwrap_err();
        assert_eq!(e.code, ErrorCode::FencedMemberEpoch);
        // a is at epoch 2 (b's join moved it), previous 1: 1 is accepted, 0 is not an
        // epoch a member heartbeats with unless joining.
        let (r, _, _) = g.heartbeat(beat("a", 1), &t, &s, now).unwrap();
        assert_eq!(r.member_epoch, 2);
        let e = g.heartbeat(beat("x", 1), &t, &s, now).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_deref()),
            (
                ErrorCode::UnknownMemberId,
                Some("Member x is not a member of group g.")
            )
        );
        // Leaving: epoch -1 answered, the group epoch moves.
        let before = g.group_epoch;
        let (r, records, _) = g.heartbeat(beat("b", LEAVE_EPOCH), &t, &s, now).unwrap();
        assert_eq!(r.member_epoch, LEAVE_EPOCH);
        assert!(records.contains(&ShareRecord::MemberTombstone("b".into())));
        assert_eq!(g.group_epoch, before + 1);
        assert_eq!(g.state(), "Stable");
        assert_eq!(
            g.expired(now + Duration::from_secs(46)),
            vec!["a".to_string()]
        );
    }

    #[test]
    fn a_deleted_topic_moves_to_deleting() {
        let (t, s, now) = (topics(2), settings(), Instant::now());
        let mut g = ShareGroup::new("g");
        let (_, _, init) = g.heartbeat(join("a"), &t, &s, now).unwrap();
        g.initialized(&init);
        let mut out = Vec::new();
        let gone = g.on_metadata_change(&TopicsView::default(), &mut out);
        assert_eq!(gone.keys().collect::<Vec<_>>(), vec![&T]);
        assert_eq!(g.state.deleting.get(&T).map(String::as_str), Some("t"));
        assert!(g.state.initialized.is_empty());
        assert!(g.deleted(&BTreeSet::from([T])).is_some());
        assert!(g.state.deleting.is_empty());
    }
}
