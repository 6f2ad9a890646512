//! AlterClientQuotas (made by the active controller) and DescribeClientQuotas
//! (answered from this broker's image). With an authorizer they need ALTER_CONFIGS and
//! DESCRIBE_CONFIGS on the cluster, as in Kafka. `kafka-configs.sh --entity-type
//! users|clients|ips` uses both.

use std::rc::Rc;

use spate_net::messages::alter_client_quotas_response::{
    EntityData as AlteredEntity, EntryData as AlteredEntry,
};
use spate_net::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use spate_net::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse,
};
use spate_net::ErrorCode;

use super::acls::CLUSTER_DENIED;
use crate::controller::ControllerRequest;
use crate::security::authorizer::acl::Operation;
use crate::security::authorizer::Caller;
use crate::shard::ShardContext;

pub async fn alter(
    ctx: &Rc<ShardContext>,
    caller: &Caller,
    req: AlterClientQuotasRequest,
) -> AlterClientQuotasResponse {
    let entities: Vec<Vec<AlteredEntity>> = req
        .entries
        .iter()
        .map(|e| {
            e.entity
                .iter()
                .map(|c| AlteredEntity {
                    entity_type: c.entity_type.clone(),
                    entity_name: c.entity_name.clone(),
                })
                .collect()
        })
        .collect();
    let outcomes: Vec<(i16, Option<String>)> =
        if !ctx.authorized_on_cluster(caller, Operation::AlterConfigs) {
            vec![
                (
                    ErrorCode::ClusterAuthorizationFailed.code(),
                    Some(CLUSTER_DENIED.into())
                );
                req.entries.len()
            ]
        } else if req.entries.is_empty() {
            Vec::new()
        } else {
            let entries = req
                .entries
                .iter()
                .map(|e| {
                    (
                        e.entity
                            .iter()
                            .map(|c| (c.entity_type.clone(), c.entity_name.clone()))
                            .collect(),
                        e.ops
                            .iter()
                            .map(|op| (op.key.clone(), (!op.remove).then_some(op.value)))
                            .collect(),
                    )
                })
                .collect();
            let request = ControllerRequest::AlterClientQuotas {
                entries,
                validate_only: req.validate_only,
            };
            match ctx.change_topics(request).await {
                Some(outcomes) => outcomes.into_iter().map(|o| (o.error, o.message)).collect(),
                None => vec![
                    (
                        ErrorCode::UnknownServerError.code(),
                        Some("controller unavailable".into())
                    );
                    req.entries.len()
                ],
            }
        };
    debug_assert_eq!(outcomes.len(), entities.len(), "one outcome per entry");
    AlterClientQuotasResponse {
        entries: entities
            .into_iter()
            .zip(outcomes)
            .map(|(entity, (error_code, error_message))| AlteredEntry {
                error_code,
                error_message,
                entity,
            })
            .collect(),
        ..Default::default()
    }
}

pub fn describe(
    ctx: &ShardContext,
    caller: &Caller,
    req: &DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    if !ctx.authorized_on_cluster(caller, Operation::DescribeConfigs) {
        return DescribeClientQuotasResponse {
            error_code: ErrorCode::ClusterAuthorizationFailed.code(),
            error_message: Some(CLUSTER_DENIED.into()),
            entries: None,
            ..Default::default()
        };
    }
    let components: Vec<(String, i8, Option<String>)> = req
        .components
        .iter()
        .map(|c| (c.entity_type.clone(), c.match_type, c.r#match.clone()))
        .collect();
    let image = ctx.image();
    match image.client_quotas.describe(&components, req.strict) {
        Ok(found) => DescribeClientQuotasResponse {
            entries: Some(
                found
                    .into_iter()
                    .map(|(entity, values)| EntryData {
                        entity: entity
                            .iter()
                            .map(|(t, n)| EntityData {
                                entity_type: t.clone(),
                                entity_name: n.clone(),
                            })
                            .collect(),
                        values: values
                            .iter()
                            .map(|(key, value)| ValueData {
                                key: key.clone(),
                                value: *value,
                            })
                            .collect(),
                    })
                    .collect(),
            ),
            ..Default::default()
        },
        Err((error_code, message)) => DescribeClientQuotasResponse {
            error_code,
            error_message: Some(message),
            entries: None,
            ..Default::default()
        },
    }
}
