//! Delegation tokens (CreateDelegationToken, RenewDelegationToken,
//! ExpireDelegationToken, DescribeDelegationToken): Spate has none, so it answers as a
//! Kafka 4 cluster without `delegation.token.secret.key` answers. On a PLAINTEXT or
//! 1-way TLS connection the broker refuses first with DELEGATION_TOKEN_REQUEST_NOT_ALLOWED
//! (timestamps -1); elsewhere Create's owner and renewers are checked by the broker, and
//! then the controller (or, for Describe, the broker) answers DELEGATION_TOKEN_AUTH_DISABLED.

use bytes::Bytes;
use spate_net::messages::{
    CreateDelegationTokenRequest, CreateDelegationTokenResponse, DescribeDelegationTokenResponse,
    ExpireDelegationTokenResponse, RenewDelegationTokenResponse,
};
use spate_net::ErrorCode;

use crate::security::authorizer::Caller;
use crate::security::listeners::SecurityProtocol;
use crate::security::Principal;

/// Kafka's `DelegationTokenManager.ErrorTimestamp`, in the broker's own refusals.
const ERROR_TIMESTAMP: i64 = -1;

/// Kafka's `allowTokenRequests`: not on PLAINTEXT, nor on TLS without a client
/// certificate (Spate has no token-authenticated connections to refuse too).
pub fn allowed(protocol: SecurityProtocol, principal: &Principal) -> bool {
    match protocol {
        SecurityProtocol::Plaintext => false,
        SecurityProtocol::Ssl => *principal != Principal::anonymous(),
        SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl => true,
    }
}

/// `may_create_for`: whether the caller holds CREATE_TOKENS on the owner (a `User`
/// resource named `Type:name`), checked only for another owner than the caller.
pub fn create(
    req: &CreateDelegationTokenRequest,
    caller: &Caller,
    allowed: bool,
    may_create_for: impl Fn(&str) -> bool,
) -> CreateDelegationTokenResponse {
    let requester = &caller.principal;
    let (owner_type, owner_name) = match &req.owner_principal_name {
        Some(name) if !name.is_empty() => (
            req.owner_principal_type.clone().unwrap_or_default(),
            name.clone(),
        ),
        _ => (requester.kind.to_string(), requester.name.clone()),
    };
    let owner_is_requester = owner_type == requester.kind && owner_name == requester.name;
    let refused = |code: ErrorCode, timestamp: i64| CreateDelegationTokenResponse {
        error_code: code.code(),
        principal_type: owner_type.clone(),
        principal_name: owner_name.clone(),
        token_requester_principal_type: requester.kind.to_string(),
        token_requester_principal_name: requester.name.clone(),
        issue_timestamp_ms: timestamp,
        expiry_timestamp_ms: timestamp,
        max_timestamp_ms: timestamp,
        token_id: String::new(),
        hmac: Bytes::new(),
        throttle_time_ms: 0,
    };
    let owner = format!("{owner_type}:{owner_name}");
    if !allowed {
        refused(ErrorCode::DelegationTokenRequestNotAllowed, ERROR_TIMESTAMP)
    } else if !owner_is_requester && !may_create_for(&owner) {
        refused(
            ErrorCode::DelegationTokenAuthorizationFailed,
            ERROR_TIMESTAMP,
        )
    } else if req.renewers.iter().any(|r| r.principal_type != "User") {
        refused(ErrorCode::InvalidPrincipalType, ERROR_TIMESTAMP)
    } else {
        // The controller's answer: its response's timestamps are left at 0.
        refused(ErrorCode::DelegationTokenAuthDisabled, 0)
    }
}

pub fn renew(allowed: bool) -> RenewDelegationTokenResponse {
    let (code, expiry) = refusal(allowed);
    RenewDelegationTokenResponse {
        error_code: code.code(),
        expiry_timestamp_ms: expiry,
        throttle_time_ms: 0,
    }
}

