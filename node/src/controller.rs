//! The controller: the one place that changes topic metadata. It runs on shard 0,
//! handles one request at a time, writes the resulting records durably to the metadata
//! log, then hands the new image to every shard and waits until all have applied it
//! (opened, reconfigured or deleted their partitions) before it answers.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::broker_config;
use crate::config::BrokerConfig;
use crate::mesh::ShardMsg;
use crate::metadata::{MetadataImage, MetadataRecord, MetadataStore, TopicImage};
use crate::topic_config;

use spate_net::ErrorCode;

/// Longest topic name Kafka accepts.
const MAX_TOPIC_NAME_LEN: usize = 249;

#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    /// -1: the broker's `num.partitions`.
    pub num_partitions: i32,
    /// -1: default (1). Anything above 1 needs more brokers than a single node has.
    pub replication_factor: i16,
    /// Manual assignment: partition index and its replica broker ids.
    pub assignments: Vec<(i32, Vec<i32>)>,
    pub configs: Vec<(String, Option<String>)>,
}

/// IncrementalAlterConfigs operation codes.
pub mod alter_op {
    pub const SET: i8 = 0;
    pub const DELETE: i8 = 1;
    pub const APPEND: i8 = 2;
    pub const SUBTRACT: i8 = 3;
}

#[derive(Debug, Clone)]
pub enum ConfigChange {
    /// AlterConfigs: the given set replaces every override.
    Replace(Vec<(String, Option<String>)>),
    /// IncrementalAlterConfigs: (name, op, value).
    Incremental(Vec<(String, i8, Option<String>)>),
}

#[derive(Debug)]
pub enum ControllerRequest {
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
    },
    DeleteTopics {
        names: Vec<String>,
    },
    CreatePartitions {
        topics: Vec<(String, i32)>,
        validate_only: bool,
    },
    AlterConfigs {
        changes: Vec<(String, ConfigChange)>,
        validate_only: bool,
    },
    /// Dynamic configs of a broker (its id) or of the cluster default ("").
    AlterBrokerConfigs {
        changes: Vec<(String, ConfigChange)>,
        validate_only: bool,
    },
    /// Configs of consumer groups (GROUP resources).
    AlterGroupConfigs {
        changes: Vec<(String, ConfigChange)>,
        validate_only: bool,
    },
    /// InitProducerId: a fresh producer id.
    AllocateProducerId,
}

/// The outcome for one topic (or config resource) of a request, in request order.
#[derive(Debug, Clone)]
pub struct TopicOutcome {
    pub name: String,
    pub error: i16,
    pub message: Option<String>,
    /// The topic as it is after the change (CreateTopics results need it).
    pub topic: Option<Arc<TopicImage>>,
}

#[derive(Debug)]
pub enum ControllerReply {
    Topics(Vec<TopicOutcome>),
    /// A producer id, or the error code.
    ProducerId(Result<i64, i16>),
}

/// Producer ids are reserved in the metadata log this many at a time.
const PRODUCER_ID_BLOCK: i64 = 1000;

impl TopicOutcome {
    fn ok(name: &str, topic: Option<Arc<TopicImage>>) -> Self {
        TopicOutcome {
            name: name.to_string(),
            error: 0,
            message: None,
            topic,
        }
    }
    fn err(name: &str, code: ErrorCode, message: impl Into<String>) -> Self {
        TopicOutcome {
            name: name.to_string(),
            error: code.code(),
            message: Some(message.into()),
            topic: None,
        }
    }
}

pub struct Controller {
    config: Arc<BrokerConfig>,
    store: MetadataStore,
    image: Arc<MetadataImage>,
    /// Next placement slot; partitions are spread round-robin over shards.
    next_slot: u32,
    /// The producer ids reserved and not yet handed out: `next_pid..pid_end`.
    next_pid: i64,
    pid_end: i64,
    shards: Vec<flume::Sender<ShardMsg>>,
}

