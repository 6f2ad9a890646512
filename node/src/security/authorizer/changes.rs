//! ACL changes as the active controller plans them (Kafka's `AclControlManager`): a
//! record per new ACL (an ACL that exists already is not added twice, and is still a
//! success), a removal per deleted one.

use spate_net::metadata_frame::ApiMessageAndVersion;
use spate_net::ErrorCode;

use super::acl::Acl;
use super::store::MAX_ACLS;
use crate::metadata::{records, MetadataImage};

/// Per item: error code and message (0 and `None`: done).
pub type AclOutcome = (i16, Option<String>);

/// Records adding `acls` to `image`, and an outcome per ACL in order.
pub fn plan_create(
    image: &MetadataImage,
    acls: &[Acl],
) -> (Vec<ApiMessageAndVersion>, Vec<AclOutcome>) {
    let mut records = Vec::new();
    let mut outcomes = Vec::new();
    let mut added: Vec<&Acl> = Vec::new();
    for acl in acls {
        if image.acls.contains(acl) || added.contains(&acl) {
            outcomes.push((0, None));
        } else if image.acls.len() + added.len() >= MAX_ACLS {
            outcomes.push((
                ErrorCode::PolicyViolation.code(),
                Some(format!("Too many ACLs (at most {MAX_ACLS})")),
            ));
        } else {
            records.push(records::acl(crate::random_id::uuid_v4(), acl));
            added.push(acl);
            outcomes.push((0, None));
        }
    }
    (records, outcomes)
}

/// Records removing the ACLs `ids` names; an outcome per id: RESOURCE_NOT_FOUND for an
/// ACL removed meanwhile (the broker matched the filters against its image).
pub fn plan_delete(
    image: &MetadataImage,
    ids: &[[u8; 16]],
) -> (Vec<ApiMessageAndVersion>, Vec<AclOutcome>) {
    let mut records = Vec::new();
    let mut outcomes = Vec::new();
    let mut removed: Vec<[u8; 16]> = Vec::new();
    for id in ids {
        let present = image.acls.get(id).is_some() && !removed.contains(id);
        if present {
            records.push(records::remove_acl(*id));
            removed.push(*id);
            outcomes.push((0, None));
        } else {
            outcomes.push((
                ErrorCode::ResourceNotFound.code(),
                Some("The ACL was removed already".into()),
            ));
        }
    }
    (records, outcomes)
}
