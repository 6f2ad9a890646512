//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs. Topic configs are
//! changed through the controller; broker configs are static (read-only).

use std::rc::Rc;

use spate_net::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use spate_net::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use spate_net::ErrorCode;

use crate::controller::{ConfigChange, ControllerRequest};
use crate::metadata::TopicImage;
use crate::shard::ShardContext;
use crate::topic_config::{self, source, ConfigType};

/// Kafka's `ConfigResource.Type` codes.
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

/// One config as DescribeConfigs and CreateTopics report it.
pub struct ConfigEntry {
    pub name: String,
    pub value: String,
    pub source: i8,
    pub read_only: bool,
    pub kind: ConfigType,
    /// (name, value, source), most specific first.
    pub synonyms: Vec<(String, String, i8)>,
}

/// Every topic config with its effective value and where that value comes from.
pub fn topic_entries(ctx: &ShardContext, topic: &TopicImage) -> Vec<ConfigEntry> {
    topic_config::TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let default = def.default_value(&ctx.config.topic_defaults);
            let default_syn = (
                def.broker_synonym.to_string(),
                default.clone(),
                source::DEFAULT_CONFIG,
            );
            match topic.configs.get(def.name) {
                Some(v) => ConfigEntry {
                    name: def.name.to_string(),
                    value: v.clone(),
                    source: source::TOPIC_CONFIG,
                    read_only: false,
                    kind: def.kind,
                    synonyms: vec![
                        (def.name.to_string(), v.clone(), source::TOPIC_CONFIG),
                        default_syn,
                    ],
                },
                None => ConfigEntry {
                    name: def.name.to_string(),
                    value: default,
                    source: source::DEFAULT_CONFIG,
                    read_only: false,
                    kind: def.kind,
                    synonyms: vec![default_syn],
                },
            }
        })
        .collect()
}

/// The broker's static settings under Kafka's names.
fn broker_entries(ctx: &ShardContext) -> Vec<ConfigEntry> {
    let c = &ctx.config;
    let d = &c.topic_defaults;
    let entry = |name: &str, value: String, kind: ConfigType| ConfigEntry {
        name: name.to_string(),
        value: value.clone(),
        source: source::STATIC_BROKER_CONFIG,
        read_only: true,
        kind,
        synonyms: vec![(name.to_string(), value, source::STATIC_BROKER_CONFIG)],
    };
    // The broker-level twin of every topic config, then the broker's own settings.
    let mut entries: Vec<ConfigEntry> = topic_config::TOPIC_CONFIGS
        .iter()
        .map(|def| entry(def.broker_synonym, def.default_value(d), def.kind))
        .collect();
    entries.extend([
        entry(
            "auto.create.topics.enable",
            c.auto_create_topics_enable.to_string(),
            ConfigType::Boolean,
        ),
        entry("broker.id", c.node_id.to_string(), ConfigType::Int),
        entry("default.replication.factor", "1".into(), ConfigType::Int),
        entry(
            "delete.topic.enable",
            c.delete_topic_enable.to_string(),
            ConfigType::Boolean,
        ),
        entry(
            "group.initial.rebalance.delay.ms",
            c.group_initial_rebalance_delay_ms.to_string(),
            ConfigType::Int,
        ),
        entry(
            "group.max.session.timeout.ms",
            c.group_max_session_timeout_ms.to_string(),
            ConfigType::Int,
        ),
        entry(
            "group.max.size",
            c.group_max_size.to_string(),
            ConfigType::Int,
        ),
        entry(
            "group.min.session.timeout.ms",
            c.group_min_session_timeout_ms.to_string(),
            ConfigType::Int,
        ),
        entry(
            "log.cleaner.backoff.ms",
            c.log_cleaner.backoff_ms.to_string(),
            ConfigType::Long,
        ),
        entry(
            "log.cleaner.dedupe.buffer.size",
            c.log_cleaner.dedupe_buffer_size.to_string(),
            ConfigType::Long,
        ),
        entry(
            "log.cleaner.enable",
            c.log_cleaner.enable.to_string(),
            ConfigType::Boolean,
        ),
        entry(
            "log.cleaner.io.buffer.load.factor",
            c.log_cleaner.io_buffer_load_factor.to_string(),
            ConfigType::Double,
        ),
        entry(
            "log.cleaner.io.buffer.size",
            c.log_cleaner.io_buffer_size.to_string(),
            ConfigType::Int,
        ),
        entry(
            "log.cleaner.io.max.bytes.per.second",
            // Kafka's form of its default, Double.MAX_VALUE.
            if c.log_cleaner.io_max_bytes_per_second >= f64::MAX {
                "1.7976931348623157E308".to_string()
            } else {
                c.log_cleaner.io_max_bytes_per_second.to_string()
            },
            ConfigType::Double,
        ),
        entry(
            "log.cleaner.threads",
            c.log_cleaner.threads.to_string(),
            ConfigType::Int,
        ),
        entry(
            "log.dirs",
            c.data_dir.display().to_string(),
            ConfigType::String,
        ),
        entry(
            "log.retention.check.interval.ms",
            c.log_retention_check_interval_ms.to_string(),
            ConfigType::Long,
        ),
        // Kafka describes the hours form too; it is the ms setting, rounded down.
        entry(
            "log.retention.hours",
            (d.retention_ms / 3_600_000).to_string(),
            ConfigType::Int,
        ),
        entry("node.id", c.node_id.to_string(), ConfigType::Int),
        entry(
            "num.partitions",
            c.num_partitions.to_string(),
            ConfigType::Int,
        ),
        entry(
            "offset.metadata.max.bytes",
            c.offset_metadata_max_bytes.to_string(),
            ConfigType::Int,
        ),
        entry(
            "offsets.topic.num.partitions",
            c.offsets_topic_num_partitions.to_string(),
            ConfigType::Int,
        ),
        entry(
            "socket.request.max.bytes",
            c.socket_request_max_bytes.to_string(),
            ConfigType::Int,
        ),
    ]);
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    entries.dedup_by(|a, b| a.name == b.name);
    entries
}

