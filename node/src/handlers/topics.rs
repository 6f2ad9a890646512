//! CreateTopics, DeleteTopics and CreatePartitions: checked and applied by the
//! controller; answered once every shard has the change.

use std::rc::Rc;

use spate_net::messages::create_partitions_response::CreatePartitionsTopicResult;
use spate_net::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use spate_net::messages::delete_topics_response::DeletableTopicResult;
use spate_net::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse,
};
use spate_net::{ErrorCode, Uuid};

use super::configs::topic_entries;
use super::throttle::{MutationQuota, MUTATION_REFUSED};
use crate::controller::{ControllerRequest, NewPartitions, NewTopic, TopicOutcome};
use crate::security::authorizer::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::security::authorizer::Caller;
use crate::shard::ShardContext;

/// DeleteTopics v6 names topics by name or id.
const DELETE_BY_ID_FROM: i16 = 6;

fn controller_unavailable(name: &str) -> TopicOutcome {
    TopicOutcome {
        name: name.to_string(),
        error: ErrorCode::UnknownServerError.code(),
        message: Some("controller unavailable".into()),
        topic: None,
    }
}

pub async fn create_topics(
    ctx: &Rc<ShardContext>,
    req: CreateTopicsRequest,
    caller: &Caller,
    quota: Option<MutationQuota>,
) -> CreateTopicsResponse {
    let mut seen = std::collections::HashSet::new();
    let duplicates: std::collections::HashSet<String> = req
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.clone()))
        .map(|t| t.name.clone())
        .collect();
    // Kafka: CREATE on the cluster, or else on each topic (TOPIC_AUTHORIZATION_FAILED).
    // Configs come back only with DESCRIBE_CONFIGS on the topic.
    let denied = if ctx.may_see(
        caller,
        Operation::Create,
        ResourceType::Cluster,
        CLUSTER_NAME,
    ) {
        Default::default()
    } else {
        ctx.denied_topics(
            caller,
            Operation::Create,
            req.topics
                .iter()
                .filter(|t| !duplicates.contains(&t.name))
                .map(|t| t.name.as_str()),
        )
    };
    // The controller mutation quota, topic by topic in request order (Kafka's order).
    let mut throttled = Vec::new();
    let topics: Vec<NewTopic> = req
        .topics
        .iter()
        .filter(|t| !duplicates.contains(&t.name) && !denied.contains(&t.name))
        .filter(|t| {
            let partitions = if !t.assignments.is_empty() {
                t.assignments.len()
            } else if t.num_partitions == -1 {
                ctx.config.num_partitions.max(0) as usize
            } else {
                t.num_partitions.max(0) as usize
            };
            let admitted =
                req.validate_only || quota.as_ref().is_none_or(|q| q.admit(ctx, partitions));
            if !admitted {
                throttled.push(t.name.clone());
            }
            admitted
        })
        .map(|t| NewTopic {
            name: t.name.clone(),
            num_partitions: t.num_partitions,
            replication_factor: t.replication_factor,
            assignments: t
                .assignments
                .iter()
                .map(|a| (a.partition_index, a.broker_ids.clone()))
                .collect(),
            configs: t
                .configs
                .iter()
                .map(|c| (c.name.clone(), c.value.clone()))
                .collect(),
        })
        .collect();
    let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
    let outcomes = if topics.is_empty() {
        Vec::new()
    } else {
        ctx.change_topics(ControllerRequest::CreateTopics {
            topics,
            validate_only: req.validate_only,
        })
        .await
        .unwrap_or_else(|| names.iter().map(|n| controller_unavailable(n)).collect())
    };
    let mut results: Vec<CreatableTopicResult> = outcomes
        .into_iter()
        .map(|o| {
            let mut r = CreatableTopicResult {
                name: o.name.clone(),
                error_code: o.error,
                error_message: o.message,
                num_partitions: -1,
                replication_factor: -1,
                configs: None,
                ..Default::default()
            };
            if o.error == 0
                && !ctx.may_see(
                    caller,
                    Operation::DescribeConfigs,
                    ResourceType::Topic,
                    &o.name,
                )
            {
                r.configs = Some(Vec::new());
                r.topic_config_error_code = ErrorCode::TopicAuthorizationFailed.code();
                return r;
            }
            if let Some(t) = o.topic.filter(|_| o.error == 0) {
                r.topic_id = Uuid(t.id);
                r.num_partitions = t.partitions.len() as i32;
                r.replication_factor = 1;
                r.configs = Some(
                    topic_entries(ctx, &t)
                        .into_iter()
                        .map(|e| CreatableTopicConfigs {
                            name: e.name,
                            value: e.value,
                            read_only: e.read_only,
                            config_source: e.source,
                            is_sensitive: e.sensitive,
                        })
                        .collect(),
                );
            } else if o.error == 0 && req.validate_only {
                // validate_only: report what would have been created.
                if let Some(t) = req.topics.iter().find(|t| t.name == o.name) {
                    r.num_partitions = if t.num_partitions == -1 {
                        ctx.config.num_partitions
                    } else {
                        t.num_partitions
                    };
                    r.replication_factor = 1;
                }
            }
            r
        })
        .collect();
    for name in denied {
        results.push(CreatableTopicResult {
            name,
            error_code: ErrorCode::TopicAuthorizationFailed.code(),
            error_message: Some("Authorization failed.".into()),
            num_partitions: -1,
            replication_factor: -1,
            configs: None,
            ..Default::default()
        });
    }
    for name in throttled {
        results.push(CreatableTopicResult {
            name,
            error_code: ErrorCode::ThrottlingQuotaExceeded.code(),
            error_message: Some(MUTATION_REFUSED.into()),
            num_partitions: -1,
            replication_factor: -1,
            configs: None,
            ..Default::default()
        });
    }
    for name in duplicates {
        results.push(CreatableTopicResult {
            name: name.clone(),
            error_code: ErrorCode::InvalidRequest.code(),
            error_message: Some(format!(
                "Create topics request from client contains a duplicate topic: {name}"
            )),
            num_partitions: -1,
            replication_factor: -1,
            configs: None,
            ..Default::default()
        });
    }
    CreateTopicsResponse {
        topics: results,
        throttle_time_ms: quota.map_or(0, |q| q.throttle_time_ms(ctx)),
    }
}

