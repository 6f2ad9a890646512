//! One consumer group (KIP-848): its members, the group epoch (bumped whenever the
//! subscriptions or the subscribed topics change), the target assignment computed for
//! that epoch, and the heartbeat that moves every member toward its target. Every
//! change is returned as the `__consumer_offsets` records that make it durable
//! (`records.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use spate_net::ErrorCode;

use super::assignor::{Assignor, MemberSpec};
use super::member::{
    Assignment, ClassicProtocols, ConsumerMember, MemberState, TopicId, STATIC_LEFT_EPOCH,
};
use super::reconcile::{reconcile, Target};
use super::records::GroupRecord;
use super::regex::TopicRegex;
use super::topics::TopicsView;
use crate::security::authorizer::Caller;

mod classic;
pub use classic::ClassicJoined;

/// OffsetCommit carries the member epoch from this version on; a consumer-group member
/// must use it.
const OFFSET_COMMIT_MEMBER_EPOCH_FROM: i16 = 9;

/// Member epochs of the leave heartbeats.
pub const LEAVE_EPOCH: i32 = -1;

/// The broker's `group.consumer.*` settings a group runs by.
#[derive(Debug, Clone)]
pub struct ConsumerGroupSettings {
    pub session_timeout: Duration,
    pub heartbeat_interval_ms: i32,
    pub max_size: usize,
    /// Enabled assignors; the first is the default.
    pub assignors: Vec<Assignor>,
}

/// A heartbeat, validated (see `validate` in `mod.rs`).
#[derive(Debug, Clone, Default)]
pub struct HeartbeatArgs {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub topic_names: Option<Vec<String>>,
    pub regex: Option<String>,
    pub assignor: Option<String>,
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
    /// Who sent it (a regex it subscribes with is resolved with its ACLs).
    pub caller: Option<Caller>,
    /// A JoinGroup of a member using the classic protocol (`classic.rs`): what it joined
    /// with (None: a ConsumerGroupHeartbeat).
    pub classic: Option<ClassicProtocols>,
    /// A classic static member that joined without its member id takes the place of the
    /// member holding its instance id.
    pub takes_over: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatReply {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// The member's assignment when it must (re)learn it.
    pub assignment: Option<Assignment>,
}

/// An error code and Kafka's message for it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupError {
    pub code: ErrorCode,
    pub message: Option<String>,
}

impl GroupError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> GroupError {
        GroupError {
            code,
            message: Some(message.into()),
        }
    }
}

/// When a member is removed unless it heartbeats (session) or revokes (rebalance).
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    session: Instant,
    /// Set while the member has partitions to revoke.
    rebalance: Option<Instant>,
    /// A member using the classic protocol: by when it must rejoin (after it was told to)
    /// or sync (after it joined).
    classic: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct ConsumerGroup {
    pub id: String,
    pub group_epoch: i32,
    /// Hash of the subscribed topics' names, ids and partition counts at the last epoch
    /// bump (Spate's own hash, not Kafka's; see `metadata_hash`).
    pub metadata_hash: i64,
    pub members: BTreeMap<String, ConsumerMember>,
    pub assignment_epoch: i32,
    /// Member id → target assignment at `assignment_epoch`.
    pub targets: BTreeMap<String, Assignment>,
    /// Subscription regex → the topics it matched when last resolved.
    pub regexes: BTreeMap<String, BTreeSet<String>>,
    /// Subscription regex → the caller of the last heartbeat that subscribed with it:
    /// whose DESCRIBE ACLs its topics are filtered by, as Kafka resolves a regex with
    /// the ACLs of the member whose heartbeat triggered it. Not persisted: after a
    /// restart, a regex keeps what it resolved to until a member heartbeats.
    resolvers: BTreeMap<String, Caller>,
    /// (topic, partition) → member that holds it or has yet to revoke it.
    owners: HashMap<(TopicId, i32), String>,
    deadlines: HashMap<String, Deadlines>,
    /// Since when the group has had no members (the coordinator's tick sets it).
    pub empty_since: Option<Instant>,
}