pub fn expire(allowed: bool) -> ExpireDelegationTokenResponse {
    let (code, expiry) = refusal(allowed);
    ExpireDelegationTokenResponse {
        error_code: code.code(),
        expiry_timestamp_ms: expiry,
        throttle_time_ms: 0,
    }
}

pub fn describe(allowed: bool) -> DescribeDelegationTokenResponse {
    DescribeDelegationTokenResponse {
        error_code: refusal(allowed).0.code(),
        ..Default::default()
    }
}

/// Renew's and Expire's error and expiry timestamp: the broker's refusal, or the
/// controller's (which leaves the timestamp at 0).
fn refusal(allowed: bool) -> (ErrorCode, i64) {
    if allowed {
        (ErrorCode::DelegationTokenAuthDisabled, 0)
    } else {
        (ErrorCode::DelegationTokenRequestNotAllowed, ERROR_TIMESTAMP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spate_net::messages::create_delegation_token_request::CreatableRenewers;

    fn alice() -> Caller {
        Caller {
            principal: Principal::user("alice"),
            host: "127.0.0.1".into(),
        }
    }

    #[test]
    fn token_requests_are_allowed_only_on_authenticated_channels() {
        let anon = Principal::anonymous();
        let alice = Principal::user("alice");
        assert!(!allowed(SecurityProtocol::Plaintext, &anon));
        assert!(!allowed(SecurityProtocol::Plaintext, &alice));
        assert!(!allowed(SecurityProtocol::Ssl, &anon));
        assert!(allowed(SecurityProtocol::Ssl, &alice));
        assert!(allowed(SecurityProtocol::SaslPlaintext, &alice));
        assert!(allowed(SecurityProtocol::SaslSsl, &alice));
    }

    #[test]
    fn renew_expire_and_describe_refuse() {
        let not_allowed = ErrorCode::DelegationTokenRequestNotAllowed.code();
        let disabled = ErrorCode::DelegationTokenAuthDisabled.code();
        assert_eq!(
            (renew(false).error_code, renew(false).expiry_timestamp_ms),
            (not_allowed, -1)
        );
        assert_eq!(
            (expire(false).error_code, expire(false).expiry_timestamp_ms),
            (not_allowed, -1)
        );
        assert_eq!(
            (renew(true).error_code, renew(true).expiry_timestamp_ms),
            (disabled, 0)
        );
        assert_eq!(expire(true).error_code, disabled);
        assert_eq!(describe(false).error_code, not_allowed);
        let d = describe(true);
        assert_eq!((d.error_code, d.tokens.len()), (disabled, 0));
    }

    #[test]
    fn create_refuses_in_kafkas_order() {
        let mut req = CreateDelegationTokenRequest {
            max_lifetime_ms: -1,
            ..Default::default()
        };
        let r = create(&req, &alice(), false, |_| true);
        assert_eq!(
            r.error_code,
            ErrorCode::DelegationTokenRequestNotAllowed.code()
        );
        assert_eq!(
            (r.principal_type.as_str(), r.principal_name.as_str()),
            ("User", "alice")
        );
        assert_eq!((r.issue_timestamp_ms, r.max_timestamp_ms), (-1, -1));
        let r = create(&req, &alice(), true, |_| false);
        assert_eq!(r.error_code, ErrorCode::DelegationTokenAuthDisabled.code());
        assert_eq!(r.expiry_timestamp_ms, 0);
        req.owner_principal_type = Some("User".into());
        req.owner_principal_name = Some("bob".into());
        let r = create(&req, &alice(), true, |owner| owner != "User:bob");
        assert_eq!(
            r.error_code,
            ErrorCode::DelegationTokenAuthorizationFailed.code()
        );
        req.renewers.push(CreatableRenewers {
            principal_type: "Group".into(),
            principal_name: "g".into(),
        });
        let r = create(&req, &alice(), true, |_| true);
        assert_eq!(r.error_code, ErrorCode::InvalidPrincipalType.code());
        assert_eq!(r.principal_name, "bob");
        assert_eq!(r.token_requester_principal_name, "alice");
    }
}
