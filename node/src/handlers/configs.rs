//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs of topics and brokers (a
//! broker id, or "" for the cluster default). Changes go through the controller.

use std::rc::Rc;

use spate_net::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use spate_net::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use spate_net::ErrorCode;

use crate::broker_config::defs::Facts;
use crate::broker_config::describe::{ConfigEntry, Sources};
use crate::config::BrokerConfig;
use crate::controller::{ConfigChange, ControllerRequest};
use crate::metadata::{MetadataImage, TopicImage};
use crate::security::authorizer::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::security::authorizer::Caller;
use crate::shard::ShardContext;
use crate::topic_config::source;

/// Kafka's `ConfigResource.Type` codes.
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
pub const RESOURCE_BROKER_LOGGER: i8 = 8;
/// Consumer group configs (KIP-848).
pub const RESOURCE_GROUP: i8 = 32;
/// Client metrics subscriptions (KIP-714), not served; authorized on the cluster.
const RESOURCE_CLIENT_METRICS: i8 = 16;

/// The ACL resource a config resource is authorized on, and the error when the caller
/// may not (Kafka: brokers, broker loggers and client metrics on the cluster, topics
/// and groups on themselves); `None` for types this broker does not serve.
fn acl_resource(kind: i8, name: &str) -> Option<(ResourceType, &str, ErrorCode)> {
    match kind {
        RESOURCE_TOPIC => Some((
            ResourceType::Topic,
            name,
            ErrorCode::TopicAuthorizationFailed,
        )),
        RESOURCE_GROUP => Some((
            ResourceType::Group,
            name,
            ErrorCode::GroupAuthorizationFailed,
        )),
        RESOURCE_BROKER | RESOURCE_BROKER_LOGGER | RESOURCE_CLIENT_METRICS => Some((
            ResourceType::Cluster,
            CLUSTER_NAME,
            ErrorCode::ClusterAuthorizationFailed,
        )),
        _ => None,
    }
}

/// The error for a caller that may not `operation` (DESCRIBE_CONFIGS or ALTER_CONFIGS)
/// the config resource, with Kafka's message.
fn config_denied(
    ctx: &ShardContext,
    caller: &Caller,
    operation: Operation,
    kind: i8,
    name: &str,
) -> Option<(i16, Option<String>)> {
    ctx.authorizer.as_ref()?;
    let (resource_type, acl_name, error) = acl_resource(kind, name)?;
    if ctx.authorized(caller, operation, resource_type, acl_name) {
        return None;
    }
    let message = match error {
        ErrorCode::TopicAuthorizationFailed => "Topic authorization failed.",
        ErrorCode::GroupAuthorizationFailed => "Group authorization failed.",
        _ => "Cluster authorization failed.",
    };
    Some((error.code(), Some(message.to_string())))
}

/// What config entries are computed from on this shard.
fn sources<'a>(ctx: &'a ShardContext, image: &'a MetadataImage) -> Sources<'a> {
    Sources {
        facts: Facts {
            config: &ctx.config,
            advertised_listeners: &ctx.advertised_listeners,
        },
        embedded: BrokerConfig::embedded_default(),
        dynamic: &image.broker_configs,
    }
}

/// Every topic config with its effective value and where that value comes from.
pub fn topic_entries(ctx: &ShardContext, topic: &TopicImage) -> Vec<ConfigEntry> {
    let image = ctx.image();
    sources(ctx, &image).topic_entries(topic)
}