impl Controller {
    pub fn new(
        config: Arc<BrokerConfig>,
        store: MetadataStore,
        image: Arc<MetadataImage>,
        shards: Vec<flume::Sender<ShardMsg>>,
    ) -> Self {
        let next_slot = image
            .topics
            .values()
            .map(|t| t.partitions.len() as u32)
            .sum();
        // Ids reserved before a restart may have been handed out: start past them.
        let pid_end = image.producer_ids_end;
        Controller {
            config,
            store,
            image,
            next_slot,
            next_pid: pid_end,
            pid_end,
            shards,
        }
    }

    pub async fn handle(&mut self, request: ControllerRequest) -> ControllerReply {
        match request {
            ControllerRequest::AllocateProducerId => {
                ControllerReply::ProducerId(self.allocate_producer_id())
            }
            other => ControllerReply::Topics(self.change_topics(other).await),
        }
    }

    fn allocate_producer_id(&mut self) -> Result<i64, i16> {
        if self.next_pid == self.pid_end {
            let record = MetadataRecord::ProducerIds {
                end: self.pid_end + PRODUCER_ID_BLOCK,
            };
            if let Err(e) = self.store.append(std::slice::from_ref(&record)) {
                crate::fault::fail_stop(
                    "reserving producer ids: the metadata log cannot be written",
                    &e,
                );
            }
            // No shard needs producer-id blocks, so the image is not republished.
            Arc::make_mut(&mut self.image).apply(&record);
            self.pid_end += PRODUCER_ID_BLOCK;
        }
        let pid = self.next_pid;
        self.next_pid += 1;
        Ok(pid)
    }

    async fn change_topics(&mut self, request: ControllerRequest) -> Vec<TopicOutcome> {
        let mut records = Vec::new();
        // A scratch image so that later items of one request see the earlier ones.
        let mut next = (*self.image).clone();
        let mut outcomes = Vec::new();
        let (validate_only, kind) = match &request {
            ControllerRequest::CreateTopics { validate_only, .. } => (*validate_only, "create"),
            ControllerRequest::DeleteTopics { .. } => (false, "delete"),
            ControllerRequest::CreatePartitions { validate_only, .. } => {
                (*validate_only, "partitions")
            }
            ControllerRequest::AlterConfigs { validate_only, .. } => (*validate_only, "configs"),
            ControllerRequest::AlterBrokerConfigs { validate_only, .. } => {
                (*validate_only, "broker configs")
            }
            ControllerRequest::AlterGroupConfigs { validate_only, .. } => {
                (*validate_only, "group configs")
            }
            ControllerRequest::AllocateProducerId => return Vec::new(),
        };
        match request {
            ControllerRequest::CreateTopics { topics, .. } => {
                for t in topics {
                    match self.plan_create(&next, &t) {
                        Ok(record) => {
                            next.apply(&record);
                            records.push(record);
                            outcomes.push(TopicOutcome::ok(&t.name, None));
                        }
                        Err(o) => outcomes.push(o),
                    }
                }
            }
            ControllerRequest::DeleteTopics { names } => {
                for name in names {
                    if !self.config.delete_topic_enable {
                        outcomes.push(TopicOutcome::err(
                            &name,
                            ErrorCode::TopicDeletionDisabled,
                            "Topic deletion is disabled.",
                        ));
                    } else if next.topic(&name).is_none() {
                        outcomes.push(TopicOutcome::err(
                            &name,
                            ErrorCode::UnknownTopicOrPartition,
                            "This server does not host this topic.",
                        ));
                    } else if name == crate::group::OFFSETS_TOPIC {
                        outcomes.push(TopicOutcome::err(
                            &name,
                            ErrorCode::InvalidTopicException,
                            "Internal topics cannot be deleted.",
                        ));
                    } else {
                        let record = MetadataRecord::DeleteTopic { name: name.clone() };
                        next.apply(&record);
                        records.push(record);
                        outcomes.push(TopicOutcome::ok(&name, None));
                    }
                }
            }
            ControllerRequest::CreatePartitions { topics, .. } => {
                for (name, count) in topics {
                    match self.plan_partitions(&next, &name, count) {
                        Ok(record) => {
                            next.apply(&record);
                            records.push(record);
                            outcomes.push(TopicOutcome::ok(&name, None));
                        }
                        Err(o) => outcomes.push(o),
                    }
                }
            }
            ControllerRequest::AlterConfigs { changes, .. } => {
                for (name, change) in changes {
                    match plan_configs(&next, &name, change) {
                        Ok(record) => {
                            next.apply(&record);
                            records.push(record);
                            outcomes.push(TopicOutcome::ok(&name, None));
                        }
                        Err(o) => outcomes.push(o),
                    }
                }
            }
            ControllerRequest::AlterBrokerConfigs { changes, .. } => {
                for (resource, change) in changes {
                    match broker_config::alter::plan(&next, &self.config, &resource, change) {
                        Ok(record) => {
                            next.apply(&record);
                            records.push(record);
                            outcomes.push(TopicOutcome::ok(&resource, None));
                        }
                        Err((code, message)) => {
                            outcomes.push(TopicOutcome::err(&resource, code, message))
                        }
                    }
                }
            }
            ControllerRequest::AlterGroupConfigs { changes, .. } => {
                for (group, change) in changes {
                    match crate::group::group_config::plan(&next, &self.config, &group, change) {
                        Ok(record) => {
                            next.apply(&record);
                            records.push(record);
                            outcomes.push(TopicOutcome::ok(&group, None));
                        }
                        Err((code, message)) => {
                            outcomes.push(TopicOutcome::err(&group, code, message))
                        }
                    }
                }
            }
            ControllerRequest::AllocateProducerId => {}
        }
        if validate_only || records.is_empty() {
            // Slots taken for a plan that is not applied go back.
            self.next_slot = self.slots_in_use();
            return self.attach_topics(outcomes, &next);
        }
        if let Err(e) = self.store.append(&records) {
            // Fail-stop: the log was cut back to its last good entry (or replay will cut
            // it), and a controller that cannot persist metadata must not keep serving.
            crate::fault::fail_stop("the metadata log cannot be written", &e);
        }
        tracing::info!(kind, records = records.len(), "metadata changed");
        self.image = Arc::new(next);
        self.publish().await;
        let image = self.image.clone();
        self.attach_topics(outcomes, &image)
    }

