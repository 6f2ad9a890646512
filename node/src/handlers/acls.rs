//! DescribeAcls, CreateAcls and DeleteAcls. Without an authorizer (`[authorizer]
//! enable = false`) they answer SECURITY_DISABLED, with the messages of a Kafka 4.4
//! broker that has none configured: clients treat that as "ACLs are off" (MirrorMaker
//! 2's topic ACL sync, for one, logs that no authorizer is configured and goes on).
//! With one, ACLs are created and deleted by the active controller as
//! AccessControlEntryRecords and described from this broker's image; describing needs
//! DESCRIBE on the cluster, changing ALTER, as in Kafka.

use std::collections::BTreeMap;
use std::rc::Rc;

use spate_net::messages::create_acls_response::AclCreationResult;
use spate_net::messages::delete_acls_response::{DeleteAclsFilterResult, DeleteAclsMatchingAcl};
use spate_net::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use spate_net::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use spate_net::ErrorCode;

use crate::controller::ControllerRequest;
use crate::security::authorizer::acl::{Acl, AclFilter, Operation};
use crate::security::authorizer::Caller;
use crate::shard::ShardContext;

/// Kafka's message for DescribeAcls without an authorizer.
const DESCRIBE_NO_AUTHORIZER: &str = "No Authorizer is configured on the broker";
/// Kafka's message for each creation and each deletion filter without an authorizer.
const NO_AUTHORIZER: &str = "No Authorizer is configured.";
/// Kafka's default message for CLUSTER_AUTHORIZATION_FAILED.
pub const CLUSTER_DENIED: &str = "Cluster authorization failed.";

pub fn describe_acls(
    ctx: &ShardContext,
    caller: &Caller,
    req: &DescribeAclsRequest,
) -> DescribeAclsResponse {
    let refuse = |code: ErrorCode, message: &str| DescribeAclsResponse {
        error_code: code.code(),
        error_message: Some(message.to_string()),
        ..Default::default()
    };
    if ctx.authorizer.is_none() {
        return refuse(ErrorCode::SecurityDisabled, DESCRIBE_NO_AUTHORIZER);
    }
    if !ctx.authorized_on_cluster(caller, Operation::Describe) {
        return refuse(ErrorCode::ClusterAuthorizationFailed, CLUSTER_DENIED);
    }
    let filter = match AclFilter::from_wire(
        req.resource_type_filter,
        req.resource_name_filter.clone(),
        req.pattern_type_filter,
        req.principal_filter.clone(),
        req.host_filter.clone(),
        req.operation,
        req.permission_type,
    ) {
        Ok(f) => f,
        Err(message) => return refuse(ErrorCode::InvalidRequest, &message),
    };
    let image = ctx.image();
    // Grouped by resource pattern, as Kafka answers.
    let mut resources: BTreeMap<(i8, String, i8), Vec<AclDescription>> = BTreeMap::new();
    for (_, acl) in image.acls.iter().filter(|(_, a)| filter.matches(a)) {
        resources
            .entry((
                acl.resource_type.code(),
                acl.resource_name.clone(),
                acl.pattern_type.code(),
            ))
            .or_default()
            .push(AclDescription {
                principal: acl.principal.clone(),
                host: acl.host.clone(),
                operation: acl.operation.code(),
                permission_type: acl.permission.code(),
            });
    }
    DescribeAclsResponse {
        resources: resources
            .into_iter()
            .map(
                |((resource_type, resource_name, pattern_type), acls)| DescribeAclsResource {
                    resource_type,
                    resource_name,
                    pattern_type,
                    acls,
                },
            )
            .collect(),
        ..Default::default()
    }
}

pub async fn create_acls(
    ctx: &Rc<ShardContext>,
    caller: &Caller,
    req: CreateAclsRequest,
) -> CreateAclsResponse {
    let everyone = |code: ErrorCode, message: &str| CreateAclsResponse {
        results: req
            .creations
            .iter()
            .map(|_| AclCreationResult {
                error_code: code.code(),
                error_message: Some(message.into()),
            })
            .collect(),
        ..Default::default()
    };
    if ctx.authorizer.is_none() {
        return everyone(ErrorCode::SecurityDisabled, NO_AUTHORIZER);
    }
    if !ctx.authorized_on_cluster(caller, Operation::Alter) {
        return everyone(ErrorCode::ClusterAuthorizationFailed, CLUSTER_DENIED);
    }
    let checked: Vec<Result<Acl, String>> = req
        .creations
        .iter()
        .map(|c| {
            Acl::from_wire(
                c.resource_type,
                &c.resource_name,
                c.resource_pattern_type,
                &c.principal,
                &c.host,
                c.operation,
                c.permission_type,
            )
        })
        .collect();
    let valid: Vec<Acl> = checked
        .iter()
        .filter_map(|c| c.as_ref().ok().cloned())
        .collect();
    let mut made = controller_outcomes(ctx, ControllerRequest::CreateAcls { acls: valid })
        .await
        .into_iter();
    let results = checked
        .into_iter()
        .map(|c| {
            let (error_code, error_message) = match c {
                Ok(_) => made.next().unwrap_or_else(unavailable),
                Err(message) => (ErrorCode::InvalidRequest.code(), Some(message)),
            };
            AclCreationResult {
                error_code,
                error_message,
            }
        })
        .collect();
    CreateAclsResponse {
        results,
        ..Default::default()
    }
}

