//! The classic consumer-group protocol for one group: members, generations, the
//! rebalance state machine (Empty → PreparingRebalance → CompletingRebalance → Stable),
//! static membership and the KIP-394 two-step join. Kafka's GroupCoordinator is the
//! reference. No I/O here: answers go to the waiting requests' reply channels.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use spate_net::messages::join_group_response::JoinGroupResponseMember;
use spate_net::messages::{JoinGroupResponse, SyncGroupResponse};
use spate_net::ErrorCode;

/// JoinGroup v4 introduced MEMBER_ID_REQUIRED (KIP-394).
const MEMBER_ID_REQUIRED_FROM: i16 = 4;
/// JoinGroup v9 introduced skip_assignment (KIP-814).
const SKIP_ASSIGNMENT_FROM: i16 = 9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

pub type JoinReply = flume::Sender<JoinGroupResponse>;
pub type SyncReply = flume::Sender<SyncGroupResponse>;

/// Limits from the broker config.
#[derive(Debug, Clone, Copy)]
pub struct GroupLimits {
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub initial_rebalance_delay: Duration,
    pub max_size: usize,
}

/// What a JoinGroup asks.
pub struct JoinArgs {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub version: i16,
}

pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    last_heartbeat: Instant,
    /// Join order; the first joined member leads when the leader is gone.
    seq: u64,
    join_waiter: Option<JoinReply>,
    sync_waiter: Option<SyncReply>,
}

/// A member of a consumer group that turns classic (Kafka's `ClassicGroup.fromConsumerGroup`).
pub struct ClassicSeed {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocols: Vec<(String, Bytes)>,
    /// Its target assignment, as a ConsumerProtocol assignment.
    pub assignment: Bytes,
}

impl Member {
    pub fn session_timeout_ms(&self) -> i32 {
        self.session_timeout.as_millis().min(i32::MAX as u128) as i32
    }

    pub fn rebalance_timeout_ms(&self) -> i32 {
        self.rebalance_timeout.as_millis().min(i32::MAX as u128) as i32
    }

    /// The member's metadata for `protocol`.
    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Member ids handed out by MEMBER_ID_REQUIRED, valid until the deadline.
    pending: HashMap<String, Instant>,
    /// Static members: instance id → member id.
    static_members: HashMap<String, String>,
    next_seq: u64,
    /// Since when the group has had no members (Kafka drops such a group, unless it has
    /// committed offsets, at its next offset-expiration pass).
    pub empty_since: Option<Instant>,
    rebalance_deadline: Option<Instant>,
    /// A new group waits this long for more members before it completes its first join.
    initial_delay_until: Option<Instant>,
    sync_deadline: Option<Instant>,
}

/// Kafka's codes 23 and 26, absent from the shared error table the codec is generated from.
pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
pub const INVALID_SESSION_TIMEOUT: i16 = 26;

fn join_error(member_id: &str, code: i16) -> JoinGroupResponse {
    JoinGroupResponse {
        error_code: code,
        generation_id: -1,
        member_id: member_id.to_string(),
        ..Default::default()
    }
}

fn sync_error(code: i16) -> SyncGroupResponse {
    SyncGroupResponse {
        error_code: code,
        ..Default::default()
    }
}