    fn slots_in_use(&self) -> u32 {
        self.image
            .topics
            .values()
            .map(|t| t.partitions.len() as u32)
            .sum()
    }

    fn attach_topics(
        &self,
        mut outcomes: Vec<TopicOutcome>,
        image: &MetadataImage,
    ) -> Vec<TopicOutcome> {
        for o in &mut outcomes {
            if o.error == 0 {
                o.topic = image.topic(&o.name).cloned();
            }
        }
        outcomes
    }

    /// Send the current image to every shard and wait for all acknowledgements.
    async fn publish(&self) {
        let mut waits = Vec::with_capacity(self.shards.len());
        for shard in &self.shards {
            let (tx, rx) = flume::bounded(1);
            if shard
                .send_async(ShardMsg::Metadata {
                    image: self.image.clone(),
                    done: tx,
                })
                .await
                .is_ok()
            {
                waits.push(rx);
            }
        }
        for rx in waits {
            let _ = rx.recv_async().await;
        }
    }

    fn take_slots(&mut self, n: usize) -> Vec<u32> {
        let slots = (0..n as u32)
            .map(|i| self.next_slot.wrapping_add(i))
            .collect();
        self.next_slot = self.next_slot.wrapping_add(n as u32);
        slots
    }

    fn plan_create(
        &mut self,
        image: &MetadataImage,
        t: &NewTopic,
    ) -> Result<MetadataRecord, TopicOutcome> {
        validate_topic_name(&t.name)
            .map_err(|m| TopicOutcome::err(&t.name, ErrorCode::InvalidTopicException, m))?;
        if image.topic(&t.name).is_some() {
            return Err(TopicOutcome::err(
                &t.name,
                ErrorCode::TopicAlreadyExists,
                format!("Topic '{}' already exists.", t.name),
            ));
        }
        let partitions = if !t.assignments.is_empty() {
            if t.num_partitions != -1 || t.replication_factor != -1 {
                return Err(TopicOutcome::err(&t.name, ErrorCode::InvalidRequest, "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time."));
            }
            let mut idx: Vec<i32> = t.assignments.iter().map(|(p, _)| *p).collect();
            idx.sort_unstable();
            let contiguous = idx.iter().enumerate().all(|(i, p)| *p == i as i32);
            let valid_brokers = t
                .assignments
                .iter()
                .all(|(_, r)| r.as_slice() == [self.config.node_id]);
            if !contiguous || !valid_brokers {
                return Err(TopicOutcome::err(
                    &t.name,
                    ErrorCode::InvalidReplicaAssignment,
                    format!(
                        "Replica assignment must name partitions 0..n-1 with the single broker {}",
                        self.config.node_id
                    ),
                ));
            }
            idx.len() as i32
        } else {
            if t.replication_factor > 1 {
                return Err(TopicOutcome::err(&t.name, ErrorCode::InvalidReplicationFactor, format!("Unable to replicate the partition {} time(s): The target replication factor of {} cannot be reached because only 1 broker(s) are registered.", t.replication_factor, t.replication_factor)));
            }
            if t.replication_factor == 0 || t.replication_factor < -1 {
                return Err(TopicOutcome::err(
                    &t.name,
                    ErrorCode::InvalidReplicationFactor,
                    "Replication factor must be larger than 0, or -1 to use the default value.",
                ));
            }
            match t.num_partitions {
                -1 => self.config.num_partitions,
                n if n >= 1 => n,
                _ => return Err(TopicOutcome::err(
                    &t.name,
                    ErrorCode::InvalidPartitions,
                    "Number of partitions must be larger than 0, or -1 to use the default value.",
                )),
            }
        };
        if partitions > MAX_PARTITIONS_PER_REQUEST {
            return Err(TopicOutcome::err(
                &t.name,
                ErrorCode::InvalidPartitions,
                format!("At most {MAX_PARTITIONS_PER_REQUEST} partitions per topic"),
            ));
        }
        let mut configs = BTreeMap::new();
        for (k, v) in &t.configs {
            let Some(v) = v else {
                return Err(TopicOutcome::err(
                    &t.name,
                    ErrorCode::InvalidConfig,
                    format!("Null value not supported for topic configs: {k}"),
                ));
            };
            topic_config::validate(k, v)
                .map_err(|m| TopicOutcome::err(&t.name, ErrorCode::InvalidConfig, m))?;
            configs.insert(k.clone(), topic_config::normalize(k, v));
        }
        Ok(MetadataRecord::CreateTopic {
            name: t.name.clone(),
            id: new_topic_id(),
            slots: self.take_slots(partitions as usize),
            configs,
        })
    }