pub fn describe(
    ctx: &ShardContext,
    req: DescribeConfigsRequest,
    version: i16,
    caller: &Caller,
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
            if let Some((code, message)) = config_denied(
                ctx,
                caller,
                Operation::DescribeConfigs,
                r.resource_type,
                &r.resource_name,
            ) {
                result.error_code = code;
                result.error_message = message;
                return result;
            }
            let sources = sources(ctx, &image);
            let entries = match r.resource_type {
                RESOURCE_TOPIC => match image.topic(&r.resource_name) {
                    Some(t) => sources.topic_entries(t),
                    None => {
                        result.error_code = ErrorCode::UnknownTopicOrPartition.code();
                        result.error_message =
                            Some(format!("Topic {} does not exist", r.resource_name));
                        return result;
                    }
                },
                RESOURCE_BROKER if r.resource_name.is_empty() => sources.cluster_default_entries(),
                RESOURCE_BROKER if r.resource_name == ctx.config.node_id.to_string() => {
                    sources.broker_entries()
                }
                RESOURCE_BROKER => {
                    result.error_code = ErrorCode::InvalidRequest.code();
                    result.error_message = Some(format!(
                        "Unexpected broker id, expected {}, but received {}",
                        ctx.config.node_id, r.resource_name
                    ));
                    return result;
                }
                RESOURCE_GROUP if r.resource_name.is_empty() => {
                    result.error_code = ErrorCode::InvalidRequest.code();
                    result.error_message = Some("Group name must not be empty.".into());
                    return result;
                }
                // Any group id, known or not, as Kafka describes them.
                RESOURCE_GROUP => crate::group::group_config::entries(
                    &ctx.config,
                    image.group_configs.get(&r.resource_name),
                ),
                RESOURCE_BROKER_LOGGER => match logger_resource(ctx, &r.resource_name) {
                    Ok(()) => crate::log_levels::loggers()
                        .into_iter()
                        .map(|(name, level)| ConfigEntry::broker_logger(name, level))
                        .collect(),
                    Err((code, message)) => {
                        result.error_code = code.code();
                        result.error_message = Some(message);
                        return result;
                    }
                },
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
                    value: e.value,
                    read_only: e.read_only,
                    config_source: e.source,
                    is_sensitive: e.sensitive,
                    synonyms: if req.include_synonyms {
                        e.synonyms
                            .into_iter()
                            .map(|(name, value, source)| DescribeConfigsSynonym {
                                name,
                                value,
                                source,
                            })
                            .collect()
                    } else {
                        Vec::new()
                    },
                    config_type: e.kind as i8,
                    documentation: if req.include_documentation {
                        e.doc.map(str::to_string)
                    } else {
                        None
                    },
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

/// Send the changes of one resource type to the controller: (error, message) per
/// resource, in order.
async fn change(
    ctx: &Rc<ShardContext>,
    changes: Vec<(String, ConfigChange)>,
    validate_only: bool,
    kind: i8,
) -> Vec<(i16, Option<String>)> {
    if changes.is_empty() {
        return Vec::new();
    }
    let request = match kind {
        RESOURCE_BROKER => ControllerRequest::AlterBrokerConfigs {
            changes,
            validate_only,
        },
        RESOURCE_GROUP => ControllerRequest::AlterGroupConfigs {
            changes,
            validate_only,
        },
        _ => ControllerRequest::AlterConfigs {
            changes,
            validate_only,
        },
    };
    ctx.change_topics(request)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|o| (o.error, o.message))
        .collect()
}

/// A BROKER resource naming another broker is refused here, before the change goes to
/// the active controller (Kafka's `ConfigAdminManager.preprocess`): a broker changes
/// only its own dynamic configs and the cluster default.
fn other_broker(ctx: &ShardContext, kind: i8, name: &str) -> Option<(i16, Option<String>)> {
    let me = ctx.config.node_id;
    (kind == RESOURCE_BROKER && !name.is_empty() && name != me.to_string()).then(|| {
        (
            ErrorCode::InvalidRequest.code(),
            Some(format!(
                "Unexpected broker id, expected {me}, but received {name}"
            )),
        )
    })
}

/// A change of this broker's listeners or of their TLS files is checked here, against
/// its own listeners and files (Kafka's brokers check their dynamic configs before
/// they forward them).
fn listeners_refused(
    ctx: &ShardContext,
    kind: i8,
    name: &str,
    change: &ConfigChange,
) -> Option<(i16, Option<String>)> {
    if kind != RESOURCE_BROKER {
        return None;
    }
    let image = ctx.image();
    crate::broker_config::listeners::check_change(&ctx.config, &image, name, change)
        .and_then(|()| {
            crate::broker_config::listener_ssl::check_change(
                &ctx.config,
                &image,
                name,
                change,
                &ctx.listeners.current(),
            )
        })
        .err()
        .map(|(code, message)| (code.code(), Some(message)))
}

/// Reload at once the TLS files of the listeners whose file configs an accepted change
/// of this broker named, changed or not (Kafka reloads a keystore set again to the same
/// path: how operators rotate certificates in place). Files that changed path are
/// switched to by shard 0 when the change comes back in the metadata.
fn reload_named_files(ctx: &ShardContext, change: &ConfigChange) {
    let named = crate::broker_config::listener_ssl::named_listeners(change);
    for listener in ctx.listeners.current() {
        let Some(tls) = listener.tls.clone() else {
            continue;
        };
        if !named.contains(&listener.name.to_ascii_lowercase()) {
            continue;
        }
        // File reads and certificate parsing are blocking work: off the shard.
        let spawned = std::thread::Builder::new()
            .name("spate-tls-reload".into())
            .spawn(move || match tls.reload_if_changed() {
                Ok(true) => tracing::info!(listener = %listener.name, "TLS certificates reloaded"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(listener = %listener.name, error = %format!("{e:#}"), "TLS files do not load; keeping the previous ones")
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "TLS reload thread not started");
        }
    }
}

/// Is `name` this broker's id, as a BROKER_LOGGER resource must be?
fn logger_resource(ctx: &ShardContext, name: &str) -> Result<(), (ErrorCode, String)> {
    match name.parse::<i32>() {
        Ok(id) if id == ctx.config.node_id => Ok(()),
        Ok(id) => Err((
            ErrorCode::InvalidRequest,
            format!(
                "Unexpected node id. Expected {}, but received {id}",
                ctx.config.node_id
            ),
        )),
        Err(_) => Err((
            ErrorCode::InvalidRequest,
            format!("Node id must be an integer, but it is: {name}"),
        )),
    }
}

/// Log levels change on this broker only and are not persisted, as in Kafka.
fn alter_loggers(
    ctx: &ShardContext,
    name: &str,
    change: &ConfigChange,
    validate_only: bool,
) -> Result<(), (ErrorCode, String)> {
    let ConfigChange::Incremental(ops) = change else {
        return Err((
            ErrorCode::InvalidRequest,
            "AlterConfigs is deprecated and does not support the resource type BROKER_LOGGER"
                .into(),
        ));
    };
    logger_resource(ctx, name)?;
    let nulls: Vec<&str> = ops
        .iter()
        .filter(|(_, op, v)| *op != crate::controller::alter_op::DELETE && v.is_none())
        .map(|(n, _, _)| n.as_str())
        .collect();
    if !nulls.is_empty() {
        return Err((
            ErrorCode::InvalidRequest,
            format!("Null value not supported for : {}", nulls.join(", ")),
        ));
    }
    crate::log_levels::alter(ops, validate_only)
}

/// Send the topic and broker changes to the controller; other resources are answered
/// here. Returns (error code, message) per resource, in request order.
async fn apply(
    ctx: &Rc<ShardContext>,
    resources: Vec<(i8, String, ConfigChange)>,
    validate_only: bool,
    caller: &Caller,
) -> Vec<(i16, Option<String>)> {
    let denied: Vec<Option<(i16, Option<String>)>> = resources
        .iter()
        .map(|(kind, name, change)| {
            config_denied(ctx, caller, Operation::AlterConfigs, *kind, name)
                .or_else(|| other_broker(ctx, *kind, name))
                .or_else(|| listeners_refused(ctx, *kind, name, change))
        })
        .collect();
    let of_type = |kind: i8| -> Vec<(String, ConfigChange)> {
        resources
            .iter()
            .zip(&denied)
            .filter(|((t, _, _), d)| *t == kind && d.is_none())
            .map(|((_, name, c), _)| (name.clone(), c.clone()))
            .collect()
    };
    let mut topics = change(ctx, of_type(RESOURCE_TOPIC), validate_only, RESOURCE_TOPIC)
        .await
        .into_iter();
    let mut brokers = change(
        ctx,
        of_type(RESOURCE_BROKER),
        validate_only,
        RESOURCE_BROKER,
    )
    .await
    .into_iter();
    let mut groups = change(ctx, of_type(RESOURCE_GROUP), validate_only, RESOURCE_GROUP)
        .await
        .into_iter();
    let lost = || (ErrorCode::UnknownServerError.code(), None);
    let me = ctx.config.node_id.to_string();
    resources
        .into_iter()
        .zip(denied)
        .map(|((kind, name, change), denied)| match (kind, denied) {
            (_, Some(denied)) => denied,
            (RESOURCE_BROKER, None) => {
                let result = brokers.next().unwrap_or_else(lost);
                if result.0 == 0 && !validate_only && name == me {
                    reload_named_files(ctx, &change);
                }
                result
            }
            (RESOURCE_TOPIC, None) => topics.next().unwrap_or_else(lost),
            (RESOURCE_GROUP, None) => groups.next().unwrap_or_else(lost),
            (RESOURCE_BROKER_LOGGER, None) => {
                match alter_loggers(ctx, &name, &change, validate_only) {
                    Ok(()) => (0, None),
                    Err((code, message)) => (code.code(), Some(message)),
                }
            }
            (other, None) => (
                ErrorCode::InvalidRequest.code(),
                Some(format!("Unsupported resource type {other}")),
            ),
        })
        .collect()
}

pub async fn alter(
    ctx: &Rc<ShardContext>,
    req: AlterConfigsRequest,
    caller: &Caller,
) -> AlterConfigsResponse {
    let resources: Vec<(i8, String, ConfigChange)> = req
        .resources
        .iter()
        .map(|r| {
            let change = ConfigChange::Replace(
                r.configs
                    .iter()
                    .map(|c| (c.name.clone(), c.value.clone()))
                    .collect(),
            );
            (r.resource_type, r.resource_name.clone(), change)
        })
        .collect();
    let results = apply(ctx, resources, req.validate_only, caller).await;
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
    caller: &Caller,
) -> IncrementalAlterConfigsResponse {
    let resources: Vec<(i8, String, ConfigChange)> = req
        .resources
        .iter()
        .map(|r| {
            let change = ConfigChange::Incremental(
                r.configs
                    .iter()
                    .map(|c| (c.name.clone(), c.config_operation, c.value.clone()))
                    .collect(),
            );
            (r.resource_type, r.resource_name.clone(), change)
        })
        .collect();
    let results = apply(ctx, resources, req.validate_only, caller).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_resources_map_to_kafkas_acl_resources() {
        assert_eq!(
            acl_resource(RESOURCE_TOPIC, "t"),
            Some((
                ResourceType::Topic,
                "t",
                ErrorCode::TopicAuthorizationFailed
            ))
        );
        assert_eq!(
            acl_resource(RESOURCE_GROUP, "g"),
            Some((
                ResourceType::Group,
                "g",
                ErrorCode::GroupAuthorizationFailed
            ))
        );
        for kind in [
            RESOURCE_BROKER,
            RESOURCE_BROKER_LOGGER,
            RESOURCE_CLIENT_METRICS,
        ] {
            assert_eq!(
                acl_resource(kind, "1"),
                Some((
                    ResourceType::Cluster,
                    CLUSTER_NAME,
                    ErrorCode::ClusterAuthorizationFailed
                ))
            );
        }
        assert_eq!(acl_resource(99, "x"), None);
    }
}