pub async fn delete_topics(
    ctx: &Rc<ShardContext>,
    req: DeleteTopicsRequest,
    version: i16,
    caller: &Caller,
    quota: Option<MutationQuota>,
) -> DeleteTopicsResponse {
    let image = ctx.image();
    // (name if resolved, requested id, error if unresolvable)
    let requested: Vec<(Option<String>, Uuid)> = if version >= DELETE_BY_ID_FROM {
        req.topics
            .iter()
            .map(|t| match &t.name {
                Some(n) => (
                    Some(n.clone()),
                    image.topic(n).map(|t| Uuid(t.id)).unwrap_or_default(),
                ),
                None => (
                    image.topic_by_id(&t.topic_id.0).map(|t| t.name.clone()),
                    t.topic_id,
                ),
            })
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| {
                (
                    Some(n.clone()),
                    image.topic(n).map(|t| Uuid(t.id)).unwrap_or_default(),
                )
            })
            .collect()
    };
    // Kafka: DELETE on the cluster, or else on each topic. A topic named by id whose
    // caller may not DESCRIBE it comes back without its name.
    let by_id: Vec<bool> = if version >= DELETE_BY_ID_FROM {
        req.topics.iter().map(|t| t.name.is_none()).collect()
    } else {
        vec![false; requested.len()]
    };
    let cluster_delete = ctx.authorizer.is_none()
        || ctx.may_see(
            caller,
            Operation::Delete,
            ResourceType::Cluster,
            CLUSTER_NAME,
        );
    let denied: Vec<Option<DeletableTopicResult>> = requested
        .iter()
        .zip(&by_id)
        .map(|((name, id), &by_id)| {
            let name = name.as_deref().filter(|_| !cluster_delete)?;
            if ctx.authorized(caller, Operation::Delete, ResourceType::Topic, name) {
                return None;
            }
            let describable = ctx.may_see(caller, Operation::Describe, ResourceType::Topic, name);
            Some(DeletableTopicResult {
                name: (!by_id || describable).then(|| name.to_string()),
                topic_id: if by_id { *id } else { Uuid::default() },
                error_code: ErrorCode::TopicAuthorizationFailed.code(),
                error_message: Some("Topic authorization failed.".into()),
            })
        })
        .collect();
    // The controller mutation quota, topic by topic: a refused one is answered as denied.
    let denied: Vec<Option<DeletableTopicResult>> = requested
        .iter()
        .zip(denied)
        .zip(&by_id)
        .map(|(((name, id), denied), &by_id)| {
            let (Some(q), Some(name), None) = (&quota, name, &denied) else {
                return denied;
            };
            let partitions = image.topic(name).map_or(0, |t| t.partitions.len());
            (!q.admit(ctx, partitions)).then(|| DeletableTopicResult {
                name: Some(name.clone()),
                topic_id: if by_id { *id } else { Uuid::default() },
                error_code: ErrorCode::ThrottlingQuotaExceeded.code(),
                error_message: Some(MUTATION_REFUSED.into()),
            })
        })
        .collect();
    let names: Vec<String> = requested
        .iter()
        .zip(&denied)
        .filter(|(_, d)| d.is_none())
        .filter_map(|((n, _), _)| n.clone())
        .collect();
    let mut outcomes = if names.is_empty() {
        Vec::new()
    } else {
        ctx.change_topics(ControllerRequest::DeleteTopics {
            names: names.clone(),
        })
        .await
        .unwrap_or_else(|| names.iter().map(|n| controller_unavailable(n)).collect())
    }
    .into_iter();
    let responses = requested
        .into_iter()
        .zip(denied)
        .map(|((name, id), denied)| match (name, denied) {
            (_, Some(denied)) => denied,
            (Some(name), None) => {
                let o = outcomes
                    .next()
                    .unwrap_or_else(|| controller_unavailable(&name));
                DeletableTopicResult {
                    name: Some(name),
                    topic_id: id,
                    error_code: o.error,
                    error_message: o.message,
                }
            }
            (None, None) => DeletableTopicResult {
                name: None,
                topic_id: id,
                error_code: ErrorCode::UnknownTopicId.code(),
                error_message: Some("This server does not host this topic ID.".into()),
            },
        })
        .collect();
    DeleteTopicsResponse {
        responses,
        throttle_time_ms: quota.map_or(0, |q| q.throttle_time_ms(ctx)),
    }
}

