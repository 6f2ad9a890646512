//! InitProducerId for idempotent producers, by Kafka's rules (`KafkaApis`
//! `handleInitProducerIdRequest` and `TransactionCoordinator.handleInitProducerId`):
//!
//! * producer id and epoch are given together or not at all: exactly one of them set
//!   (the other -1) is INVALID_REQUEST, checked before anything else;
//! * without a transactional id the given producer id and epoch are ignored and a fresh
//!   producer id with epoch 0 is handed out. Only a transaction coordinator, which knows
//!   which producer owns a transactional id, may bump an existing id's epoch; bumping on a
//!   client's word would let any client fence another's producer. (Idempotent clients bump
//!   their epoch locally, KIP-360, and ask for a new id only when the epoch runs out.)
//! * with a transactional id the request goes to the id's transaction coordinator
//!   (`handlers/txn.rs`); an empty one is INVALID_REQUEST, as in Kafka.

use std::rc::Rc;

use spate_net::messages::{InitProducerIdRequest, InitProducerIdResponse};
use spate_net::ErrorCode;

use crate::controller::{ControllerReply, ControllerRequest};
use crate::security::authorizer::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::security::authorizer::Caller;
use crate::shard::ShardContext;

/// Kafka's `RecordBatch.NO_PRODUCER_ID` / `NO_PRODUCER_EPOCH`.
const NO_PRODUCER_ID: i64 = -1;
const NO_PRODUCER_EPOCH: i16 = -1;

pub async fn init_producer_id(
    ctx: &Rc<ShardContext>,
    req: InitProducerIdRequest,
    version: i16,
    caller: &Caller,
) -> InitProducerIdResponse {
    // Kafka: WRITE on the transactional id; without one, IDEMPOTENT_WRITE on the
    // cluster or WRITE on at least one topic (KIP-679).
    match &req.transactional_id {
        Some(id)
            if !ctx.authorized(caller, Operation::Write, ResourceType::TransactionalId, id) =>
        {
            return failure(ErrorCode::TransactionalIdAuthorizationFailed);
        }
        None if !ctx.may_see(
            caller,
            Operation::IdempotentWrite,
            ResourceType::Cluster,
            CLUSTER_NAME,
        ) && !ctx.authorized_for_any(caller, Operation::Write, ResourceType::Topic) =>
        {
            return failure(ErrorCode::ClusterAuthorizationFailed);
        }
        _ => {}
    }
    if let Err(code) = check_request(&req) {
        return failure(code);
    }
    if let Some(id) = &req.transactional_id {
        let expected =
            (req.producer_id != NO_PRODUCER_ID).then_some((req.producer_id, req.producer_epoch));
        let (error_code, producer_id, producer_epoch) =
            super::txn::init_producer_id(ctx, id, req.transaction_timeout_ms, expected, version)
                .await;
        return InitProducerIdResponse {
            error_code,
            producer_id,
            producer_epoch,
            ..Default::default()
        };
    }
    match ctx.controller(ControllerRequest::AllocateProducerId).await {
        Some(ControllerReply::ProducerId(Ok(pid))) => InitProducerIdResponse {
            producer_id: pid,
            producer_epoch: 0,
            ..Default::default()
        },
        Some(ControllerReply::ProducerId(Err(code))) => InitProducerIdResponse {
            error_code: code,
            producer_id: -1,
            producer_epoch: -1,
            ..Default::default()
        },
        _ => failure(ErrorCode::CoordinatorNotAvailable),
    }
}

fn failure(code: ErrorCode) -> InitProducerIdResponse {
    InitProducerIdResponse {
        error_code: code.code(),
        producer_id: -1,
        producer_epoch: -1,
        ..Default::default()
    }
}

/// The request checks that come before a producer id is handed out. `Ok` means: answer
/// with a fresh producer id (the given id and epoch, if any, play no part).
fn check_request(req: &InitProducerIdRequest) -> Result<(), ErrorCode> {
    match (
        req.producer_id == NO_PRODUCER_ID,
        req.producer_epoch == NO_PRODUCER_EPOCH,
    ) {
        (true, true) | (false, false) => {}
        _ => return Err(ErrorCode::InvalidRequest),
    }
    if req.transactional_id.as_deref() == Some("") {
        return Err(ErrorCode::InvalidRequest);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(txn: Option<&str>, producer_id: i64, producer_epoch: i16) -> InitProducerIdRequest {
        InitProducerIdRequest {
            transactional_id: txn.map(String::from),
            transaction_timeout_ms: 60_000,
            producer_id,
            producer_epoch,
        }
    }

    #[test]
    fn given_id_and_epoch_never_bump_an_epoch() {
        // Both unset, or both set: a fresh producer id (never the given one).
        assert_eq!(check_request(&req(None, -1, -1)), Ok(()));
        assert_eq!(check_request(&req(None, 5, 3)), Ok(()));
        assert_eq!(check_request(&req(None, 5, i16::MAX - 1)), Ok(()));
        // Exactly one of them set.
        assert_eq!(
            check_request(&req(None, -1, 3)),
            Err(ErrorCode::InvalidRequest)
        );
        assert_eq!(
            check_request(&req(None, 5, -1)),
            Err(ErrorCode::InvalidRequest)
        );
        // An empty transactional id is refused; others go to their coordinator.
        assert_eq!(
            check_request(&req(Some(""), -1, -1)),
            Err(ErrorCode::InvalidRequest)
        );
        assert_eq!(check_request(&req(Some("tx"), -1, -1)), Ok(()));
        assert_eq!(check_request(&req(Some("tx"), 5, 3)), Ok(()));
    }
}
