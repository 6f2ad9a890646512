//! A share coordinator on another broker, asked with the share-state APIs (one
//! share-partition per request, as Kafka's persister sends them).

use spate_net::messages::{
    delete_share_group_state_request as delete_req,
    initialize_share_group_state_request as init_req, read_share_group_state_request as read_req,
    read_share_group_state_summary_request as summary_req,
    write_share_group_state_request as write_req, DeleteShareGroupStateRequest,
    DeleteShareGroupStateResponse, InitializeShareGroupStateRequest,
    InitializeShareGroupStateResponse, ReadShareGroupStateRequest, ReadShareGroupStateResponse,
    ReadShareGroupStateSummaryRequest, ReadShareGroupStateSummaryResponse,
    WriteShareGroupStateRequest, WriteShareGroupStateResponse,
};
use spate_net::{ApiKey, ErrorCode, Message};

use super::coordinator::{ShareAnswer, ShareOp, ShareResult};
use super::persister::{PersisterError, ShareKey, ShareState, StateBatch, StateSummary};
use crate::shard::ShardContext;

/// The versions sent: the newest of each (Kafka 4.4's).
const WRITE_VERSION: i16 = 1;
const SUMMARY_VERSION: i16 = 1;

/// Ask broker `broker`'s coordinator; an unreachable broker is NETWORK_EXCEPTION
/// (retried by the persister).
pub async fn ask(ctx: &ShardContext, broker: i32, key: &ShareKey, op: ShareOp) -> ShareResult {
    let group_id = key.group_id.clone();
    let (topic_id, partition) = (key.topic_id, key.partition);
    match op {
        ShareOp::Initialize {
            state_epoch,
            start_offset,
        } => {
            let request = InitializeShareGroupStateRequest {
                group_id,
                topics: vec![init_req::InitializeStateData {
                    topic_id,
                    partitions: vec![init_req::PartitionData {
                        partition,
                        state_epoch,
                        start_offset,
                    }],
                }],
            };
            let r: InitializeShareGroupStateResponse =
                call(ctx, broker, ApiKey::InitializeShareGroupState, 0, &request).await?;
            let p = r.results.into_iter().flat_map(|t| t.partitions).next();
            let p = p.ok_or_else(missing)?;
            done(p.error_code, p.error_message)
        }
        ShareOp::Read { leader_epoch } => {
            let request = ReadShareGroupStateRequest {
                group_id,
                topics: vec![read_req::ReadStateData {
                    topic_id,
                    partitions: vec![read_req::PartitionData {
                        partition,
                        leader_epoch,
                    }],
                }],
            };
            let r: ReadShareGroupStateResponse =
                call(ctx, broker, ApiKey::ReadShareGroupState, 0, &request).await?;
            let p = r.results.into_iter().flat_map(|t| t.partitions).next();
            let p = p.ok_or_else(missing)?;
            done(p.error_code, p.error_message)?;
            Ok(ShareAnswer::State(ShareState {
                state_epoch: p.state_epoch,
                start_offset: p.start_offset,
                batches: p
                    .state_batches
                    .iter()
                    .map(|b| StateBatch {
                        first_offset: b.first_offset,
                        last_offset: b.last_offset,
                        delivery_state: b.delivery_state,
                        delivery_count: b.delivery_count,
                    })
                    .collect(),
            }))
        }
        ShareOp::Write(w) => {
            let request = WriteShareGroupStateRequest {
                group_id,
                topics: vec![write_req::WriteStateData {
                    topic_id,
                    partitions: vec![write_req::PartitionData {
                        partition,
                        state_epoch: w.state_epoch,
                        leader_epoch: w.leader_epoch,
                        start_offset: w.start_offset,
                        delivery_complete_count: w.delivery_complete_count,
                        state_batches: w
                            .batches
                            .iter()
                            .map(|b| write_req::StateBatch {
                                first_offset: b.first_offset,
                                last_offset: b.last_offset,
                                delivery_state: b.delivery_state,
                                delivery_count: b.delivery_count,
                            })
                            .collect(),
                    }],
                }],
            };
            let r: WriteShareGroupStateResponse = call(
                ctx,
                broker,
                ApiKey::WriteShareGroupState,
                WRITE_VERSION,
                &request,
            )
            .await?;
            let p = r.results.into_iter().flat_map(|t| t.partitions).next();
            let p = p.ok_or_else(missing)?;
            done(p.error_code, p.error_message)
        }
        ShareOp::Delete => {
            let request = DeleteShareGroupStateRequest {
                group_id,
                topics: vec![delete_req::DeleteStateData {
                    topic_id,
                    partitions: vec![delete_req::PartitionData { partition }],
                }],
            };
            let r: DeleteShareGroupStateResponse =
                call(ctx, broker, ApiKey::DeleteShareGroupState, 0, &request).await?;
            let p = r.results.into_iter().flat_map(|t| t.partitions).next();
            let p = p.ok_or_else(missing)?;
            done(p.error_code, p.error_message)
        }
        ShareOp::Summary => {
            let request = ReadShareGroupStateSummaryRequest {
                group_id,
                topics: vec![summary_req::ReadStateSummaryData {
                    topic_id,
                    partitions: vec![summary_req::PartitionData {
                        partition,
                        leader_epoch: 0,
                    }],
                }],
            };
            let r: ReadShareGroupStateSummaryResponse = call(
                ctx,
                broker,
                ApiKey::ReadShareGroupStateSummary,
                SUMMARY_VERSION,
                &request,
            )
            .await?;
            let p = r.results.into_iter().flat_map(|t| t.partitions).next();
            let p = p.ok_or_else(missing)?;
            done(p.error_code, p.error_message)?;
            Ok(ShareAnswer::Summary(StateSummary {
                state_epoch: p.state_epoch,
                leader_epoch: p.leader_epoch,
                start_offset: p.start_offset,
                delivery_complete_count: p.delivery_complete_count,
            }))
        }
    }
}

async fn call<Req: Message, Resp: Message>(
    ctx: &ShardContext,
    broker: i32,
    key: ApiKey,
    version: i16,
    request: &Req,
) -> Result<Resp, PersisterError> {
    ctx.brokers
        .call(&ctx.image(), broker, key, version, request)
        .await
        .map_err(|e| {
            tracing::debug!(broker, api = key.name(), error = %e, "asking a share coordinator on another broker failed");
            (ErrorCode::NetworkException.code(), Some(e.to_string()))
        })
}

fn done(code: i16, message: Option<String>) -> ShareResult {
    if code == 0 {
        Ok(ShareAnswer::Done)
    } else {
        Err((code, message))
    }
}

/// A response without the partition asked about.
fn missing() -> PersisterError {
    (
        ErrorCode::UnknownServerError.code(),
        Some("the share coordinator's response has no result for the partition".to_string()),
    )
}