pub async fn create_partitions(
    ctx: &Rc<ShardContext>,
    req: CreatePartitionsRequest,
    caller: &Caller,
    quota: Option<MutationQuota>,
) -> CreatePartitionsResponse {
    // Kafka: ALTER on each topic, else TOPIC_AUTHORIZATION_FAILED.
    let denied = ctx.denied_topics(
        caller,
        Operation::Alter,
        req.topics.iter().map(|t| t.name.as_str()),
    );
    // The controller mutation quota, topic by topic (the partitions it would add).
    let image = ctx.image();
    let mut throttled = std::collections::HashSet::new();
    let asks: Vec<NewPartitions> = req
        .topics
        .iter()
        .filter(|t| !denied.contains(&t.name))
        .filter(|t| {
            let Some(q) = quota.as_ref().filter(|_| !req.validate_only) else {
                return true;
            };
            let now = image.topic(&t.name).map_or(0, |t| t.partitions.len());
            let added = usize::try_from(t.count).unwrap_or(0).saturating_sub(now);
            let admitted = q.admit(ctx, added);
            if !admitted {
                throttled.insert(t.name.clone());
            }
            admitted
        })
        .map(|t| {
            let assignments = t
                .assignments
                .as_ref()
                .map(|a| a.iter().map(|r| r.broker_ids.clone()).collect());
            (t.name.clone(), t.count, assignments)
        })
        .collect();
    let names: Vec<String> = asks.iter().map(|(n, _, _)| n.clone()).collect();
    let mut outcomes = if asks.is_empty() {
        Vec::new()
    } else {
        ctx.change_topics(ControllerRequest::CreatePartitions {
            topics: asks,
            validate_only: req.validate_only,
        })
        .await
        .unwrap_or_else(|| names.iter().map(|n| controller_unavailable(n)).collect())
    }
    .into_iter();
    let results = req
        .topics
        .iter()
        .map(|t| {
            if denied.contains(&t.name) {
                return CreatePartitionsTopicResult {
                    name: t.name.clone(),
                    error_code: ErrorCode::TopicAuthorizationFailed.code(),
                    error_message: None,
                };
            }
            if throttled.contains(&t.name) {
                return CreatePartitionsTopicResult {
                    name: t.name.clone(),
                    error_code: ErrorCode::ThrottlingQuotaExceeded.code(),
                    error_message: Some(MUTATION_REFUSED.into()),
                };
            }
            let (error_code, error_message) = outcomes
                .next()
                .map(|o| (o.error, o.message))
                .unwrap_or((ErrorCode::UnknownServerError.code(), None));
            CreatePartitionsTopicResult {
                name: t.name.clone(),
                error_code,
                error_message,
            }
        })
        .collect();
    CreatePartitionsResponse {
        results,
        throttle_time_ms: quota.map_or(0, |q| q.throttle_time_ms(ctx)),
    }
}
