//! Members using the classic protocol inside a consumer group (KIP-848's online
//! migration; Kafka's `classicGroup*ToConsumerGroup`): their JoinGroup, SyncGroup,
//! Heartbeat and LeaveGroup are served by the consumer group (the server assignor picks
//! their partitions, their member epoch is their generation), and the conversions of a
//! whole group between the two types (`from_classic`, `classic_seeds`).

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use spate_net::messages::consumer_protocol_assignment::TopicPartition;
use spate_net::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription};
use spate_net::{Encoder, ErrorCode, Message};

use super::super::member::{insert, Assignment, ClassicProtocols, ConsumerMember, MemberState};
use super::super::records::GroupRecord;
use super::super::topics::TopicsView;
use super::{ConsumerGroup, ConsumerGroupSettings, HeartbeatArgs};
use crate::group::membership::{ClassicSeed, Group, JoinArgs, INCONSISTENT_GROUP_PROTOCOL};

/// The protocol type of consumers (`ConsumerProtocol.PROTOCOL_TYPE`).
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";
/// JoinGroup v4 introduced MEMBER_ID_REQUIRED (KIP-394).
const MEMBER_ID_REQUIRED_FROM: i16 = 4;
/// The highest ConsumerProtocol versions (subscription and assignment); a newer version
/// is read as this one, as Kafka reads it.
const PROTOCOL_MAX_VERSION: i16 = 3;

/// A classic JoinGroup served by a consumer group.
#[derive(Debug, Clone, PartialEq)]
pub enum ClassicJoined {
    /// KIP-394: the member must join again with this id.
    MemberIdRequired(String),
    Joined {
        member_id: String,
        /// The member epoch.
        generation: i32,
        protocol_name: String,
        records: Vec<GroupRecord>,
        /// The member took over the instance id of a member using the consumer protocol.
        took_over_consumer: bool,
    },
}

/// A classic JoinGroup's fields, as the membership code takes them.
pub type ClassicJoin = JoinArgs;

/// The version a ConsumerProtocol message starts with, capped at the highest known.
fn version_of(data: &[u8]) -> Option<i16> {
    let v = i16::from_be_bytes([*data.first()?, *data.get(1)?]);
    (v >= 0).then_some(v.min(PROTOCOL_MAX_VERSION))
}

/// A ConsumerProtocol subscription (version, then the fields); None if malformed.
pub fn decode_subscription(data: &Bytes) -> Option<ConsumerProtocolSubscription> {
    let version = version_of(data)?;
    let mut rest = data.slice(2..);
    ConsumerProtocolSubscription::decode(&mut rest, version).ok()
}

/// A ConsumerProtocol assignment; an empty one (a member that has not synced) is empty.
pub fn decode_assignment(data: &Bytes) -> Option<ConsumerProtocolAssignment> {
    if data.is_empty() {
        return Some(ConsumerProtocolAssignment::default());
    }
    let version = version_of(data)?;
    let mut rest = data.slice(2..);
    ConsumerProtocolAssignment::decode(&mut rest, version).ok()
}

/// `a` as a ConsumerProtocol assignment of `version` (the version of the member's
/// subscription, as Kafka answers).
pub fn encode_assignment(a: &Assignment, topics: &TopicsView, version: i16) -> Bytes {
    let version = version.clamp(0, PROTOCOL_MAX_VERSION);
    let assignment = ConsumerProtocolAssignment {
        assigned_partitions: a
            .iter()
            .filter_map(|(id, parts)| {
                Some(TopicPartition {
                    topic: topics.name_of(id)?.to_string(),
                    partitions: parts.iter().copied().collect(),
                })
            })
            .collect(),
        user_data: None,
    };
    let mut e = Encoder::new();
    e.put_i16(version);
    assignment.encode(&mut e, version);
    let mut out = BytesMut::new();
    for chunk in e.finish() {
        out.extend_from_slice(&chunk);
    }
    out.freeze()
}