    fn plan_partitions(
        &mut self,
        image: &MetadataImage,
        name: &str,
        count: i32,
    ) -> Result<MetadataRecord, TopicOutcome> {
        let Some(topic) = image.topic(name) else {
            return Err(TopicOutcome::err(
                name,
                ErrorCode::UnknownTopicOrPartition,
                "This server does not host this topic.",
            ));
        };
        let current = topic.partitions.len() as i32;
        if name == crate::group::OFFSETS_TOPIC {
            // Group → partition mapping depends on the count.
            return Err(TopicOutcome::err(
                name,
                ErrorCode::InvalidTopicException,
                "Partitions of internal topics cannot be added.",
            ));
        }
        if count <= current {
            return Err(TopicOutcome::err(name, ErrorCode::InvalidPartitions, format!("Topic currently has {current} partitions, which is higher than the requested {count}.")));
        }
        if count > MAX_PARTITIONS_PER_REQUEST {
            return Err(TopicOutcome::err(
                name,
                ErrorCode::InvalidPartitions,
                format!("At most {MAX_PARTITIONS_PER_REQUEST} partitions per topic"),
            ));
        }
        Ok(MetadataRecord::AddPartitions {
            name: name.to_string(),
            slots: self.take_slots((count - current) as usize),
        })
    }
}

/// Upper bound on partitions one topic may have, so a request cannot make the broker
/// open millions of files.
const MAX_PARTITIONS_PER_REQUEST: i32 = 10_000;