pub async fn delete_acls(
    ctx: &Rc<ShardContext>,
    caller: &Caller,
    req: DeleteAclsRequest,
) -> DeleteAclsResponse {
    let everyone = |code: ErrorCode, message: &str| DeleteAclsResponse {
        filter_results: req
            .filters
            .iter()
            .map(|_| DeleteAclsFilterResult {
                error_code: code.code(),
                error_message: Some(message.into()),
                matching_acls: Vec::new(),
            })
            .collect(),
        ..Default::default()
    };
    if ctx.authorizer.is_none() {
        return everyone(ErrorCode::SecurityDisabled, NO_AUTHORIZER);
    }
    if !ctx.authorized_on_cluster(caller, Operation::Alter) {
        return everyone(ErrorCode::ClusterAuthorizationFailed, CLUSTER_DENIED);
    }
    let image = ctx.image();
    // Per filter: the ids of the ACLs it matches (or why it is refused).
    let matched: Vec<Result<Vec<[u8; 16]>, String>> = req
        .filters
        .iter()
        .map(|f| {
            let filter = AclFilter::from_wire(
                f.resource_type_filter,
                f.resource_name_filter.clone(),
                f.pattern_type_filter,
                f.principal_filter.clone(),
                f.host_filter.clone(),
                f.operation,
                f.permission_type,
            )?;
            Ok(image
                .acls
                .iter()
                .filter(|(_, a)| filter.matches(a))
                .map(|(id, _)| *id)
                .collect())
        })
        .collect();
    let mut ids: Vec<[u8; 16]> = matched.iter().flatten().flatten().copied().collect();
    ids.sort_unstable();
    ids.dedup();
    let outcomes =
        controller_outcomes(ctx, ControllerRequest::DeleteAcls { ids: ids.clone() }).await;
    let outcome_of = |id: &[u8; 16]| {
        ids.binary_search(id)
            .ok()
            .and_then(|i| outcomes.get(i).cloned())
            .unwrap_or_else(unavailable)
    };
    let filter_results = matched
        .into_iter()
        .map(|m| match m {
            Err(message) => DeleteAclsFilterResult {
                error_code: ErrorCode::InvalidRequest.code(),
                error_message: Some(message),
                matching_acls: Vec::new(),
            },
            Ok(found) => {
                let mut result = DeleteAclsFilterResult::default();
                for id in found {
                    let (code, message) = outcome_of(&id);
                    let Some(acl) = image.acls.get(&id) else {
                        continue;
                    };
                    if code == ErrorCode::ResourceNotFound.code() {
                        continue;
                    }
                    if code != 0 {
                        // The change was not made (no controller): the filter fails.
                        result.error_code = code;
                        result.error_message = message;
                        result.matching_acls.clear();
                        break;
                    }
                    result.matching_acls.push(DeleteAclsMatchingAcl {
                        error_code: 0,
                        error_message: None,
                        resource_type: acl.resource_type.code(),
                        resource_name: acl.resource_name.clone(),
                        pattern_type: acl.pattern_type.code(),
                        principal: acl.principal.clone(),
                        host: acl.host.clone(),
                        operation: acl.operation.code(),
                        permission_type: acl.permission.code(),
                    });
                }
                result
            }
        })
        .collect();
    DeleteAclsResponse {
        filter_results,
        ..Default::default()
    }
}

fn unavailable() -> (i16, Option<String>) {
    (
        ErrorCode::UnknownServerError.code(),
        Some("controller unavailable".into()),
    )
}

/// The controller's outcome per item, in order (none for an empty request).
async fn controller_outcomes(
    ctx: &Rc<ShardContext>,
    request: ControllerRequest,
) -> Vec<(i16, Option<String>)> {
    let empty = match &request {
        ControllerRequest::CreateAcls { acls } => acls.is_empty(),
        ControllerRequest::DeleteAcls { ids } => ids.is_empty(),
        _ => false,
    };
    if empty {
        return Vec::new();
    }
    ctx.change_topics(request)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|o| (o.error, o.message))
        .collect()
}