/// Named topic partitions as an assignment by topic id (unknown topics left out).
fn by_id<'a>(
    tps: impl Iterator<Item = (&'a String, &'a Vec<i32>)>,
    topics: &TopicsView,
) -> Assignment {
    let mut a = Assignment::new();
    for (name, parts) in tps {
        if let Some((id, _)) = topics.by_name.get(name) {
            for p in parts {
                insert(&mut a, *id, *p);
            }
        }
    }
    a
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names.dedup();
    names
}

impl ConsumerGroup {
    /// Kafka's `supportsClassicProtocols`: the consumer protocol type and a protocol every
    /// classic member supports.
    fn supports_classic(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        protocol_type == CONSUMER_PROTOCOL_TYPE
            && protocols.iter().any(|(name, _)| {
                self.members
                    .values()
                    .filter_map(|m| m.classic.as_ref())
                    .all(|c| c.protocols.iter().any(|(n, _)| n == name))
            })
    }

    /// Kafka's `validateConsumerGroupMember` plus the classic-protocol check.
    fn classic_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<&ConsumerMember, ErrorCode> {
        let m = match instance_id {
            None => self.members.get(member_id),
            Some(instance) => {
                let holder = self
                    .members
                    .values()
                    .find(|m| m.instance_id.as_deref() == Some(instance));
                if holder.is_some_and(|m| !member_id.is_empty() && m.member_id != member_id) {
                    return Err(ErrorCode::FencedInstanceId);
                }
                holder
            }
        };
        m.filter(|m| m.classic.is_some())
            .ok_or(ErrorCode::UnknownMemberId)
    }