fn plan_configs(
    image: &MetadataImage,
    name: &str,
    change: ConfigChange,
) -> Result<MetadataRecord, TopicOutcome> {
    let Some(topic) = image.topic(name) else {
        return Err(TopicOutcome::err(
            name,
            ErrorCode::UnknownTopicOrPartition,
            "This server does not host this topic.",
        ));
    };
    let invalid = |m: String| TopicOutcome::err(name, ErrorCode::InvalidConfig, m);
    let mut configs = match &change {
        ConfigChange::Replace(_) => BTreeMap::new(),
        ConfigChange::Incremental(_) => topic.configs.clone(),
    };
    match change {
        ConfigChange::Replace(entries) => {
            for (k, v) in entries {
                let v = v.ok_or_else(|| invalid(format!("Null value not supported for {k}")))?;
                topic_config::validate(&k, &v).map_err(invalid)?;
                configs.insert(k.clone(), topic_config::normalize(&k, &v));
            }
        }
        ConfigChange::Incremental(ops) => {
            for (k, op, v) in ops {
                let def = topic_config::find(&k)
                    .ok_or_else(|| invalid(format!("Unknown topic config name: {k}")))?;
                match op {
                    alter_op::SET => {
                        let v =
                            v.ok_or_else(|| invalid(format!("Null value not supported for {k}")))?;
                        topic_config::validate(&k, &v).map_err(invalid)?;
                        configs.insert(k.clone(), topic_config::normalize(&k, &v));
                    }
                    alter_op::DELETE => {
                        configs.remove(&k);
                    }
                    alter_op::APPEND | alter_op::SUBTRACT => {
                        if def.kind != topic_config::ConfigType::List {
                            return Err(invalid(format!(
                                "Config value append is not allowed for config key: {k}"
                            )));
                        }
                        let current = configs
                            .get(&k)
                            .cloned()
                            .unwrap_or_else(|| "delete".to_string());
                        let joined = topic_config::apply_list_op(
                            &current,
                            op == alter_op::APPEND,
                            v.as_deref(),
                        );
                        topic_config::validate(&k, &joined).map_err(invalid)?;
                        configs.insert(k, joined);
                    }
                    _ => {
                        return Err(TopicOutcome::err(
                            name,
                            ErrorCode::InvalidRequest,
                            format!("Unknown config operation {op}"),
                        ))
                    }
                }
            }
        }
    }
    Ok(MetadataRecord::SetTopicConfigs {
        name: name.to_string(),
        configs,
    })
}

/// Kafka's topic-name rules.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("Topic name is illegal, it can't be empty".into());
    }
    if name == "." || name == ".." {
        return Err("Topic name cannot be \".\" or \"..\"".into());
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(format!(
            "Topic name is illegal, it can't be longer than {MAX_TOPIC_NAME_LEN} characters"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(format!("Topic name \"{name}\" is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'"));
    }
    Ok(())
}

/// A random, non-zero topic id (version-4 UUID layout).
fn new_topic_id() -> [u8; 16] {
    crate::random_id::uuid_v4()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("orders.v1_x-2").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a b").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }

    #[test]
    fn topic_ids_are_random_and_nonzero() {
        let a = new_topic_id();
        assert_ne!(a, [0; 16]);
        assert_ne!(a, new_topic_id());
    }

    #[test]
    fn incremental_append_and_subtract() {
        let mut img = MetadataImage::default();
        img.apply(&MetadataRecord::CreateTopic {
            name: "t".into(),
            id: [1; 16],
            slots: vec![0],
            configs: BTreeMap::new(),
        });
        let set = ConfigChange::Incremental(vec![(
            "retention.ms".into(),
            alter_op::SET,
            Some("10".into()),
        )]);
        let MetadataRecord::SetTopicConfigs { configs, .. } = plan_configs(&img, "t", set).unwrap()
        else {
            panic!()
        };
        assert_eq!(configs.get("retention.ms").map(String::as_str), Some("10"));
        let bad = ConfigChange::Incremental(vec![(
            "retention.ms".into(),
            alter_op::APPEND,
            Some("10".into()),
        )]);
        assert_eq!(
            plan_configs(&img, "t", bad).unwrap_err().error,
            ErrorCode::InvalidConfig.code()
        );
        let missing = ConfigChange::Replace(vec![]);
        assert_eq!(
            plan_configs(&img, "nope", missing).unwrap_err().error,
            ErrorCode::UnknownTopicOrPartition.code()
        );
    }
}
