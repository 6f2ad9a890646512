//! ListConfigResources (KIP-1142; version 0 was ListClientMetricsResources): the
//! resources that have configs, of the requested types, in Kafka's order (groups,
//! client-metrics subscriptions, broker loggers, brokers, topics).

use spate_net::messages::list_config_resources_response::ConfigResource;
use spate_net::messages::{ListConfigResourcesRequest, ListConfigResourcesResponse};
use spate_net::ErrorCode;

use crate::handlers::configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use crate::metadata::MetadataImage;
use crate::security::authorizer::acl::Operation;
use crate::security::authorizer::Caller;
use crate::shard::ShardContext;

/// Kafka's `ConfigResource.Type` codes of the other listable resources.
const RESOURCE_BROKER_LOGGER: i8 = 8;
const RESOURCE_CLIENT_METRICS: i8 = 16;
const RESOURCE_GROUP: i8 = 32;

pub fn handle(
    ctx: &ShardContext,
    req: ListConfigResourcesRequest,
    version: i16,
    caller: &Caller,
) -> ListConfigResourcesResponse {
    // Kafka: DESCRIBE_CONFIGS on the cluster.
    if !ctx.authorized_on_cluster(caller, Operation::DescribeConfigs) {
        return ListConfigResourcesResponse {
            error_code: ErrorCode::ClusterAuthorizationFailed.code(),
            ..Default::default()
        };
    }
    match list(
        &ctx.image(),
        ctx.config.node_id,
        &req.resource_types,
        version,
    ) {
        Ok(config_resources) => ListConfigResourcesResponse {
            config_resources,
            ..Default::default()
        },
        Err(code) => ListConfigResourcesResponse {
            error_code: code.code(),
            ..Default::default()
        },
    }
}

fn list(
    image: &MetadataImage,
    node: i32,
    requested: &[i8],
    version: i16,
) -> Result<Vec<ConfigResource>, ErrorCode> {
    // Version 0 lists client-metrics subscriptions only; later versions every type
    // unless the request names some.
    let supported: &[i8] = if version == 0 {
        &[RESOURCE_CLIENT_METRICS]
    } else {
        &[
            RESOURCE_TOPIC,
            RESOURCE_BROKER,
            RESOURCE_BROKER_LOGGER,
            RESOURCE_CLIENT_METRICS,
            RESOURCE_GROUP,
        ]
    };
    if requested.iter().any(|t| !supported.contains(t)) {
        return Err(ErrorCode::UnsupportedVersion);
    }
    let wanted = |t: i8| supported.contains(&t) && (requested.is_empty() || requested.contains(&t));
    let resource = |resource_type: i8, resource_name: String| ConfigResource {
        resource_name,
        resource_type,
    };
    // Groups and client-metrics subscriptions are listed when they have configs; Spate
    // has no client-metrics subscriptions.
    let mut out = Vec::new();
    if wanted(RESOURCE_GROUP) {
        out.extend(
            image
                .group_configs
                .keys()
                .map(|g| resource(RESOURCE_GROUP, g.clone())),
        );
    }
    for kind in [RESOURCE_BROKER_LOGGER, RESOURCE_BROKER] {
        if wanted(kind) {
            out.push(resource(kind, node.to_string()));
        }
    }
    if wanted(RESOURCE_TOPIC) {
        out.extend(
            image
                .topics
                .keys()
                .map(|t| resource(RESOURCE_TOPIC, t.clone())),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::metadata::records;

    #[test]
    fn lists_by_type_in_kafkas_order() {
        let mut img = MetadataImage::default();
        img.replay_all(&records::create_topic("t", [1; 16], 1, 0, &BTreeMap::new()));
        let names = |r: Vec<ConfigResource>| -> Vec<(i8, String)> {
            r.into_iter()
                .map(|c| (c.resource_type, c.resource_name))
                .collect()
        };
        assert_eq!(
            names(list(&img, 0, &[], 1).unwrap()),
            vec![(8, "0".into()), (4, "0".into()), (2, "t".into())]
        );
        img.replay_all(&records::config_diff(
            records::resource_type::GROUP,
            "g",
            &BTreeMap::new(),
            &BTreeMap::from([("consumer.session.timeout.ms".into(), "50000".into())]),
        ));
        assert_eq!(
            names(list(&img, 0, &[32, 2], 1).unwrap()),
            vec![(32, "g".into()), (2, "t".into())]
        );
        assert_eq!(
            names(list(&img, 0, &[2, 16], 1).unwrap()),
            vec![(2, "t".into())]
        );
        assert_eq!(names(list(&img, 0, &[], 0).unwrap()), vec![]);
        assert_eq!(
            list(&img, 0, &[3], 1).unwrap_err(),
            ErrorCode::UnsupportedVersion
        );
    }
}
