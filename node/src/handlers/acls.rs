//! DescribeAcls, CreateAcls and DeleteAcls. Spate has no authorizer, so these answer
//! SECURITY_DISABLED, with the messages of a Kafka 4.4 broker that has none configured.
//! Clients treat that as "ACLs are off" (MirrorMaker 2's topic ACL sync, for one, then
//! logs that no authorizer is configured and goes on); an API left unadvertised instead
//! makes the Java admin client throw UnsupportedVersionException.

use spate_net::messages::create_acls_response::AclCreationResult;
use spate_net::messages::delete_acls_response::DeleteAclsFilterResult;
use spate_net::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsResponse,
};
use spate_net::ErrorCode;

/// Kafka's message for DescribeAcls without an authorizer.
const DESCRIBE_NO_AUTHORIZER: &str = "No Authorizer is configured on the broker";
/// Kafka's message for each creation and each deletion filter without an authorizer.
const NO_AUTHORIZER: &str = "No Authorizer is configured.";

pub fn describe_acls() -> DescribeAclsResponse {
    DescribeAclsResponse {
        error_code: ErrorCode::SecurityDisabled.code(),
        error_message: Some(DESCRIBE_NO_AUTHORIZER.into()),
        ..Default::default()
    }
}

pub fn create_acls(req: &CreateAclsRequest) -> CreateAclsResponse {
    CreateAclsResponse {
        results: req
            .creations
            .iter()
            .map(|_| AclCreationResult {
                error_code: ErrorCode::SecurityDisabled.code(),
                error_message: Some(NO_AUTHORIZER.into()),
            })
            .collect(),
        ..Default::default()
    }
}

pub fn delete_acls(req: &DeleteAclsRequest) -> DeleteAclsResponse {
    DeleteAclsResponse {
        filter_results: req
            .filters
            .iter()
            .map(|_| DeleteAclsFilterResult {
                error_code: ErrorCode::SecurityDisabled.code(),
                error_message: Some(NO_AUTHORIZER.into()),
                matching_acls: Vec::new(),
            })
            .collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spate_net::messages::create_acls_request::AclCreation;
    use spate_net::messages::delete_acls_request::DeleteAclsFilter;

    #[test]
    fn every_acl_request_answers_security_disabled() {
        let d = describe_acls();
        assert_eq!(d.error_code, 54);
        assert_eq!(
            d.error_message.as_deref(),
            Some("No Authorizer is configured on the broker")
        );
        assert!(d.resources.is_empty());

        let c = create_acls(&CreateAclsRequest {
            creations: vec![AclCreation::default(), AclCreation::default()],
        });
        assert_eq!(c.results.len(), 2);
        for r in &c.results {
            assert_eq!(r.error_code, 54);
            assert_eq!(
                r.error_message.as_deref(),
                Some("No Authorizer is configured.")
            );
        }

        let del = delete_acls(&DeleteAclsRequest {
            filters: vec![DeleteAclsFilter::default()],
        });
        assert_eq!(del.filter_results.len(), 1);
        assert_eq!(del.filter_results[0].error_code, 54);
        assert_eq!(
            del.filter_results[0].error_message.as_deref(),
            Some("No Authorizer is configured.")
        );
        assert!(del.filter_results[0].matching_acls.is_empty());
    }
}