impl ConsumerGroup {
    pub fn new(id: &str) -> ConsumerGroup {
        ConsumerGroup {
            id: id.to_string(),
            ..Default::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Kafka's consumer group states.
    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.group_epoch > self.assignment_epoch {
            "Assigning"
        } else if self.members.values().any(|m| {
            m.member_epoch != self.assignment_epoch && m.member_epoch != STATIC_LEFT_EPOCH
                || m.state != MemberState::Stable
        }) {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// The assignor the group uses: the one most members ask for, else the default.
    pub fn assignor(&self, settings: &ConsumerGroupSettings) -> Assignor {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = m.server_assignor.as_deref() {
                *votes.entry(a).or_default() += 1;
            }
        }
        votes
            .iter()
            .max_by_key(|(name, n)| (**n, std::cmp::Reverse(**name)))
            .and_then(|(name, _)| Assignor::by_name(name))
            .or_else(|| settings.assignors.first().copied())
            .unwrap_or(Assignor::Uniform)
    }

    /// Every topic name some member subscribes to, directly or through a regex.
    fn subscribed_names(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for m in self.members.values() {
            names.extend(m.subscribed_topic_names.iter().cloned());
            if let Some(topics) = m
                .subscribed_topic_regex
                .as_ref()
                .and_then(|r| self.regexes.get(r))
            {
                names.extend(topics.iter().cloned());
            }
        }
        names
    }

    fn member_topics(&self, m: &ConsumerMember, topics: &TopicsView) -> BTreeSet<TopicId> {
        let mut names: BTreeSet<String> = m.subscribed_topic_names.iter().cloned().collect();
        if let Some(t) = m
            .subscribed_topic_regex
            .as_ref()
            .and_then(|r| self.regexes.get(r))
        {
            names.extend(t.iter().cloned());
        }
        topics.ids(&names)
    }

    /// A hash of the subscribed topics' metadata: a change bumps the group epoch.
    pub fn metadata_hash(&self, topics: &TopicsView) -> i64 {
        let mut bytes = Vec::new();
        for (name, (id, count)) in topics.resolve(self.subscribed_names().iter()) {
            bytes.extend_from_slice(&(name.len() as u32).to_be_bytes());
            bytes.extend_from_slice(name.as_bytes());
            bytes.extend_from_slice(&id);
            bytes.extend_from_slice(&count.to_be_bytes());
        }
        twox_hash::XxHash3_128::oneshot(&bytes) as i64
    }

    /// Resolves the regexes in use again (a new one, or after topics changed) and drops
    /// the ones no member uses; records what changed.
    fn refresh_regexes(&mut self, topics: &TopicsView, out: &mut Vec<GroupRecord>) {
        let in_use: BTreeSet<String> = self
            .members
            .values()
            .filter_map(|m| m.subscribed_topic_regex.clone())
            .collect();
        let stale: Vec<String> = self
            .regexes
            .keys()
            .filter(|r| !in_use.contains(*r))
            .cloned()
            .collect();
        for r in stale {
            self.regexes.remove(&r);
            self.resolvers.remove(&r);
            out.push(GroupRecord::RegexTombstone(r));
        }
        for r in in_use {
            let resolver = self.resolvers.get(&r);
            if topics.access.is_some() && resolver.is_none() {
                continue;
            }
            let visible = |t: &&str| resolver.is_none_or(|c| topics.may_describe(c, t));
            // Validated when the member subscribed; a regex that stopped compiling
            // (impossible with the same crate) matches nothing.
            let matched = TopicRegex::compile(&r)
                .map(|re| re.matching(topics.by_name.keys().map(String::as_str).filter(visible)))
                .unwrap_or_default();
            if self.regexes.get(&r) != Some(&matched) {
                self.regexes.insert(r.clone(), matched.clone());
                out.push(GroupRecord::Regex(r, matched));
            }
        }
    }

    /// After a metadata change: bumps the group epoch if the subscribed topics changed
    /// (a regex matches a new topic, partitions were added, a topic was deleted).
    pub fn on_metadata_change(&mut self, topics: &TopicsView) -> Vec<GroupRecord> {
        let mut out = Vec::new();
        if self.members.is_empty() {
            return out;
        }
        self.refresh_regexes(topics, &mut out);
        let hash = self.metadata_hash(topics);
        if hash != self.metadata_hash {
            self.bump_epoch(hash, &mut out);
        }
        out
    }

    fn bump_epoch(&mut self, hash: i64, out: &mut Vec<GroupRecord>) {
        self.group_epoch = self.group_epoch.max(self.assignment_epoch) + 1;
        self.metadata_hash = hash;
        out.push(GroupRecord::Metadata {
            epoch: self.group_epoch,
            metadata_hash: hash,
        });
    }

    /// Serves one heartbeat; the records make its effects durable and must be written
    /// before the reply is sent. `rebalances` counts target assignment computations.
    pub fn heartbeat(
        &mut self,
        args: HeartbeatArgs,
        topics: &TopicsView,
        settings: &ConsumerGroupSettings,
        now: Instant,
        rebalances: &mut u64,
    ) -> Result<(HeartbeatReply, Vec<GroupRecord>), GroupError> {
        let mut out = Vec::new();
        if args.member_epoch == LEAVE_EPOCH {
            return self
                .leave(&args.member_id, topics, &mut out)
                .map(|r| (r, out));
        }
        if args.member_epoch == STATIC_LEFT_EPOCH {
            return self.static_leave(&args, &mut out).map(|r| (r, out));
        }
        let joining = args.member_epoch == 0;
        let existing = self.find_member(&args)?;
        let before = existing.clone();
        let mut member = match existing {
            Some(m) => m,
            None => {
                if self.members.len() >= settings.max_size {
                    return Err(GroupError::new(
                        ErrorCode::GroupMaxSizeReached,
                        format!(
                            "The consumer group has reached its maximum capacity of {} members.",
                            settings.max_size
                        ),
                    ));
                }
                ConsumerMember::new(&args.member_id)
            }
        };
        // A static member rejoining under a new member id takes over its old place.
        let replaced = (member.member_id != args.member_id).then(|| member.member_id.clone());
        if let Some(old) = &replaced {
            self.remove_member_state(old, &mut out, false);
            member.member_id = args.member_id.clone();
            if member.member_epoch == STATIC_LEFT_EPOCH {
                member.member_epoch = member.previous_member_epoch;
            }
        }
        let subscription_before = (
            member.subscribed_topic_names.clone(),
            member.subscribed_topic_regex.clone(),
        );
        apply_request(&mut member, &args);
        if let (Some(regex), Some(caller)) = (&member.subscribed_topic_regex, &args.caller) {
            if self.resolvers.get(regex) != Some(caller) {
                self.resolvers.insert(regex.clone(), caller.clone());
            }
        }
        let subscription_changed = before.is_none()
            || replaced.is_none()
                && subscription_before
                    != (
                        member.subscribed_topic_names.clone(),
                        member.subscribed_topic_regex.clone(),
                    );
        if before.as_ref() != Some(&member) || replaced.is_some() {
            out.push(GroupRecord::Member(member.clone()));
        }
        if let Some(old) = &replaced {
            if let Some(t) = self.targets.remove(old) {
                out.push(GroupRecord::TargetMember(
                    member.member_id.clone(),
                    t.clone(),
                ));
                self.targets.insert(member.member_id.clone(), t);
            }
        }
        self.members
            .insert(member.member_id.clone(), member.clone());
        if replaced.is_some() {
            self.set_ownership(&ConsumerMember::new(""), Some(&member));
            out.push(GroupRecord::CurrentAssignment(member.clone()));
        }
        if subscription_changed {
            self.refresh_regexes(topics, &mut out);
        }
        let hash = self.metadata_hash(topics);
        if subscription_changed || hash != self.metadata_hash {
            self.bump_epoch(hash, &mut out);
        }
        if self.group_epoch > self.assignment_epoch {
            self.compute_targets(topics, settings, &mut out);
            *rebalances += 1;
        }
        let updated = self.reconcile_member(&member.member_id, args.owned.as_ref(), &mut out);
        let id = updated.member_id.clone();
        let rebalance_deadline = (updated.state == MemberState::UnrevokedPartitions).then(|| {
            let keep = self.deadlines.get(&id).and_then(|d| d.rebalance);
            keep.filter(|_| before.as_ref().is_some_and(|b| b.state == updated.state))
                .unwrap_or(now + Duration::from_millis(updated.rebalance_timeout_ms.max(0) as u64))
        });
        let classic_deadline = self.deadlines.get(&id).and_then(|d| d.classic);
        self.deadlines.insert(
            id.clone(),
            Deadlines {
                session: now + session_timeout(&updated, settings.session_timeout),
                rebalance: rebalance_deadline,
                classic: classic_deadline,
            },
        );
        // Kafka sends the assignment only to a full request (joining, or a client
        // recovering from an error) or when the member's partitions changed.
        let full_request = args.rebalance_timeout_ms != -1
            && (args.topic_names.is_some() || args.regex.is_some())
            && args.owned.is_some();
        let changed = before
            .as_ref()
            .is_none_or(|b| b.assigned != updated.assigned);
        Ok((
            HeartbeatReply {
                member_id: id,
                member_epoch: updated.member_epoch,
                heartbeat_interval_ms: settings.heartbeat_interval_ms,
                assignment: (joining || full_request || changed).then(|| updated.assigned.clone()),
            },
            out,
        ))
    }

    /// The member the heartbeat is from, checking its epoch (None: a new member).
    fn find_member(&self, args: &HeartbeatArgs) -> Result<Option<ConsumerMember>, GroupError> {
        if let Some(instance) = &args.instance_id {
            let holder = self
                .members
                .values()
                .find(|m| m.instance_id.as_deref() == Some(instance.as_str()));
            if let Some(m) = holder {
                if m.member_id != args.member_id {
                    if args.member_epoch != 0 {
                        return Err(GroupError::new(
                            ErrorCode::FencedInstanceId,
                            format!("Static member {} with instance id {instance} was fenced by another member.", args.member_id),
                        ));
                    }
                    if m.member_epoch != STATIC_LEFT_EPOCH && !args.takes_over {
                        return Err(GroupError::new(
                            ErrorCode::UnreleasedInstanceId,
                            format!("Static member with unknown member id and instance id {instance} cannot join the group {} because the instance id is owned by member {}.", self.id, m.member_id),
                        ));
                    }
                    return Ok(Some(m.clone()));
                }
            }
        }
        match self.members.get(&args.member_id) {
            None if args.member_epoch == 0 => Ok(None),
            None => Err(self.unknown_member(&args.member_id)),
            Some(m) if args.member_epoch == 0 => Ok(Some(m.clone())),
            Some(m) => {
                check_epoch(m, args.member_epoch, args.owned.as_ref())?;
                Ok(Some(m.clone()))
            }
        }
    }

    fn unknown_member(&self, member_id: &str) -> GroupError {
        GroupError::new(
            ErrorCode::UnknownMemberId,
            format!("Member {member_id} is not a member of group {}.", self.id),
        )
    }

    /// A new target assignment at the group epoch; records the members whose target
    /// changed and the new assignment epoch.
    fn compute_targets(
        &mut self,
        topics: &TopicsView,
        settings: &ConsumerGroupSettings,
        out: &mut Vec<GroupRecord>,
    ) {
        let empty = Assignment::new();
        let specs: Vec<MemberSpec> = self
            .members
            .values()
            .map(|m| MemberSpec {
                member_id: &m.member_id,
                topics: self.member_topics(m, topics),
                previous: self.targets.get(&m.member_id).unwrap_or(&empty),
            })
            .collect();
        let counts: BTreeMap<TopicId, i32> = topics
            .resolve(self.subscribed_names().iter())
            .into_values()
            .collect();
        let new_targets = self.assignor(settings).assign(&specs, &counts);
        drop(specs);
        for (id, t) in &new_targets {
            if self.targets.get(id) != Some(t) {
                out.push(GroupRecord::TargetMember(id.clone(), t.clone()));
            }
        }
        self.targets = new_targets;
        self.assignment_epoch = self.group_epoch;
        out.push(GroupRecord::TargetMetadata(self.assignment_epoch));
    }

    /// Moves the member toward its target; records its new current assignment.
    fn reconcile_member(
        &mut self,
        member_id: &str,
        reported: Option<&Assignment>,
        out: &mut Vec<GroupRecord>,
    ) -> ConsumerMember {
        let Some(member) = self.members.get(member_id).cloned() else {
            unreachable!("reconcile of a member that is not in the group");
        };
        let empty = Assignment::new();
        let target = Target {
            epoch: self.assignment_epoch,
            assignment: self.targets.get(member_id).unwrap_or(&empty),
        };
        let owners = &self.owners;
        let next = reconcile(
            &member,
            &target,
            |t, p| owners.get(&(*t, p)).is_some_and(|o| o != member_id),
            reported,
        );
        if next != member {
            self.set_ownership(&member, Some(&next));
            out.push(GroupRecord::CurrentAssignment(next.clone()));
            self.members.insert(member_id.to_string(), next.clone());
        }
        next
    }

    /// Replaces `old`'s partitions in the owner map by `new`'s.
    fn set_ownership(&mut self, old: &ConsumerMember, new: Option<&ConsumerMember>) {
        for a in [&old.assigned, &old.pending_revocation] {
            for (t, parts) in a {
                for p in parts {
                    if self.owners.get(&(*t, *p)) == Some(&old.member_id) {
                        self.owners.remove(&(*t, *p));
                    }
                }
            }
        }
        if let Some(new) = new {
            for a in [&new.assigned, &new.pending_revocation] {
                for (t, parts) in a {
                    for p in parts {
                        self.owners.insert((*t, *p), new.member_id.clone());
                    }
                }
            }
        }
    }

    /// Rebuilds the owner map from the members (after loading).
    pub fn rebuild_ownership(&mut self) {
        self.owners.clear();
        let members: Vec<ConsumerMember> = self.members.values().cloned().collect();
        for m in &members {
            self.set_ownership(&ConsumerMember::new(""), Some(m));
        }
    }

    pub fn has_deadlines(&self) -> bool {
        !self.deadlines.is_empty()
    }

    /// Starts every member's session anew (after loading, as Kafka does).
    pub fn restart_sessions(&mut self, now: Instant, timeout: Duration) {
        self.deadlines = self
            .members
            .values()
            .map(|m| {
                (
                    m.member_id.clone(),
                    Deadlines {
                        session: now + session_timeout(m, timeout),
                        rebalance: None,
                        classic: None,
                    },
                )
            })
            .collect();
    }

    /// Forgets a member and records its removal (without an epoch bump).
    fn remove_member_state(
        &mut self,
        member_id: &str,
        out: &mut Vec<GroupRecord>,
        target_too: bool,
    ) {
        if let Some(m) = self.members.remove(member_id) {
            self.set_ownership(&m, None);
        }
        self.deadlines.remove(member_id);
        out.push(GroupRecord::CurrentAssignmentTombstone(
            member_id.to_string(),
        ));
        if target_too {
            self.targets.remove(member_id);
        }
        out.push(GroupRecord::TargetMemberTombstone(member_id.to_string()));
        out.push(GroupRecord::MemberTombstone(member_id.to_string()));
    }

    /// Removes a member (expired) and bumps the group epoch.
    pub fn fence(&mut self, member_id: &str, topics: &TopicsView) -> Vec<GroupRecord> {
        let mut out = Vec::new();
        self.remove_member(member_id, topics, &mut out);
        out
    }

    /// Forgets a member, drops the regexes only it used, and starts a new assignment.
    fn remove_member(&mut self, member_id: &str, topics: &TopicsView, out: &mut Vec<GroupRecord>) {
        self.remove_member_state(member_id, out, true);
        self.refresh_regexes(topics, out);
        let hash = self.metadata_hash(topics);
        self.bump_epoch(hash, out);
    }

    fn leave(
        &mut self,
        member_id: &str,
        topics: &TopicsView,
        out: &mut Vec<GroupRecord>,
    ) -> Result<HeartbeatReply, GroupError> {
        if !self.members.contains_key(member_id) {
            return Err(self.unknown_member(member_id));
        }
        self.remove_member(member_id, topics, out);
        Ok(HeartbeatReply {
            member_id: member_id.to_string(),
            member_epoch: LEAVE_EPOCH,
            heartbeat_interval_ms: 0,
            assignment: None,
        })
    }

    /// A static member leaves for a while: it keeps its place and assignment (epoch -2)
    /// until its session expires or its instance id rejoins.
    fn static_leave(
        &mut self,
        args: &HeartbeatArgs,
        out: &mut Vec<GroupRecord>,
    ) -> Result<HeartbeatReply, GroupError> {
        let Some(m) = self.members.get_mut(&args.member_id) else {
            return Err(self.unknown_member(&args.member_id));
        };
        if m.instance_id != args.instance_id {
            return Err(GroupError::new(
                ErrorCode::FencedInstanceId,
                format!(
                    "Static member {} left with another instance id.",
                    args.member_id
                ),
            ));
        }
        if m.member_epoch != STATIC_LEFT_EPOCH {
            m.previous_member_epoch = m.member_epoch;
            m.member_epoch = STATIC_LEFT_EPOCH;
            out.push(GroupRecord::CurrentAssignment(m.clone()));
        }
        Ok(HeartbeatReply {
            member_id: args.member_id.clone(),
            member_epoch: STATIC_LEFT_EPOCH,
            heartbeat_interval_ms: 0,
            assignment: None,
        })
    }

    /// Members whose session ended, or that did not revoke within their rebalance
    /// timeout.
    pub fn expired(&self, now: Instant) -> Vec<String> {
        self.deadlines
            .iter()
            .filter(|(_, d)| {
                d.session <= now
                    || d.rebalance.is_some_and(|r| r <= now)
                    || d.classic.is_some_and(|c| c <= now)
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Every record of the group, as tombstones (DeleteGroups).
    pub fn tombstones(&self) -> Vec<GroupRecord> {
        let mut out = Vec::new();
        for id in self.members.keys() {
            out.push(GroupRecord::CurrentAssignmentTombstone(id.clone()));
            out.push(GroupRecord::TargetMemberTombstone(id.clone()));
            out.push(GroupRecord::MemberTombstone(id.clone()));
        }
        for r in self.regexes.keys() {
            out.push(GroupRecord::RegexTombstone(r.clone()));
        }
        out.push(GroupRecord::TargetMetadataTombstone);
        out.push(GroupRecord::PartitionMetadataTombstone);
        out.push(GroupRecord::MetadataTombstone);
        out
    }

    /// OffsetCommit of a member, one partition (Kafka 4.4's `validateOffsetCommit` for
    /// consumer groups): an epoch below zero commits while the group is empty (admin
    /// tools); otherwise the member must be known and at its epoch, or at an older one
    /// that it has held the partition since (KIP-1251's assignment epochs).
    pub fn check_commit(
        &self,
        member_id: &str,
        epoch: i32,
        version: i16,
        topic: Option<&TopicId>,
        partition: i32,
    ) -> Result<(), ErrorCode> {
        if epoch < 0 && self.members.is_empty() {
            return Ok(());
        }
        let m = self
            .members
            .get(member_id)
            .ok_or(ErrorCode::UnknownMemberId)?;
        if m.classic.is_some() {
            // A classic member commits with its generation: the member epoch, exactly.
            return classic_epoch_check(m, epoch);
        }
        if version < OFFSET_COMMIT_MEMBER_EPOCH_FROM {
            return Err(ErrorCode::UnsupportedVersion);
        }
        let held_since = topic.and_then(|t| m.assignment_epoch(t, partition));
        if epoch == m.member_epoch
            || epoch < m.member_epoch && held_since.is_some_and(|e| e <= epoch)
        {
            Ok(())
        } else {
            Err(ErrorCode::StaleMemberEpoch)
        }
    }

    /// OffsetFetch of a member (Kafka's `validateOffsetFetch`): it must be known and at
    /// its epoch.
    pub fn check_fetch(&self, member_id: &str, epoch: i32) -> Result<(), ErrorCode> {
        let m = self
            .members
            .get(member_id)
            .ok_or(ErrorCode::UnknownMemberId)?;
        if m.classic.is_some() {
            return classic_epoch_check(m, epoch);
        }
        if epoch == m.member_epoch {
            Ok(())
        } else {
            Err(ErrorCode::StaleMemberEpoch)
        }
    }

    /// Whether a member subscribes to the topic (OffsetDelete refuses it then).
    pub fn subscribes_to(&self, topic: &str) -> bool {
        self.subscribed_names().contains(topic)
    }
}

/// A member's session timeout: its JoinGroup's if it uses the classic protocol, else
/// the group's.
fn session_timeout(m: &ConsumerMember, group: Duration) -> Duration {
    m.classic.as_ref().map_or(group, |c| {
        Duration::from_millis(c.session_timeout_ms.max(0) as u64)
    })
}

/// Kafka's `validateMemberEpoch` for a member using the classic protocol: its
/// generation must be its epoch (ILLEGAL_GENERATION otherwise).
fn classic_epoch_check(m: &ConsumerMember, generation: i32) -> Result<(), ErrorCode> {
    if generation == m.member_epoch {
        Ok(())
    } else {
        Err(ErrorCode::IllegalGeneration)
    }
}

/// Kafka's epoch check: a newer epoch than known is fenced; an older one only passes
/// when it is the previous epoch and the member owns no more than its assignment (it
/// missed the reply that moved it on).
fn check_epoch(
    m: &ConsumerMember,
    received: i32,
    owned: Option<&Assignment>,
) -> Result<(), GroupError> {
    let fenced = |why: String| Err(GroupError::new(ErrorCode::FencedMemberEpoch, why));
    if received > m.member_epoch {
        return fenced(format!("The consumer group member has a greater member epoch ({received}) than the one known by the group coordinator ({}). The member must abandon all its partitions and rejoin.", m.member_epoch));
    }
    if received < m.member_epoch {
        let subset = owned.is_some_and(|o| {
            o.iter()
                .all(|(t, parts)| m.assigned.get(t).is_some_and(|a| parts.is_subset(a)))
        });
        if received != m.previous_member_epoch || !subset {
            return fenced(format!("The consumer group member has a smaller member epoch ({received}) than the one known by the group coordinator ({}). The member must abandon all its partitions and rejoin.", m.member_epoch));
        }
    }
    Ok(())
}

/// Copies what the heartbeat says into the member (absent fields keep their value).
fn apply_request(m: &mut ConsumerMember, a: &HeartbeatArgs) {
    if a.instance_id.is_some() {
        m.instance_id = a.instance_id.clone();
    }
    if a.rack_id.is_some() {
        m.rack_id = a.rack_id.clone();
    }
    if a.rebalance_timeout_ms > 0 {
        m.rebalance_timeout_ms = a.rebalance_timeout_ms;
    }
    if let Some(names) = &a.topic_names {
        let mut n = names.clone();
        n.sort();
        n.dedup();
        m.subscribed_topic_names = n;
    }
    if let Some(r) = &a.regex {
        m.subscribed_topic_regex = (!r.is_empty()).then(|| r.clone());
    }
    if let Some(s) = &a.assignor {
        m.server_assignor = Some(s.clone());
    }
    m.classic = a.classic.clone();
    m.client_id = a.client_id.clone();
    m.client_host = a.client_host.clone();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const T: TopicId = [7; 16];

    fn settings() -> ConsumerGroupSettings {
        ConsumerGroupSettings {
            session_timeout: Duration::from_secs(45),
            heartbeat_interval_ms: 5000,
            max_size: 3,
            assignors: vec![Assignor::Uniform, Assignor::Range],
        }
    }

    fn topics(partitions: i32) -> TopicsView {
        TopicsView {
            by_name: BTreeMap::from([("t".to_string(), (T, partitions))]),
            access: None,
        }
    }

    fn join_args(member: &str) -> HeartbeatArgs {
        HeartbeatArgs {
            member_id: member.into(),
            member_epoch: 0,
            rebalance_timeout_ms: 30_000,
            topic_names: Some(vec!["t".into()]),
            owned: Some(Assignment::new()),
            ..Default::default()
        }
    }

    fn beat(member: &str, epoch: i32, owned: &[i32]) -> HeartbeatArgs {
        HeartbeatArgs {
            member_id: member.into(),
            member_epoch: epoch,
            // As `validate` reads a request: no entry for a topic without partitions.
            owned: Some(if owned.is_empty() {
                Assignment::new()
            } else {
                Assignment::from([(T, owned.iter().copied().collect())])
            }),
            ..Default::default()
        }
    }

    fn parts(r: &HeartbeatReply) -> Option<Vec<i32>> {
        r.assignment.as_ref().map(|a| {
            a.get(&T)
                .map(|p| p.iter().copied().collect())
                .unwrap_or_default()
        })
    }

    struct Fixture {
        g: ConsumerGroup,
        topics: TopicsView,
        now: Instant,
        rebalances: u64,
    }

    impl Fixture {
        fn new(partitions: i32) -> Fixture {
            Fixture {
                g: ConsumerGroup::new("g"),
                topics: topics(partitions),
                now: Instant::now(),
                rebalances: 0,
            }
        }

        fn hb(&mut self, args: HeartbeatArgs) -> Result<HeartbeatReply, GroupError> {
            let (reply, _) = self.g.heartbeat(
                args,
                &self.topics,
                &settings(),
                self.now,
                &mut self.rebalances,
            )?;
            Ok(reply)
        }
    }

    #[test]
    fn scale_out_revokes_before_assigning() {
        let mut f = Fixture::new(4);
        let a = f.hb(join_args("a")).unwrap();
        assert_eq!((a.member_epoch, parts(&a)), (1, Some(vec![0, 1, 2, 3])));
        assert_eq!(f.g.state(), "Stable");
        let b = f.hb(join_args("b")).unwrap();
        assert_eq!((b.member_epoch, parts(&b)), (2, Some(vec![])));
        assert_eq!(f.g.state(), "Reconciling");
        assert_eq!(f.rebalances, 2);
        // a must revoke two partitions; its epoch waits.
        let a2 = f.hb(beat("a", 1, &[0, 1, 2, 3])).unwrap();
        assert_eq!((a2.member_epoch, parts(&a2)), (1, Some(vec![0, 1])));
        // b still waits for them (nothing new to tell it).
        let b2 = f.hb(beat("b", 2, &[])).unwrap();
        assert_eq!((b2.member_epoch, parts(&b2)), (2, None));
        // a revoked: it moves to epoch 2, and b gets them.
        let a3 = f.hb(beat("a", 1, &[0, 1])).unwrap();
        assert_eq!((a3.member_epoch, parts(&a3)), (2, None));
        let b3 = f.hb(beat("b", 2, &[])).unwrap();
        assert_eq!((b3.member_epoch, parts(&b3)), (2, Some(vec![2, 3])));
        assert_eq!(f.g.state(), "Stable");
    }

    #[test]
    fn epochs_are_checked() {
        let mut f = Fixture::new(2);
        f.hb(join_args("a")).unwrap();
        let e = f.hb(beat("a", 5, &[])).unwrap_err();
        assert_eq!(e.code, ErrorCode::FencedMemberEpoch);
        assert_eq!(
            f.hb(beat("x", 1, &[])).unwrap_err().code,
            ErrorCode::UnknownMemberId
        );
        f.hb(join_args("b")).unwrap();
        // a revokes and moves to epoch 2; its previous epoch (1) still passes while it
        // owns no more than its assignment, not otherwise.
        f.hb(beat("a", 1, &[0, 1])).unwrap();
        let moved = f.hb(beat("a", 1, &[0])).unwrap();
        assert_eq!(moved.member_epoch, 2);
        assert!(f.hb(beat("a", 1, &[0])).is_ok());
        assert_eq!(
            f.hb(beat("a", 1, &[0, 1])).unwrap_err().code,
            ErrorCode::FencedMemberEpoch
        );
    }

    #[test]
    fn leaving_and_expiring_members_bump_the_epoch() {
        let mut f = Fixture::new(2);
        f.hb(join_args("a")).unwrap();
        f.hb(join_args("b")).unwrap();
        let epoch = f.g.group_epoch;
        let left = f.hb(beat("b", LEAVE_EPOCH, &[])).unwrap();
        assert_eq!((left.member_epoch, left.assignment), (LEAVE_EPOCH, None));
        assert_eq!(f.g.group_epoch, epoch + 1);
        assert!(!f.g.members.contains_key("b"));
        assert_eq!(
            f.hb(beat("b", LEAVE_EPOCH, &[])).unwrap_err().code,
            ErrorCode::UnknownMemberId
        );
        // a's session ends 45 s after its last heartbeat.
        assert!(f.g.expired(f.now + Duration::from_secs(44)).is_empty());
        assert_eq!(
            f.g.expired(f.now + Duration::from_secs(45)),
            vec!["a".to_string()]
        );
        let records = f.g.fence("a", &f.topics);
        assert!(records.contains(&GroupRecord::MemberTombstone("a".into())));
        assert_eq!(f.g.state(), "Empty");
    }

    #[test]
    fn a_member_that_does_not_revoke_in_its_rebalance_timeout_expires() {
        let mut f = Fixture::new(2);
        f.hb(join_args("a")).unwrap(); // rebalance timeout 30 s
        f.hb(join_args("b")).unwrap();
        // a is asked to revoke one partition at `now`; it keeps heartbeating (the session
        // stays alive) without letting go.
        f.hb(beat("a", 1, &[0, 1])).unwrap();
        assert_eq!(f.g.members["a"].state, MemberState::UnrevokedPartitions);
        f.now += Duration::from_secs(20);
        f.hb(beat("a", 1, &[0, 1])).unwrap();
        let start = f.now - Duration::from_secs(20);
        assert!(f
            .g
            .expired(start + Duration::from_millis(29_999))
            .is_empty());
        assert_eq!(
            f.g.expired(start + Duration::from_secs(30)),
            vec!["a".to_string()]
        );
    }

    #[test]
    fn the_last_member_of_a_regex_takes_it_along() {
        let mut f = Fixture::new(1);
        let mut join = join_args("a");
        join.topic_names = None;
        join.regex = Some("t.*".into());
        f.hb(join).unwrap();
        let (_, records) =
            f.g.heartbeat(
                beat("a", LEAVE_EPOCH, &[]),
                &f.topics,
                &settings(),
                f.now,
                &mut f.rebalances,
            )
            .unwrap();
        assert!(records.contains(&GroupRecord::RegexTombstone("t.*".into())));
        assert!(f.g.regexes.is_empty());
    }

    #[test]
    fn static_member_rejoins_with_its_assignment() {
        let mut f = Fixture::new(2);
        let mut join = join_args("a1");
        join.instance_id = Some("i".into());
        let a = f.hb(join.clone()).unwrap();
        let mut leave = beat("a1", STATIC_LEFT_EPOCH, &[]);
        leave.instance_id = Some("i".into());
        assert_eq!(f.hb(leave).unwrap().member_epoch, STATIC_LEFT_EPOCH);
        let epoch = f.g.group_epoch;
        // Another member id with the same instance id takes over: same epoch and
        // partitions, no new group epoch.
        join.member_id = "a2".into();
        let back = f.hb(join.clone()).unwrap();
        assert_eq!(
            (back.member_epoch, parts(&back)),
            (a.member_epoch, parts(&a))
        );
        assert_eq!(f.g.group_epoch, epoch);
        assert!(!f.g.members.contains_key("a1"));
        // While a2 holds the instance id, a third member id cannot take it.
        join.member_id = "a3".into();
        assert_eq!(
            f.hb(join).unwrap_err().code,
            ErrorCode::UnreleasedInstanceId
        );
    }

    #[test]
    fn commits_are_checked_by_member_and_assignment_epoch() {
        let mut f = Fixture::new(2);
        f.hb(join_args("a")).unwrap();
        f.hb(join_args("b")).unwrap();
        f.hb(beat("a", 1, &[0, 1])).unwrap(); // asked to give up partition 1
        f.hb(beat("a", 1, &[0])).unwrap(); // now at epoch 2, holding 0 since epoch 1
        let check =
            |member: &str, epoch: i32, p: i32| f.g.check_commit(member, epoch, 9, Some(&T), p);
        assert_eq!(check("a", 2, 0), Ok(()));
        assert_eq!(check("a", 2, 1), Ok(()));
        assert_eq!(check("a", 1, 0), Ok(()));
        assert_eq!(check("a", 1, 1), Err(ErrorCode::StaleMemberEpoch));
        assert_eq!(check("a", 3, 0), Err(ErrorCode::StaleMemberEpoch));
        assert_eq!(check("x", 2, 0), Err(ErrorCode::UnknownMemberId));
        assert_eq!(check("", -1, 0), Err(ErrorCode::UnknownMemberId));
        assert_eq!(
            f.g.check_commit("a", 2, 8, Some(&T), 0),
            Err(ErrorCode::UnsupportedVersion)
        );
        assert_eq!(f.g.check_fetch("a", 1), Err(ErrorCode::StaleMemberEpoch));
        assert_eq!(f.g.check_fetch("a", 2), Ok(()));
    }

    #[test]
    fn group_size_and_assignor_choice() {
        let mut f = Fixture::new(2);
        for m in ["a", "b", "c"] {
            f.hb(join_args(m)).unwrap();
        }
        assert_eq!(
            f.hb(join_args("d")).unwrap_err().code,
            ErrorCode::GroupMaxSizeReached
        );
        assert_eq!(f.g.assignor(&settings()), Assignor::Uniform);
        let mut r = beat("a", f.g.members["a"].member_epoch, &[]);
        r.owned = None;
        r.assignor = Some("range".into());
        f.hb(r).unwrap();
        assert_eq!(f.g.assignor(&settings()), Assignor::Range);
    }

    #[test]
    fn regex_subscription_follows_new_topics() {
        let mut f = Fixture::new(1);
        let mut join = join_args("a");
        join.topic_names = None;
        join.regex = Some("t.*".into());
        let a = f.hb(join).unwrap();
        assert_eq!(parts(&a), Some(vec![0]));
        let epoch = f.g.group_epoch;
        let u: TopicId = [9; 16];
        f.topics.by_name.insert("tu".into(), (u, 2));
        f.topics.by_name.insert("other".into(), ([8; 16], 2));
        let records = f.g.on_metadata_change(&f.topics);
        assert!(records.contains(&GroupRecord::Regex(
            "t.*".into(),
            ["t".to_string(), "tu".to_string()].into()
        )));
        assert_eq!(f.g.group_epoch, epoch + 1);
        let a2 = f.hb(beat("a", a.member_epoch, &[0])).unwrap();
        let got = a2.assignment.unwrap();
        assert_eq!(got.get(&u).map(|p| p.len()), Some(2));
        assert!(!got.contains_key(&[8; 16]));
    }

    /// KAFKA-18813: a regex matches only the topics the member whose heartbeat
    /// resolved it may describe.
    #[test]
    fn a_regex_matches_only_topics_its_member_may_describe() {
        use crate::security::authorizer::Authorizer;
        use crate::security::config::AuthorizerConfig;
        use crate::security::Principal;
        let authorizer = Authorizer::from_config(&AuthorizerConfig {
            enable: true,
            super_users: "User:admin".into(),
            allow_everyone_if_no_acl_found: false,
        })
        .unwrap();
        let mut f = Fixture::new(1);
        f.topics.access = Some(authorizer.access(Default::default()));
        let caller = |name: &str| Caller {
            principal: Principal::user(name),
            host: "127.0.0.1".into(),
        };
        let mut join = join_args("a");
        join.topic_names = None;
        join.regex = Some("t.*".into());
        join.caller = Some(caller("bob"));
        let a = f.hb(join.clone()).unwrap();
        assert_eq!(parts(&a), Some(vec![]));
        assert_eq!(f.g.regexes.get("t.*"), Some(&BTreeSet::new()));
        // A member that may describe `t` subscribes with the same regex: it resolves
        // with that member's ACLs now.
        join.member_id = "b".into();
        join.caller = Some(caller("admin"));
        f.hb(join).unwrap();
        assert_eq!(
            f.g.regexes.get("t.*"),
            Some(&BTreeSet::from(["t".to_string()]))
        );
    }
}
