//! InitProducerId for idempotent producers: a fresh producer id from the controller,
//! or (KIP-360, v3+) the same id with a bumped epoch.

use std::rc::Rc;

use spate_net::messages::{InitProducerIdRequest, InitProducerIdResponse};
use spate_net::ErrorCode;

use crate::controller::{ControllerReply, ControllerRequest};
use crate::shard::ShardContext;

pub async fn init_producer_id(ctx: &Rc<ShardContext>, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let fail = |code: ErrorCode| InitProducerIdResponse { error_code: code.code(), producer_id: -1, producer_epoch: -1, ..Default::default() };
    if req.transactional_id.is_some() {
        // Transactions need a transaction coordinator, which this broker does not run.
        return fail(ErrorCode::InvalidRequest);
    }
    if req.producer_id >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX - 1 {
        return InitProducerIdResponse { producer_id: req.producer_id, producer_epoch: req.producer_epoch + 1, ..Default::default() };
    }
    match ctx.controller(ControllerRequest::AllocateProducerId).await {
        Some(ControllerReply::ProducerId(Ok(pid))) => InitProducerIdResponse { producer_id: pid, producer_epoch: 0, ..Default::default() },
        Some(ControllerReply::ProducerId(Err(code))) => InitProducerIdResponse { error_code: code, producer_id: -1, producer_epoch: -1, ..Default::default() },
        _ => fail(ErrorCode::CoordinatorNotAvailable),
    }
}
