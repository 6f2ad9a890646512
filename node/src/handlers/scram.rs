//! AlterUserScramCredentials (made by the active controller) and
//! DescribeUserScramCredentials (answered from this broker's image). With an
//! authorizer they need ALTER and DESCRIBE on the cluster, as in Kafka.

use std::rc::Rc;

use spate_net::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use spate_net::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use spate_net::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use spate_net::ErrorCode;

use super::acls::CLUSTER_DENIED;
use crate::controller::ControllerRequest;
use crate::security::authorizer::acl::Operation;
use crate::security::authorizer::Caller;
use crate::security::credentials::{self, ScramDeletion, ScramUpsertion};
use crate::shard::ShardContext;

pub async fn alter(
    ctx: &Rc<ShardContext>,
    caller: &Caller,
    req: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    if !ctx.authorized_on_cluster(caller, Operation::Alter) {
        let mut users: Vec<String> = req.deletions.iter().map(|d| d.name.clone()).collect();
        users.extend(req.upsertions.iter().map(|u| u.name.clone()));
        let mut seen = std::collections::HashSet::new();
        users.retain(|u| seen.insert(u.clone()));
        return AlterUserScramCredentialsResponse {
            results: users
                .into_iter()
                .map(|user| AlterUserScramCredentialsResult {
                    user,
                    error_code: ErrorCode::ClusterAuthorizationFailed.code(),
                    error_message: Some(CLUSTER_DENIED.into()),
                })
                .collect(),
            ..Default::default()
        };
    }
    let request = ControllerRequest::AlterScramCredentials {
        upsertions: req
            .upsertions
            .iter()
            .map(|u| ScramUpsertion {
                user: u.name.clone(),
                mechanism: u.mechanism,
                iterations: u.iterations,
                salt: u.salt.to_vec(),
                salted_password: u.salted_password.to_vec(),
            })
            .collect(),
        deletions: req
            .deletions
            .iter()
            .map(|d| ScramDeletion {
                user: d.name.clone(),
                mechanism: d.mechanism,
            })
            .collect(),
    };
    let users = crate::controller::request_names(&request);
    let results = match ctx.change_topics(request).await {
        Some(outcomes) => outcomes
            .into_iter()
            .map(|o| AlterUserScramCredentialsResult {
                user: o.name,
                error_code: o.error,
                error_message: o.message,
            })
            .collect(),
        None => users
            .into_iter()
            .map(|user| AlterUserScramCredentialsResult {
                user,
                error_code: ErrorCode::UnknownServerError.code(),
                error_message: Some("controller unavailable".into()),
            })
            .collect(),
    };
    AlterUserScramCredentialsResponse {
        results,
        ..Default::default()
    }
}

pub fn describe(
    ctx: &ShardContext,
    caller: &Caller,
    req: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    if !ctx.authorized_on_cluster(caller, Operation::Describe) {
        return DescribeUserScramCredentialsResponse {
            error_code: ErrorCode::ClusterAuthorizationFailed.code(),
            error_message: Some(CLUSTER_DENIED.into()),
            ..Default::default()
        };
    }
    let users: Option<Vec<String>> = req
        .users
        .map(|users| users.into_iter().map(|u| u.name).collect());
    let results = credentials::describe(&ctx.image(), users.as_deref())
        .into_iter()
        .map(
            |(user, error_code, error_message, infos)| DescribeUserScramCredentialsResult {
                user,
                error_code,
                error_message,
                credential_infos: infos
                    .into_iter()
                    .map(|(mechanism, iterations)| CredentialInfo {
                        mechanism,
                        iterations,
                    })
                    .collect(),
            },
        )
        .collect();
    DescribeUserScramCredentialsResponse {
        results,
        ..Default::default()
    }
}