pub fn describe(
    ctx: &ShardContext,
    req: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let image = ctx.image();
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            let mut result = DescribeConfigsResult {
                resource_type: r.resource_type,
                resource_name: r.resource_name.clone(),
                ..Default::default()
            };
            let entries = match r.resource_type {
                RESOURCE_TOPIC => match image.topic(&r.resource_name) {
                    Some(t) => topic_entries(ctx, t),
                    None => {
                        result.error_code = ErrorCode::UnknownTopicOrPartition.code();
                        result.error_message =
                            Some(format!("Topic {} does not exist", r.resource_name));
                        return result;
                    }
                },
                RESOURCE_BROKER
                    if r.resource_name.is_empty()
                        || r.resource_name == ctx.config.node_id.to_string() =>
                {
                    broker_entries(ctx)
                }
                RESOURCE_BROKER => {
                    result.error_code = ErrorCode::InvalidRequest.code();
                    result.error_message = Some(format!(
                        "Unexpected broker id, expected {}",
                        ctx.config.node_id
                    ));
                    return result;
                }
                other => {
                    result.error_code = ErrorCode::InvalidRequest.code();
                    result.error_message = Some(format!("Unsupported resource type {other}"));
                    return result;
                }
            };
            result.configs = entries
                .into_iter()
                .filter(|e| {
                    r.configuration_keys
                        .as_ref()
                        .is_none_or(|keys| keys.contains(&e.name))
                })
                .map(|e| DescribeConfigsResourceResult {
                    is_default: version == 0 && e.source == source::DEFAULT_CONFIG,
                    name: e.name,
                    value: Some(e.value),
                    read_only: e.read_only,
                    config_source: e.source,
                    is_sensitive: false,
                    synonyms: if req.include_synonyms {
                        e.synonyms
                            .into_iter()
                            .map(|(name, value, source)| DescribeConfigsSynonym {
                                name,
                                value: Some(value),
                                source,
                            })
                            .collect()
                    } else {
                        Vec::new()
                    },
                    config_type: e.kind as i8,
                    documentation: None,
                })
                .collect();
            result
        })
        .collect();
    DescribeConfigsResponse {
        results,
        ..Default::default()
    }
}

/// Send the topic changes to the controller; non-topic resources are answered here.
/// Returns (error code, message) per resource, in request order.
async fn apply(
    ctx: &Rc<ShardContext>,
    resources: Vec<(i8, String, Option<ConfigChange>)>,
    validate_only: bool,
) -> Vec<(i16, Option<String>)> {
    let changes: Vec<(String, ConfigChange)> = resources
        .iter()
        .filter(|(t, _, _)| *t == RESOURCE_TOPIC)
        .filter_map(|(_, name, change)| change.clone().map(|c| (name.clone(), c)))
        .collect();
    let mut outcomes = if changes.is_empty() {
        Vec::new()
    } else {
        ctx.change_topics(ControllerRequest::AlterConfigs {
            changes,
            validate_only,
        })
        .await
        .unwrap_or_default()
    }
    .into_iter();
    resources
        .into_iter()
        .map(|(kind, _, _)| match kind {
            RESOURCE_TOPIC => match outcomes.next() {
                Some(o) => (o.error, o.message),
                None => (ErrorCode::UnknownServerError.code(), None),
            },
            RESOURCE_BROKER => (
                ErrorCode::InvalidRequest.code(),
                Some("Broker configs are static in Spate; edit the config file and restart".into()),
            ),
            other => (
                ErrorCode::InvalidRequest.code(),
                Some(format!("Unsupported resource type {other}")),
            ),
        })
        .collect()
}

pub async fn alter(ctx: &Rc<ShardContext>, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let resources: Vec<(i8, String, Option<ConfigChange>)> = req
        .resources
        .iter()
        .map(|r| {
            let change = ConfigChange::Replace(
                r.configs
                    .iter()
                    .map(|c| (c.name.clone(), c.value.clone()))
                    .collect(),
            );
            (r.resource_type, r.resource_name.clone(), Some(change))
        })
        .collect();
    let results = apply(ctx, resources, req.validate_only).await;
    AlterConfigsResponse {
        responses: req
            .resources
            .into_iter()
            .zip(results)
            .map(|(r, (code, message))| {
                spate_net::messages::alter_configs_response::AlterConfigsResourceResponse {
                    error_code: code,
                    error_message: message,
                    resource_type: r.resource_type,
                    resource_name: r.resource_name,
                }
            })
            .collect(),
        ..Default::default()
    }
}

pub async fn incremental_alter(
    ctx: &Rc<ShardContext>,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let resources: Vec<(i8, String, Option<ConfigChange>)> = req
        .resources
        .iter()
        .map(|r| {
            let change = ConfigChange::Incremental(
                r.configs
                    .iter()
                    .map(|c| (c.name.clone(), c.config_operation, c.value.clone()))
                    .collect(),
            );
            (r.resource_type, r.resource_name.clone(), Some(change))
        })
        .collect();
    let results = apply(ctx, resources, req.validate_only).await;
    IncrementalAlterConfigsResponse {
        responses: req
            .resources
            .into_iter()
            .zip(results)
            .map(|(r, (code, message))| spate_net::messages::incremental_alter_configs_response::AlterConfigsResourceResponse {
                error_code: code,
                error_message: message,
                resource_type: r.resource_type,
                resource_name: r.resource_name,
            })
            .collect(),
        ..Default::default()
    }
}