/// A fresh member id: the client id and a random suffix, as Kafka makes them.
fn new_member_id(client_id: &str) -> String {
    let mut r = [0u8; 16];
    // SAFETY: getrandom fills the buffer it is given.
    let n = unsafe { libc::getrandom(r.as_mut_ptr().cast(), r.len(), 0) };
    if n != r.len() as isize {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        r = t.to_le_bytes();
    }
    let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{client_id}-{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

impl Group {
    pub fn new(id: &str) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            static_members: HashMap::new(),
            next_seq: 0,
            empty_since: None,
            rebalance_deadline: None,
            initial_delay_until: None,
            sync_deadline: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }

    /// Protocols every member (and the candidate list, if given) supports.
    fn common_protocols(&self, candidate: Option<&[(String, Bytes)]>) -> HashSet<String> {
        let mut sets = self.members.values().map(|m| {
            m.protocols
                .iter()
                .map(|(n, _)| n.clone())
                .collect::<HashSet<_>>()
        });
        let mut common = match candidate {
            Some(c) => c.iter().map(|(n, _)| n.clone()).collect::<HashSet<_>>(),
            None => match sets.next() {
                Some(s) => s,
                None => return HashSet::new(),
            },
        };
        for s in sets {
            common.retain(|n| s.contains(n));
        }
        common
    }

    /// The protocol every member supports with the most first-choice votes (Kafka's rule).
    fn select_protocol(&self) -> Option<String> {
        let common = self.common_protocols(None);
        let mut votes: BTreeMap<String, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((name, _)) = m.protocols.iter().find(|(n, _)| common.contains(n)) {
                *votes.entry(name.clone()).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
            .map(|(n, _)| n)
    }

    /// A consumer group whose remaining members all use the classic protocol turns
    /// classic (KIP-848's online downgrade, Kafka's `convertToClassicGroup`): a stable
    /// group at the consumer group's epoch holding their assignments; it rebalances at
    /// once when `rebalance` has the limits (a member left; not when a static member took
    /// over another's place).
    pub fn from_consumer(
        id: &str,
        generation: i32,
        seeds: Vec<ClassicSeed>,
        now: Instant,
        rebalance: Option<&GroupLimits>,
    ) -> Group {
        let mut g = Group::new(id);
        g.state = GroupState::Stable;
        g.generation = generation;
        g.protocol_type = Some("consumer".to_string());
        for s in seeds {
            if let Some(instance) = &s.instance_id {
                g.static_members.insert(instance.clone(), s.id.clone());
            }
            g.next_seq += 1;
            let member = Member {
                id: s.id.clone(),
                instance_id: s.instance_id,
                client_id: s.client_id,
                client_host: s.client_host,
                session_timeout: Duration::from_millis(s.session_timeout_ms.max(0) as u64),
                rebalance_timeout: Duration::from_millis(s.rebalance_timeout_ms.max(0) as u64),
                protocols: s.protocols,
                assignment: s.assignment,
                last_heartbeat: now,
                seq: g.next_seq,
                join_waiter: None,
                sync_waiter: None,
            };
            g.members.insert(s.id, member);
        }
        g.protocol = g.select_protocol();
        if let Some(limits) = rebalance {
            g.prepare_rebalance(now, limits);
        }
        g
    }

    /// The coordinator drops the group (its partition's leadership ended): members
    /// waiting in a join or a sync are told NOT_COORDINATOR and look the coordinator up
    /// again (Kafka's `onUnloaded`).
    pub fn unload(&mut self) {
        self.answer_waiters(ErrorCode::NotCoordinator.code());
    }

    /// Every member waiting in a join or a sync is answered `code` (the group is unloaded,
    /// or converted to a consumer group).
    pub fn answer_waiters(&mut self, code: i16) {
        for (id, m) in &mut self.members {
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(join_error(id, code));
            }
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(sync_error(code));
            }
        }
    }

    pub fn join(&mut self, args: JoinArgs, limits: &GroupLimits, now: Instant, reply: JoinReply) {
        if args.session_timeout_ms < limits.min_session_timeout_ms
            || args.session_timeout_ms > limits.max_session_timeout_ms
        {
            let _ = reply.send(join_error(&args.member_id, INVALID_SESSION_TIMEOUT));
            return;
        }
        if args.protocols.is_empty()
            || args.protocol_type.is_empty()
            || (!self.members.is_empty()
                && (self.protocol_type.as_deref() != Some(args.protocol_type.as_str())
                    || self.common_protocols(Some(&args.protocols)).is_empty()))
        {
            let _ = reply.send(join_error(&args.member_id, INCONSISTENT_GROUP_PROTOCOL));
            return;
        }
        if args.member_id.is_empty() {
            self.join_new_member(args, limits, now, reply);
        } else {
            self.join_known_member(args, limits, now, reply);
        }
    }

    fn join_new_member(
        &mut self,
        args: JoinArgs,
        limits: &GroupLimits,
        now: Instant,
        reply: JoinReply,
    ) {
        let new_id = new_member_id(&args.client_id);
        if let Some(instance) = args.group_instance_id.clone() {
            if let Some(old_id) = self.static_members.get(&instance).cloned() {
                self.replace_static_member(&old_id, new_id, args, limits, now, reply);
                return;
            }
        } else if args.version >= MEMBER_ID_REQUIRED_FROM {
            if self.members.len() + self.pending.len() >= limits.max_size {
                let _ = reply.send(join_error("", ErrorCode::GroupMaxSizeReached.code()));
                return;
            }
            self.pending.insert(
                new_id.clone(),
                now + Duration::from_millis(args.session_timeout_ms.max(0) as u64),
            );
            let _ = reply.send(join_error(&new_id, ErrorCode::MemberIdRequired.code()));
            return;
        }
        if self.members.len() >= limits.max_size {
            let _ = reply.send(join_error("", ErrorCode::GroupMaxSizeReached.code()));
            return;
        }
        self.add_member(new_id, args, limits, now, reply);
    }

    fn join_known_member(
        &mut self,
        args: JoinArgs,
        limits: &GroupLimits,
        now: Instant,
        reply: JoinReply,
    ) {
        let id = args.member_id.clone();
        if self.pending.remove(&id).is_some() {
            if self.members.len() >= limits.max_size {
                let _ = reply.send(join_error(&id, ErrorCode::GroupMaxSizeReached.code()));
                return;
            }
            self.add_member(id, args, limits, now, reply);
            return;
        }
        if let Err(code) = self.validate_member(&id, args.group_instance_id.as_deref()) {
            let _ = reply.send(join_error(&id, code.code()));
            return;
        }
        let Some(member) = self.members.get_mut(&id) else {
            let _ = reply.send(join_error(&id, ErrorCode::UnknownMemberId.code()));
            return;
        };
        let same_metadata = member.protocols == args.protocols;
        member.protocols = args.protocols;
        member.session_timeout = Duration::from_millis(args.session_timeout_ms.max(0) as u64);
        member.rebalance_timeout = Duration::from_millis(args.rebalance_timeout_ms.max(0) as u64);
        member.client_id = args.client_id;
        member.client_host = args.client_host;
        member.last_heartbeat = now;
        let is_leader = self.leader.as_deref() == Some(id.as_str());
        match self.state {
            GroupState::PreparingRebalance => {
                if let Some(old) = member.join_waiter.replace(reply) {
                    let _ = old.send(join_error(&id, ErrorCode::RebalanceInProgress.code()));
                }
                self.try_complete_join(now);
            }
            GroupState::CompletingRebalance | GroupState::Stable
                if same_metadata && !(is_leader && self.state == GroupState::Stable) =>
            {
                // A repeated join with nothing new: the current generation stands.
                let resp = self.join_response(&id, is_leader);
                let _ = reply.send(resp);
            }
            _ => {
                member.join_waiter = Some(reply);
                self.prepare_rebalance(now, limits);
            }
        }
    }

    fn add_member(
        &mut self,
        id: String,
        args: JoinArgs,
        limits: &GroupLimits,
        now: Instant,
        reply: JoinReply,
    ) {
        if self.members.is_empty() {
            self.protocol_type = Some(args.protocol_type.clone());
        }
        if let Some(instance) = &args.group_instance_id {
            self.static_members.insert(instance.clone(), id.clone());
        }
        self.next_seq += 1;
        let member = Member {
            id: id.clone(),
            instance_id: args.group_instance_id,
            client_id: args.client_id,
            client_host: args.client_host,
            session_timeout: Duration::from_millis(args.session_timeout_ms.max(0) as u64),
            rebalance_timeout: Duration::from_millis(args.rebalance_timeout_ms.max(0) as u64),
            protocols: args.protocols,
            assignment: Bytes::new(),
            last_heartbeat: now,
            seq: self.next_seq,
            join_waiter: Some(reply),
            sync_waiter: None,
        };
        self.members.insert(id, member);
        self.prepare_rebalance(now, limits);
    }

    /// KIP-345: a static member rejoining with a new member id takes the old one's
    /// place; with unchanged metadata in a stable group there is no rebalance.
    fn replace_static_member(
        &mut self,
        old_id: &str,
        new_id: String,
        args: JoinArgs,
        limits: &GroupLimits,
        now: Instant,
        reply: JoinReply,
    ) {
        let Some(mut member) = self.members.remove(old_id) else {
            self.static_members
                .remove(args.group_instance_id.as_deref().unwrap_or_default());
            self.add_member(new_id, args, limits, now, reply);
            return;
        };
        tracing::info!(group = %self.id, instance = ?member.instance_id, old = old_id, new = %new_id, "static member replaced");
        if let Some(old) = member.join_waiter.take() {
            let _ = old.send(join_error(old_id, ErrorCode::FencedInstanceId.code()));
        }
        if let Some(old) = member.sync_waiter.take() {
            let _ = old.send(sync_error(ErrorCode::FencedInstanceId.code()));
        }
        let same_metadata = member.protocols == args.protocols;
        let version = args.version;
        member.id = new_id.clone();
        member.protocols = args.protocols;
        member.client_id = args.client_id;
        member.client_host = args.client_host;
        member.session_timeout = Duration::from_millis(args.session_timeout_ms.max(0) as u64);
        member.rebalance_timeout = Duration::from_millis(args.rebalance_timeout_ms.max(0) as u64);
        member.last_heartbeat = now;
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.clone());
        }
        if let Some(instance) = &member.instance_id {
            self.static_members.insert(instance.clone(), new_id.clone());
        }
        let is_leader = self.leader.as_deref() == Some(new_id.as_str());
        match self.state {
            GroupState::Stable if same_metadata => {
                self.members.insert(new_id.clone(), member);
                let resp = if version >= SKIP_ASSIGNMENT_FROM {
                    // KIP-814: a rejoining static leader sees the members but keeps the
                    // current assignment (skip_assignment).
                    let mut resp = self.join_response(&new_id, is_leader);
                    resp.skip_assignment = is_leader;
                    resp
                } else {
                    // Older clients are told the old leader id, so that a rejoining
                    // leader does not take itself for the leader and reassign.
                    let mut resp = self.join_response(&new_id, false);
                    resp.leader = old_id.to_string();
                    resp
                };
                let _ = reply.send(resp);
            }
            GroupState::PreparingRebalance => {
                member.join_waiter = Some(reply);
                self.members.insert(new_id, member);
                self.try_complete_join(now);
            }
            _ => {
                member.join_waiter = Some(reply);
                self.members.insert(new_id, member);
                self.prepare_rebalance(now, limits);
            }
        }
    }

    fn join_response(&self, member_id: &str, with_members: bool) -> JoinGroupResponse {
        let protocol = self.protocol.clone().unwrap_or_default();
        JoinGroupResponse {
            error_code: 0,
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if with_members {
                let mut ms: Vec<&Member> = self.members.values().collect();
                ms.sort_by_key(|m| m.seq);
                ms.into_iter()
                    .map(|m| JoinGroupResponseMember {
                        member_id: m.id.clone(),
                        group_instance_id: m.instance_id.clone(),
                        metadata: m.metadata(&protocol),
                    })
                    .collect()
            } else {
                Vec::new()
            },
            ..Default::default()
        }
    }

    /// Start (or continue) a rebalance: every member must rejoin.
    fn prepare_rebalance(&mut self, now: Instant, limits: &GroupLimits) {
        if self.state != GroupState::PreparingRebalance {
            tracing::debug!(group = %self.id, from = self.state.name(), "group rebalancing");
        }
        if self.state == GroupState::CompletingRebalance {
            for m in self.members.values_mut() {
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send(sync_error(ErrorCode::RebalanceInProgress.code()));
                }
            }
        }
        let longest = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        match self.state {
            GroupState::PreparingRebalance => {
                // A new member during the initial delay pushes it out, within the timeout.
                if let (Some(until), Some(deadline)) =
                    (self.initial_delay_until, self.rebalance_deadline)
                {
                    if until > now {
                        self.initial_delay_until =
                            Some((now + limits.initial_rebalance_delay).min(deadline));
                    }
                }
            }
            previous => {
                self.rebalance_deadline = Some(now + longest);
                self.initial_delay_until = (previous == GroupState::Empty)
                    .then(|| now + limits.initial_rebalance_delay.min(longest));
                self.state = GroupState::PreparingRebalance;
            }
        }
        self.try_complete_join(now);
    }

    /// Finish the join phase once every member rejoined (after any initial delay) or
    /// the rebalance timeout passed (members that did not rejoin are dropped).
    pub fn try_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined =
            self.pending.is_empty() && self.members.values().all(|m| m.join_waiter.is_some());
        let delay_over = self.initial_delay_until.is_none_or(|t| now >= t);
        let timed_out = self.rebalance_deadline.is_some_and(|t| now >= t);
        if !((all_joined && delay_over) || timed_out) {
            return;
        }
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id);
        }
        self.pending.clear();
        self.generation += 1;
        self.rebalance_deadline = None;
        self.initial_delay_until = None;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = self.select_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self
                .members
                .values()
                .min_by_key(|m| m.seq)
                .map(|m| m.id.clone());
        }
        self.state = GroupState::CompletingRebalance;
        tracing::info!(group = %self.id, generation = self.generation, members = self.members.len(), protocol = ?self.protocol, "group rebalanced");
        let longest = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        self.sync_deadline = Some(now + longest);
        let leader = self.leader.clone().unwrap_or_default();
        let replies: Vec<(JoinReply, JoinGroupResponse)> = self
            .members
            .values()
            .filter_map(|m| {
                m.join_waiter
                    .clone()
                    .map(|w| (w, self.join_response(&m.id, m.id == leader)))
            })
            .collect();
        for m in self.members.values_mut() {
            m.join_waiter = None;
            m.assignment = Bytes::new();
            m.last_heartbeat = now;
        }
        for (w, resp) in replies {
            let _ = w.send(resp);
        }
    }

    fn remove_member(&mut self, id: &str) {
        if let Some(m) = self.members.remove(id) {
            if let Some(instance) = &m.instance_id {
                if self.static_members.get(instance).map(String::as_str) == Some(id) {
                    self.static_members.remove(instance);
                }
            }
            if let Some(w) = m.join_waiter {
                let _ = w.send(join_error(id, ErrorCode::UnknownMemberId.code()));
            }
            if let Some(w) = m.sync_waiter {
                let _ = w.send(sync_error(ErrorCode::UnknownMemberId.code()));
            }
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
    }

    /// Check a member's identity and generation for SyncGroup, Heartbeat and commits.
    /// Kafka's member validation: a static member is looked up by instance id, and a
    /// different member id behind it means this one was replaced (fenced).
    pub fn validate_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ErrorCode> {
        match instance_id {
            Some(instance) => match self.static_members.get(instance) {
                None => Err(ErrorCode::UnknownMemberId),
                Some(current) if current != member_id => Err(ErrorCode::FencedInstanceId),
                Some(_) => Ok(()),
            },
            None if self.members.contains_key(member_id) => Ok(()),
            None => Err(ErrorCode::UnknownMemberId),
        }
    }

    /// Member validation plus the generation, for SyncGroup, Heartbeat and commits.
    pub fn check_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ErrorCode> {
        self.validate_member(member_id, instance_id)?;
        if generation != self.generation {
            return Err(ErrorCode::IllegalGeneration);
        }
        Ok(())
    }

    // The SyncGroup request's fields, one by one; a struct for them would only be built
    // to be taken apart here.
    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol: (Option<&str>, Option<&str>),
        assignments: Vec<(String, Bytes)>,
        now: Instant,
        reply: SyncReply,
    ) {
        if let Err(code) = self.check_member(member_id, instance_id, generation) {
            let _ = reply.send(sync_error(code.code()));
            return;
        }
        let (ptype, pname) = protocol;
        if ptype.is_some_and(|t| Some(t) != self.protocol_type.as_deref())
            || pname.is_some_and(|n| Some(n) != self.protocol.as_deref())
        {
            let _ = reply.send(sync_error(INCONSISTENT_GROUP_PROTOCOL));
            return;
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_heartbeat = now;
        }
        match self.state {
            GroupState::Empty => {
                let _ = reply.send(sync_error(ErrorCode::UnknownMemberId.code()));
            }
            GroupState::PreparingRebalance => {
                let _ = reply.send(sync_error(ErrorCode::RebalanceInProgress.code()));
            }
            GroupState::CompletingRebalance => {
                if let Some(m) = self.members.get_mut(member_id) {
                    m.sync_waiter = Some(reply);
                }
                if self.leader.as_deref() == Some(member_id) {
                    for (id, assignment) in assignments {
                        if let Some(m) = self.members.get_mut(&id) {
                            m.assignment = assignment;
                        }
                    }
                    self.state = GroupState::Stable;
                    self.sync_deadline = None;
                    let (ptype, pname) = (self.protocol_type.clone(), self.protocol.clone());
                    for m in self.members.values_mut() {
                        if let Some(w) = m.sync_waiter.take() {
                            let _ = w.send(SyncGroupResponse {
                                protocol_type: ptype.clone(),
                                protocol_name: pname.clone(),
                                assignment: m.assignment.clone(),
                                ..Default::default()
                            });
                        }
                    }
                }
            }
            GroupState::Stable => {
                let assignment = self
                    .members
                    .get(member_id)
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default();
                let _ = reply.send(SyncGroupResponse {
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol.clone(),
                    assignment,
                    ..Default::default()
                });
            }
        }
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> ErrorCode {
        if self.state == GroupState::Empty {
            return ErrorCode::UnknownMemberId;
        }
        if let Err(code) = self.check_member(member_id, instance_id, generation) {
            return code;
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_heartbeat = now;
        }
        match self.state {
            GroupState::PreparingRebalance => ErrorCode::RebalanceInProgress,
            _ => ErrorCode::None,
        }
    }

    /// LeaveGroup for one member, named by id or (static members) by instance id.
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
        limits: &GroupLimits,
    ) -> ErrorCode {
        let id = match (member_id.is_empty(), instance_id) {
            (true, Some(instance)) => match self.static_members.get(instance) {
                Some(id) => id.clone(),
                None => return ErrorCode::UnknownMemberId,
            },
            _ => member_id.to_string(),
        };
        if self.pending.remove(&id).is_some() {
            return ErrorCode::None;
        }
        if let Err(code) = self.validate_member(&id, instance_id) {
            return code;
        }
        self.remove_member(&id);
        self.member_gone(now, limits);
        ErrorCode::None
    }

    /// After a member left or expired: rebalance the rest, or become Empty.
    fn member_gone(&mut self, now: Instant, limits: &GroupLimits) {
        if self.members.is_empty() && self.state != GroupState::PreparingRebalance {
            self.state = GroupState::Empty;
            self.generation += 1;
            self.protocol = None;
            self.leader = None;
            self.sync_deadline = None;
        } else {
            self.prepare_rebalance(now, limits);
        }
    }

    /// Expire silent members and stale member ids; finish joins whose time came.
    pub fn tick(&mut self, now: Instant, limits: &GroupLimits) {
        self.pending.retain(|_, deadline| *deadline > now);
        if self.state == GroupState::Empty && self.is_empty() {
            self.empty_since.get_or_insert(now);
        } else {
            self.empty_since = None;
        }
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.join_waiter.is_none()
                    && m.sync_waiter.is_none()
                    && m.last_heartbeat + m.session_timeout < now
            })
            .map(|m| m.id.clone())
            .collect();
        if !expired.is_empty() {
            for id in &expired {
                tracing::info!(group = %self.id, member = %id, "member session expired");
                self.remove_member(id);
            }
            self.member_gone(now, limits);
        }
        if self.state == GroupState::CompletingRebalance
            && self.sync_deadline.is_some_and(|t| now >= t)
        {
            // The leader never sent the assignment: members that did not sync are out.
            let silent: Vec<String> = self
                .members
                .values()
                .filter(|m| m.sync_waiter.is_none())
                .map(|m| m.id.clone())
                .collect();
            for id in &silent {
                self.remove_member(id);
            }
            self.sync_deadline = None;
            self.member_gone(now, limits);
        }
        self.try_complete_join(now);
    }

    /// Whether any member subscribes to `topic` (consumer protocol subscriptions).
    pub fn subscribes_to(&self, topic: &str) -> bool {
        if self.protocol_type.as_deref() != Some("consumer") {
            return false;
        }
        let protocol = self.protocol.clone().unwrap_or_default();
        self.members.values().any(|m| {
            subscription_topics(m.metadata(&protocol))
                .iter()
                .any(|t| t == topic)
        })
    }
}