    /// Kafka's `classicGroupJoinToConsumerGroup`: the member joins (or rejoins) as a
    /// consumer-group member, its subscription from the embedded ConsumerProtocol, and
    /// reconciles toward its target at once; its epoch is the generation it is told.
    pub fn classic_join(
        &mut self,
        req: ClassicJoin,
        topics: &TopicsView,
        settings: &ConsumerGroupSettings,
        now: Instant,
        rebalances: &mut u64,
    ) -> Result<ClassicJoined, i16> {
        let unknown = req.member_id.is_empty();
        let member_id = if unknown {
            crate::random_id::base64_uuid()
        } else {
            req.member_id.clone()
        };
        if !self.members.contains_key(&member_id) && self.members.len() >= settings.max_size {
            return Err(ErrorCode::GroupMaxSizeReached.code());
        }
        if !self.supports_classic(&req.protocol_type, &req.protocols) {
            return Err(INCONSISTENT_GROUP_PROTOCOL);
        }
        if unknown && req.group_instance_id.is_none() && req.version >= MEMBER_ID_REQUIRED_FROM {
            return Ok(ClassicJoined::MemberIdRequired(member_id));
        }
        let Some(subscription) = req
            .protocols
            .first()
            .and_then(|(_, m)| decode_subscription(m))
        else {
            return Err(INCONSISTENT_GROUP_PROTOCOL);
        };
        // A static member joining without its member id takes its instance id's place;
        // with another member id than the holder's it is fenced.
        let holder = req.group_instance_id.as_deref().and_then(|instance| {
            self.members
                .values()
                .find(|m| m.instance_id.as_deref() == Some(instance))
                .map(|m| (m.member_id.clone(), m.classic.is_none()))
        });
        let takes_over = holder.as_ref().is_some_and(|(h, _)| *h != member_id);
        let took_over_consumer = takes_over && holder.is_some_and(|(_, consumer)| consumer);
        if takes_over && !unknown {
            return Err(ErrorCode::FencedInstanceId.code());
        }
        let owned = by_id(
            subscription
                .owned_partitions
                .iter()
                .map(|tp| (&tp.topic, &tp.partitions)),
            topics,
        );
        let classic = ClassicProtocols {
            session_timeout_ms: req.session_timeout_ms,
            protocols: req.protocols,
        };
        let protocol_name = classic.protocol_name().to_string();
        let args = HeartbeatArgs {
            member_id,
            member_epoch: 0,
            instance_id: req.group_instance_id,
            rack_id: subscription.rack_id,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            topic_names: Some(sorted(subscription.topics)),
            regex: None,
            assignor: None,
            owned: Some(owned),
            client_id: req.client_id,
            client_host: req.client_host,
            caller: None,
            classic: Some(classic),
            takes_over,
        };
        let (reply, records) = self
            .heartbeat(args, topics, settings, now, rebalances)
            .map_err(|e| e.code.code())?;
        // It must sync within its rebalance timeout.
        if let Some(d) = self.deadlines.get_mut(&reply.member_id) {
            d.classic = Some(now + Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64));
        }
        Ok(ClassicJoined::Joined {
            member_id: reply.member_id,
            generation: reply.member_epoch,
            protocol_name,
            records,
            took_over_consumer,
        })
    }

    /// Kafka's `classicGroupSyncToConsumerGroup`: the member's current assignment, as a
    /// ConsumerProtocol assignment; REBALANCE_IN_PROGRESS when a newer epoch awaits it.
    pub fn classic_sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol: (Option<&str>, Option<&str>),
        topics: &TopicsView,
        now: Instant,
    ) -> Result<Bytes, i16> {
        let m = self
            .classic_member(member_id, instance_id)
            .map_err(ErrorCode::code)?;
        if generation != m.member_epoch {
            return Err(ErrorCode::IllegalGeneration.code());
        }
        let Some(classic) = m.classic.as_ref() else {
            return Err(ErrorCode::UnknownMemberId.code());
        };
        let (ptype, pname) = protocol;
        if ptype.is_some_and(|t| t != CONSUMER_PROTOCOL_TYPE)
            || pname.is_some_and(|n| n != classic.protocol_name())
        {
            return Err(INCONSISTENT_GROUP_PROTOCOL);
        }
        let id = m.member_id.clone();
        if self.group_epoch > m.member_epoch && m.state != MemberState::UnrevokedPartitions {
            self.rejoin_deadline(&id, now);
            return Err(ErrorCode::RebalanceInProgress.code());
        }
        let version = classic
            .protocols
            .first()
            .and_then(|(_, meta)| version_of(meta))
            .unwrap_or(0);
        let assignment = encode_assignment(&m.assigned, topics, version);
        let session = super::session_timeout(m, Duration::ZERO);
        if let Some(d) = self.deadlines.get_mut(&id) {
            d.classic = None;
            d.session = now + session;
        }
        Ok(assignment)
    }

    /// Kafka's `classicGroupHeartbeatToConsumerGroup`: REBALANCE_IN_PROGRESS when the
    /// member must rejoin: the group moved to a newer epoch, it must revoke partitions, or
    /// the partitions it waits for were released.
    pub fn classic_heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> ErrorCode {
        let m = match self.classic_member(member_id, instance_id) {
            Ok(m) => m,
            Err(code) => return code,
        };
        if generation != m.member_epoch {
            return ErrorCode::IllegalGeneration;
        }
        let rejoin = m.member_epoch < self.group_epoch
            || m.state == MemberState::UnrevokedPartitions
            || m.state == MemberState::UnreleasedPartitions && !self.waits_on_unreleased(m);
        let id = m.member_id.clone();
        let session = super::session_timeout(m, Duration::ZERO);
        if let Some(d) = self.deadlines.get_mut(&id) {
            d.session = now + session;
        }
        if rejoin {
            self.rejoin_deadline(&id, now);
            ErrorCode::RebalanceInProgress
        } else {
            ErrorCode::None
        }
    }

    /// A member told to rejoin must within its rebalance timeout (an earlier deadline
    /// stands).
    fn rejoin_deadline(&mut self, member_id: &str, now: Instant) {
        let timeout = self
            .members
            .get(member_id)
            .map_or(0, |m| m.rebalance_timeout_ms.max(0) as u64);
        if let Some(d) = self.deadlines.get_mut(member_id) {
            d.classic
                .get_or_insert(now + Duration::from_millis(timeout));
        }
    }

    /// Kafka's `waitingOnUnreleasedPartition`: a partition of its target is still held by
    /// another member.
    fn waits_on_unreleased(&self, m: &ConsumerMember) -> bool {
        self.targets.get(&m.member_id).is_some_and(|target| {
            target.iter().any(|(t, parts)| {
                parts.iter().any(|p| {
                    !m.assigned.get(t).is_some_and(|a| a.contains(p))
                        && self
                            .owners
                            .get(&(*t, *p))
                            .is_some_and(|o| *o != m.member_id)
                })
            })
        })
    }

    /// Kafka's `classicGroupLeaveToConsumerGroup`: one code per (member id, instance id);
    /// the members that left are removed and the group epoch bumped once.
    pub fn classic_leave(
        &mut self,
        members: &[(String, Option<String>)],
        topics: &TopicsView,
    ) -> (Vec<i16>, Vec<GroupRecord>) {
        let mut out = Vec::new();
        let mut codes = Vec::with_capacity(members.len());
        for (member_id, instance_id) in members {
            match self.classic_member(member_id, instance_id.as_deref()) {
                Ok(m) => {
                    let id = m.member_id.clone();
                    self.remove_member_state(&id, &mut out, true);
                    codes.push(0);
                }
                Err(code) => codes.push(code.code()),
            }
        }
        if !out.is_empty() {
            self.refresh_regexes(topics, &mut out);
            let hash = self.metadata_hash(topics);
            self.bump_epoch(hash, &mut out);
        }
        (codes, out)
    }

    /// Kafka's `validateOnlineDowngradeWithReplacedMemberId`, once a classic static member
    /// took over from a consumer-protocol member: every member now uses the classic
    /// protocol and they fit a classic group.
    pub fn downgrades_after_takeover(&self, classic_max_size: usize) -> bool {
        self.members.len() <= classic_max_size && self.members.values().all(|m| m.classic.is_some())
    }

    /// Kafka's `validateOnlineDowngradeWithFencedMember`: whether the group turns classic
    /// when `leaving` goes: it is the last member using the consumer protocol, others
    /// remain, and they fit a classic group.
    pub fn downgrades_without(&self, leaving: &str, classic_max_size: usize) -> bool {
        self.members
            .get(leaving)
            .is_some_and(|m| m.classic.is_none())
            && self.members.len() > 1
            && self.members.len() - 1 <= classic_max_size
            && self
                .members
                .values()
                .all(|m| m.member_id == leaving || m.classic.is_some())
    }

    /// Kafka's `ConsumerGroup.fromClassicGroup`: the classic group's members become
    /// members using the classic protocol at the generation as their epoch, holding (and
    /// targeted with) their last assignment; with the records that create the group.
    /// None if a member's embedded ConsumerProtocol cannot be read.
    pub fn from_classic(
        classic: &Group,
        topics: &TopicsView,
        now: Instant,
        session_timeout: Duration,
    ) -> Option<(ConsumerGroup, Vec<GroupRecord>)> {
        let epoch = classic.generation;
        let mut g = ConsumerGroup::new(&classic.id);
        g.group_epoch = epoch;
        g.assignment_epoch = epoch;
        for m in classic.members.values() {
            let metadata = match classic.protocol.as_deref() {
                Some(p) => m.metadata(p),
                None => m
                    .protocols
                    .first()
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default(),
            };
            let subscription = decode_subscription(&metadata)?;
            let assignment = decode_assignment(&m.assignment)?;
            let assigned = by_id(
                assignment
                    .assigned_partitions
                    .iter()
                    .map(|tp| (&tp.topic, &tp.partitions)),
                topics,
            );
            let mut member = ConsumerMember::new(&m.id);
            member.instance_id = m.instance_id.clone();
            member.rack_id = subscription.rack_id;
            member.client_id = m.client_id.clone();
            member.client_host = m.client_host.clone();
            member.subscribed_topic_names = sorted(subscription.topics);
            member.rebalance_timeout_ms = m.rebalance_timeout_ms();
            member.member_epoch = epoch;
            member.previous_member_epoch = epoch;
            member.assigned = assigned.clone();
            member.classic = Some(ClassicProtocols {
                session_timeout_ms: m.session_timeout_ms(),
                protocols: m.protocols.clone(),
            });
            g.targets.insert(m.id.clone(), assigned);
            g.members.insert(m.id.clone(), member);
        }
        g.metadata_hash = g.metadata_hash(topics);
        g.rebuild_ownership();
        g.restart_sessions(now, session_timeout);
        let mut out: Vec<GroupRecord> = g
            .members
            .values()
            .cloned()
            .map(GroupRecord::Member)
            .collect();
        out.push(GroupRecord::Metadata {
            epoch,
            metadata_hash: g.metadata_hash,
        });
        out.extend(
            g.targets
                .iter()
                .map(|(id, t)| GroupRecord::TargetMember(id.clone(), t.clone())),
        );
        out.push(GroupRecord::TargetMetadata(epoch));
        out.extend(
            g.members
                .values()
                .cloned()
                .map(GroupRecord::CurrentAssignment),
        );
        Some((g, out))
    }

    /// Kafka's `ClassicGroup.fromConsumerGroup`: the members but `leaving` as classic
    /// members, each with its target assignment as a ConsumerProtocol assignment (the
    /// classic group is built by `Group::from_consumer`).
    pub fn classic_seeds(&self, leaving: &str, topics: &TopicsView) -> Vec<ClassicSeed> {
        self.members
            .values()
            .filter(|m| m.member_id != leaving)
            .filter_map(|m| {
                let c = m.classic.as_ref()?;
                let target = self.targets.get(&m.member_id).cloned().unwrap_or_default();
                // Kafka encodes with the version of the selected protocol's subscription;
                // a consumer sends the same version for all its protocols.
                let version = c
                    .protocols
                    .first()
                    .and_then(|(_, meta)| version_of(meta))
                    .unwrap_or(0);
                Some(ClassicSeed {
                    id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: c.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocols: c.protocols.clone(),
                    assignment: encode_assignment(&target, topics, version),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::consumer::member::TopicId;
    use crate::group::membership::GroupLimits;
    use bytes::Buf;
    use std::collections::BTreeMap;

    const T: TopicId = [7; 16];

    fn prefix(data: &Bytes) -> i16 {
        data.clone().get_i16()
    }

    fn topics() -> TopicsView {
        TopicsView {
            by_name: BTreeMap::from([("t".to_string(), (T, 4))]),
            access: None,
        }
    }

    fn settings() -> ConsumerGroupSettings {
        ConsumerGroupSettings {
            session_timeout: Duration::from_secs(45),
            heartbeat_interval_ms: 5000,
            max_size: 10,
            assignors: vec![super::super::super::assignor::Assignor::Uniform],
        }
    }

    /// A ConsumerProtocol subscription v1 to `t` owning `owned`.
    fn subscription(owned: &[i32]) -> Bytes {
        let s = ConsumerProtocolSubscription {
            topics: vec!["t".into()],
            owned_partitions: if owned.is_empty() {
                vec![]
            } else {
                vec![
                    spate_net::messages::consumer_protocol_subscription::TopicPartition {
                        topic: "t".into(),
                        partitions: owned.to_vec(),
                    },
                ]
            },
            ..Default::default()
        };
        let mut e = Encoder::new();
        e.put_i16(1);
        s.encode(&mut e, 1);
        let mut out = BytesMut::new();
        for c in e.finish() {
            out.extend_from_slice(&c);
        }
        out.freeze()
    }

    fn join(member_id: &str, owned: &[i32]) -> ClassicJoin {
        JoinArgs {
            member_id: member_id.into(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            protocol_type: CONSUMER_PROTOCOL_TYPE.into(),
            protocols: vec![("range".into(), subscription(owned))],
            version: 9,
        }
    }

    fn parts(g: &ConsumerGroup, id: &str) -> Vec<i32> {
        g.members[id]
            .assigned
            .get(&T)
            .map(|p| p.iter().copied().collect())
            .unwrap_or_default()
    }

    fn joined(r: Result<ClassicJoined, i16>) -> (String, i32) {
        match r.unwrap() {
            ClassicJoined::Joined {
                member_id,
                generation,
                ..
            } => (member_id, generation),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn protocol_codecs_round_trip() {
        let mut a = Assignment::new();
        insert(&mut a, T, 1);
        insert(&mut a, T, 3);
        insert(&mut a, [9; 16], 0); // unknown topic: left out
        let bytes = encode_assignment(&a, &topics(), 7);
        assert_eq!(prefix(&bytes), 3);
        let back = decode_assignment(&bytes).unwrap();
        assert_eq!(back.assigned_partitions.len(), 1);
        assert_eq!(back.assigned_partitions[0].partitions, vec![1, 3]);
        assert!(decode_assignment(&Bytes::new())
            .unwrap()
            .assigned_partitions
            .is_empty());
        assert!(decode_subscription(&Bytes::from_static(&[0, 1, 0, 0, 0, 9])).is_none());
        assert!(decode_subscription(&Bytes::from_static(&[0xff, 0xff])).is_none());
        assert_eq!(
            decode_subscription(&subscription(&[2])).unwrap().topics,
            vec!["t".to_string()]
        );
    }

    #[test]
    fn classic_members_join_sync_heartbeat_and_leave() {
        let (topics, settings, now) = (topics(), settings(), Instant::now());
        let mut g = ConsumerGroup::new("g");
        let mut n = 0;
        // A member without an id is asked to come back with one (KIP-394).
        let ClassicJoined::MemberIdRequired(id) = g
            .classic_join(join("", &[]), &topics, &settings, now, &mut n)
            .unwrap()
        else {
            panic!("member id required expected");
        };
        let (a, gen_a) = joined(g.classic_join(join(&id, &[]), &topics, &settings, now, &mut n));
        assert_eq!((a.as_str(), gen_a), (id.as_str(), 1));
        let sync = g
            .classic_sync(&a, None, 1, (Some("consumer"), Some("range")), &topics, now)
            .unwrap();
        let got = decode_assignment(&sync).unwrap();
        assert_eq!(got.assigned_partitions[0].partitions, vec![0, 1, 2, 3]);
        assert_eq!(g.classic_heartbeat(&a, None, 1, now), ErrorCode::None);
        assert_eq!(
            g.classic_heartbeat(&a, None, 2, now),
            ErrorCode::IllegalGeneration
        );
        assert_eq!(
            g.classic_sync(
                &a,
                None,
                1,
                (Some("consumer"), Some("roundrobin")),
                &topics,
                now
            ),
            Err(INCONSISTENT_GROUP_PROTOCOL)
        );
        // A second member: a must give up two partitions, and learns it from its heartbeat.
        let (b, gen_b) = joined(g.classic_join(join("b", &[]), &topics, &settings, now, &mut n));
        assert_eq!(gen_b, 2);
        assert_eq!(
            g.classic_heartbeat(&a, None, 1, now),
            ErrorCode::RebalanceInProgress
        );
        // a rejoins still owning everything: it stays at epoch 1 with its kept half.
        let (_, gen) =
            joined(g.classic_join(join(&a, &[0, 1, 2, 3]), &topics, &settings, now, &mut n));
        assert_eq!(gen, 1);
        assert_eq!(parts(&g, &a).len(), 2);
        let kept = parts(&g, &a);
        // It revoked: the next join moves it to epoch 2.
        let (_, gen) = joined(g.classic_join(join(&a, &kept), &topics, &settings, now, &mut n));
        assert_eq!(gen, 2);
        assert_eq!(g.classic_heartbeat(&a, None, 2, now), ErrorCode::None);
        // b waited for the released partitions: its heartbeat tells it to rejoin.
        assert_eq!(
            g.classic_heartbeat(&b, None, 2, now),
            ErrorCode::RebalanceInProgress
        );
        joined(g.classic_join(join(&b, &[]), &topics, &settings, now, &mut n));
        assert_eq!(parts(&g, &b).len(), 2);
        assert_eq!(g.state(), "Stable");
        // Commits use the generation.
        assert_eq!(g.check_commit(&a, 2, 2, Some(&T), 0), Ok(()));
        assert_eq!(
            g.check_commit(&a, 1, 8, Some(&T), 0),
            Err(ErrorCode::IllegalGeneration)
        );
        // Leaving: one epoch bump; an unknown member is told so.
        let epoch = g.group_epoch;
        let (codes, records) = g.classic_leave(&[(b.clone(), None), ("x".into(), None)], &topics);
        assert_eq!(codes, vec![0, ErrorCode::UnknownMemberId.code()]);
        assert!(records.contains(&GroupRecord::MemberTombstone(b)));
        assert_eq!(g.group_epoch, epoch + 1);
        // A classic member's session is its JoinGroup's (10 s), not the group's 45 s.
        assert_eq!(g.expired(now + Duration::from_secs(11)), vec![a]);
    }

    #[test]
    fn a_classic_static_member_takes_over_a_consumer_member() {
        let (topics, settings, now) = (topics(), settings(), Instant::now());
        let mut g = ConsumerGroup::new("g");
        let mut n = 0;
        let hb = HeartbeatArgs {
            member_id: "c".into(),
            instance_id: Some("i".into()),
            rebalance_timeout_ms: 30_000,
            topic_names: Some(vec!["t".into()]),
            owned: Some(Assignment::new()),
            ..Default::default()
        };
        g.heartbeat(hb, &topics, &settings, now, &mut n).unwrap();
        joined(g.classic_join(join("b", &[]), &topics, &settings, now, &mut n));
        let held = g.targets["c"].clone();
        // Known member id, another holder: fenced.
        let mut fenced = join("x", &[]);
        fenced.group_instance_id = Some("i".into());
        assert_eq!(
            g.classic_join(fenced, &topics, &settings, now, &mut n),
            Err(ErrorCode::FencedInstanceId.code())
        );
        // Without a member id it takes the place, and the target, of the consumer member.
        let mut takeover = join("", &[]);
        takeover.group_instance_id = Some("i".into());
        let r = g
            .classic_join(takeover, &topics, &settings, now, &mut n)
            .unwrap();
        let ClassicJoined::Joined {
            member_id,
            took_over_consumer,
            ..
        } = r
        else {
            panic!("{r:?}");
        };
        assert!(took_over_consumer);
        assert!(!g.members.contains_key("c"));
        assert_eq!(g.targets[&member_id], held);
        assert!(g.downgrades_after_takeover(10));
    }

    #[test]
    fn a_foreign_protocol_is_refused() {
        let (topics, settings, now) = (topics(), settings(), Instant::now());
        let mut g = ConsumerGroup::new("g");
        let mut n = 0;
        joined(g.classic_join(join("a", &[]), &topics, &settings, now, &mut n));
        let mut other = join("b", &[]);
        other.protocols = vec![("roundrobin".into(), subscription(&[]))];
        assert_eq!(
            g.classic_join(other, &topics, &settings, now, &mut n),
            Err(INCONSISTENT_GROUP_PROTOCOL)
        );
        let mut connect = join("b", &[]);
        connect.protocol_type = "connect".into();
        assert_eq!(
            g.classic_join(connect, &topics, &settings, now, &mut n),
            Err(INCONSISTENT_GROUP_PROTOCOL)
        );
    }

    #[test]
    fn upgrade_then_downgrade_keeps_members_and_assignments() {
        let (topics, settings, now) = (topics(), settings(), Instant::now());
        let limits = GroupLimits {
            min_session_timeout_ms: 10,
            max_session_timeout_ms: 600_000,
            initial_rebalance_delay: Duration::ZERO,
            max_size: 10,
        };
        // A stable classic group: a owns 0-1, b owns 2-3, at generation 2.
        let mut classic = Group::new("g");
        let join_classic = |classic: &mut Group, member_id: &str| {
            let (tx, rx) = flume::bounded(1);
            let mut args = join(member_id, &[]);
            args.version = 3;
            classic.join(args, &limits, now, tx);
            rx
        };
        let a = join_classic(&mut classic, "").try_recv().unwrap().member_id;
        let rx_b = join_classic(&mut classic, "");
        join_classic(&mut classic, &a).try_recv().unwrap();
        let b = rx_b.try_recv().unwrap().member_id;
        let ids = [a.clone(), b.clone()];
        let assignment = |p: &[i32]| {
            let mut x = Assignment::new();
            for q in p {
                insert(&mut x, T, *q);
            }
            encode_assignment(&x, &topics, 1)
        };
        let generation = classic.generation;
        assert_eq!(generation, 2);
        let (tx, _rx) = flume::bounded(2);
        classic.sync(
            &a,
            None,
            generation,
            (None, None),
            vec![
                (a.clone(), assignment(&[0, 1])),
                (b.clone(), assignment(&[2, 3])),
            ],
            now,
            tx,
        );
        let (mut g, records) =
            ConsumerGroup::from_classic(&classic, &topics, now, settings.session_timeout).unwrap();
        assert_eq!(
            (g.group_epoch, g.assignment_epoch),
            (generation, generation)
        );
        assert_eq!(parts(&g, &ids[0]), vec![0, 1]);
        assert_eq!(parts(&g, &ids[1]), vec![2, 3]);
        assert!(g.members.values().all(|m| m.classic.is_some()));
        assert_eq!(records.len(), 2 + 1 + 2 + 1 + 2);
        // The classic members carry on at their generation.
        assert_eq!(
            g.classic_heartbeat(&ids[0], None, generation, now),
            ErrorCode::None
        );
        // A consumer-protocol member joins: the epoch moves on, a classic member must rejoin.
        let mut n = 0;
        let hb = HeartbeatArgs {
            member_id: "new".into(),
            rebalance_timeout_ms: 30_000,
            topic_names: Some(vec!["t".into()]),
            owned: Some(Assignment::new()),
            ..Default::default()
        };
        g.heartbeat(hb, &topics, &settings, now, &mut n).unwrap();
        assert_eq!(
            g.classic_heartbeat(&ids[0], None, generation, now),
            ErrorCode::RebalanceInProgress
        );
        // When it leaves, the rest are classic: the group may turn classic again.
        assert!(g.downgrades_without("new", 10));
        assert!(!g.downgrades_without("new", 1));
        assert!(!g.downgrades_without(&ids[0], 10));
        assert!(!g.downgrades_after_takeover(10));
        let seeds = g.classic_seeds("new", &topics);
        let back = Group::from_consumer("g", g.group_epoch, seeds, now, Some(&limits));
        assert_eq!(back.members.len(), 2);
        assert_eq!(back.protocol.as_deref(), Some("range"));
        assert_eq!(back.state.name(), "PreparingRebalance");
        // Each keeps its target assignment (as the classic group's current one).
        let got = decode_assignment(&back.members[&ids[1]].assignment).unwrap();
        let target: Vec<i32> = g.targets[&ids[1]][&T].iter().copied().collect();
        assert_eq!(got.assigned_partitions[0].partitions, target);
    }
}