/// Topics of a ConsumerProtocolSubscription (version int16, then an array of strings;
/// all versions start this way).
fn subscription_topics(mut data: Bytes) -> Vec<String> {
    use bytes::Buf;
    let mut topics = Vec::new();
    if data.remaining() < 6 {
        return topics;
    }
    data.advance(2);
    let count = data.get_i32();
    for _ in 0..count.max(0) {
        if data.remaining() < 2 {
            break;
        }
        let len = data.get_i16();
        if len < 0 || data.remaining() < len as usize {
            break;
        }
        match String::from_utf8(data.split_to(len as usize).to_vec()) {
            Ok(t) => topics.push(t),
            Err(_) => break,
        }
    }
    topics
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: GroupLimits = GroupLimits {
        min_session_timeout_ms: 10,
        max_session_timeout_ms: 600_000,
        initial_rebalance_delay: Duration::from_millis(0),
        max_size: 3,
    };

    fn args(member_id: &str, instance: Option<&str>, version: i16) -> JoinArgs {
        JoinArgs {
            member_id: member_id.into(),
            group_instance_id: instance.map(Into::into),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 60_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
            version,
        }
    }

    fn join(g: &mut Group, a: JoinArgs, now: Instant) -> flume::Receiver<JoinGroupResponse> {
        let (tx, rx) = flume::bounded(1);
        g.join(a, &LIMITS, now, tx);
        rx
    }

    /// Two-step join of a dynamic member; returns its id.
    fn join_two_step(g: &mut Group, now: Instant) -> (String, flume::Receiver<JoinGroupResponse>) {
        let first = join(g, args("", None, 5), now).try_recv().unwrap();
        assert_eq!(first.error_code, ErrorCode::MemberIdRequired.code());
        let id = first.member_id;
        let rx = join(g, args(&id, None, 5), now);
        (id, rx)
    }

    #[test]
    fn two_members_rebalance_and_sync() {
        let now = Instant::now();
        let mut g = Group::new("g");
        let (a, rx_a) = join_two_step(&mut g, now);
        // One member, nobody else pending: the join completes at once.
        let ja = rx_a.try_recv().unwrap();
        assert_eq!(
            (ja.error_code, ja.generation_id, ja.leader.as_str()),
            (0, 1, a.as_str())
        );
        assert_eq!(ja.members.len(), 1);
        let (tx, rx) = flume::bounded(1);
        g.sync(
            &a,
            None,
            1,
            (Some("consumer"), Some("range")),
            vec![(a.clone(), Bytes::from_static(b"A"))],
            now,
            tx,
        );
        assert_eq!(rx.try_recv().unwrap().assignment, Bytes::from_static(b"A"));
        assert_eq!(g.state, GroupState::Stable);

        // A second member joins: the first learns of the rebalance from its heartbeat.
        let (b, rx_b) = join_two_step(&mut g, now);
        assert!(rx_b.try_recv().is_err());
        assert_eq!(
            g.heartbeat(&a, None, 1, now),
            ErrorCode::RebalanceInProgress
        );
        let rx_a = join(&mut g, args(&a, None, 5), now);
        let (ja, jb) = (rx_a.try_recv().unwrap(), rx_b.try_recv().unwrap());
        assert_eq!((ja.generation_id, jb.generation_id), (2, 2));
        assert_eq!(ja.members.len(), 2, "the leader gets the member list");
        assert!(jb.members.is_empty());
        assert_eq!(g.heartbeat(&b, None, 1, now), ErrorCode::IllegalGeneration);
        let (tb, rb) = flume::bounded(1);
        g.sync(&b, None, 2, (None, None), vec![], now, tb);
        assert!(rb.try_recv().is_err(), "followers wait for the leader");
        let (ta, ra) = flume::bounded(1);
        g.sync(
            &a,
            None,
            2,
            (None, None),
            vec![
                (a.clone(), Bytes::from_static(b"A2")),
                (b.clone(), Bytes::from_static(b"B2")),
            ],
            now,
            ta,
        );
        assert_eq!(ra.try_recv().unwrap().assignment, Bytes::from_static(b"A2"));
        assert_eq!(rb.try_recv().unwrap().assignment, Bytes::from_static(b"B2"));

        // B leaves; A must rejoin; B is unknown afterwards.
        assert_eq!(g.leave(&b, None, now, &LIMITS), ErrorCode::None);
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert_eq!(g.leave(&b, None, now, &LIMITS), ErrorCode::UnknownMemberId);
        let ja = join(&mut g, args(&a, None, 5), now).try_recv().unwrap();
        assert_eq!(ja.generation_id, 3);
    }

    #[test]
    fn unloading_tells_waiting_members_not_coordinator() {
        let now = Instant::now();
        let mut g = Group::new("g");
        let (a, rx_a) = join_two_step(&mut g, now);
        assert_eq!(rx_a.try_recv().unwrap().generation_id, 1);
        // A second member's join waits for the first to rejoin.
        let (_, rx_b) = join_two_step(&mut g, now);
        assert!(rx_b.try_recv().is_err());
        g.unload();
        let jb = rx_b.try_recv().unwrap();
        assert_eq!(
            (jb.error_code, jb.generation_id),
            (ErrorCode::NotCoordinator.code(), -1)
        );
        assert!(!jb.member_id.is_empty() && jb.member_id != a);
    }

    #[test]
    fn errors_for_strangers_and_bad_input() {
        let now = Instant::now();
        let mut g = Group::new("g");
        assert_eq!(
            join(&mut g, args("nobody", None, 5), now)
                .try_recv()
                .unwrap()
                .error_code,
            ErrorCode::UnknownMemberId.code()
        );
        let mut bad = args("", None, 5);
        bad.session_timeout_ms = 1;
        assert_eq!(
            join(&mut g, bad, now).try_recv().unwrap().error_code,
            INVALID_SESSION_TIMEOUT
        );
        let (a, rx) = join_two_step(&mut g, now);
        rx.try_recv().unwrap();
        let mut other = args("", None, 5);
        other.protocol_type = "connect".into();
        assert_eq!(
            join(&mut g, other, now).try_recv().unwrap().error_code,
            INCONSISTENT_GROUP_PROTOCOL
        );
        assert_eq!(
            g.heartbeat("nobody", None, 1, now),
            ErrorCode::UnknownMemberId
        );
        assert_eq!(g.heartbeat(&a, None, 7, now), ErrorCode::IllegalGeneration);
    }

    #[test]
    fn group_size_is_bounded() {
        let now = Instant::now();
        let mut g = Group::new("g");
        for _ in 0..LIMITS.max_size {
            join_two_step(&mut g, now);
        }
        let r = join(&mut g, args("", None, 5), now).try_recv().unwrap();
        assert_eq!(r.error_code, ErrorCode::GroupMaxSizeReached.code());
    }

    #[test]
    fn static_member_rejoins_without_rebalance() {
        let now = Instant::now();
        let mut g = Group::new("g");
        let first = join(&mut g, args("", Some("i1"), 5), now)
            .try_recv()
            .unwrap();
        assert_eq!(first.error_code, 0);
        let (tx, rx) = flume::bounded(1);
        g.sync(
            &first.member_id,
            Some("i1"),
            1,
            (None, None),
            vec![(first.member_id.clone(), Bytes::from_static(b"X"))],
            now,
            tx,
        );
        rx.try_recv().unwrap();
        // Restarted with no member id: same instance, new id, same generation.
        let again = join(&mut g, args("", Some("i1"), 5), now)
            .try_recv()
            .unwrap();
        assert_eq!(again.error_code, 0);
        assert_eq!(again.generation_id, 1);
        assert_ne!(again.member_id, first.member_id);
        assert_eq!(g.state, GroupState::Stable);
        // The old id is fenced out.
        assert_eq!(
            g.heartbeat(&first.member_id, Some("i1"), 1, now),
            ErrorCode::FencedInstanceId
        );
        let (tx, rx) = flume::bounded(1);
        g.sync(
            &again.member_id,
            Some("i1"),
            1,
            (None, None),
            vec![],
            now,
            tx,
        );
        assert_eq!(rx.try_recv().unwrap().assignment, Bytes::from_static(b"X"));
    }

    #[test]
    fn silent_members_expire() {
        let now = Instant::now();
        let mut g = Group::new("g");
        let (a, rx) = join_two_step(&mut g, now);
        rx.try_recv().unwrap();
        let (tx, _rx) = flume::bounded(1);
        g.sync(&a, None, 1, (None, None), vec![], now, tx);
        g.tick(now + Duration::from_secs(11), &LIMITS);
        assert!(g.members.is_empty());
        assert_eq!(g.state, GroupState::Empty);
    }

    #[test]
    fn subscriptions_are_read() {
        let mut meta = vec![0, 1, 0, 0, 0, 2, 0, 1, b'a', 0, 2, b'b', b'c'];
        meta.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            subscription_topics(Bytes::from(meta)),
            vec!["a".to_string(), "bc".to_string()]
        );
        assert!(
            subscription_topics(Bytes::from_static(&[0, 1, 0x7f, 0xff, 0xff, 0xff])).is_empty()
        );
    }
}
