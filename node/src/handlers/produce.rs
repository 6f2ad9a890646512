//! Produce: route each partition's batches to its owner (in request order), then wait
//! for the appends and answer; acks=0 gets no answer.

use std::rc::Rc;

use spate_net::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use spate_net::messages::{ProduceRequest, ProduceResponse, RequestHeader};
use spate_net::ErrorCode;

use super::{frame, Dispatched};
use crate::mesh::{PartitionKey, PartitionOp, PartitionReply};
use crate::route;
use crate::shard::ShardContext;

pub async fn dispatch(
    ctx: Rc<ShardContext>,
    header: RequestHeader,
    req: ProduceRequest,
) -> Dispatched {
    let acks = req.acks;
    let acks_valid = matches!(acks, -1..=1);
    // (topic index, partition index) of every op, and the partitions answered locally.
    let mut ops = Vec::new();
    let mut early: Vec<(usize, usize, i16)> = Vec::new();
    for (ti, topic) in req.topic_data.iter().enumerate() {
        let name: std::sync::Arc<str> = topic.name.as_str().into();
        for (pi, part) in topic.partition_data.iter().enumerate() {
            let code = if !acks_valid {
                Some(ErrorCode::InvalidRequiredAcks.code())
            } else if topic.name == crate::group::OFFSETS_TOPIC {
                // Kafka: "Cannot append to internal topic".
                Some(ErrorCode::InvalidTopicException.code())
            } else if part.records.is_none() {
                Some(ErrorCode::CorruptMessage.code())
            } else {
                None
            };
            match (code, &part.records) {
                (None, Some(records)) => {
                    let key = PartitionKey {
                        topic: name.clone(),
                        partition: part.index,
                    };
                    ops.push((
                        (ti, pi),
                        (
                            key,
                            PartitionOp::Produce {
                                records: records.to_contiguous(),
                                acks,
                            },
                        ),
                    ));
                }
                (code, _) => early.push((ti, pi, code.unwrap_or(ErrorCode::CorruptMessage.code()))),
            }
        }
    }
    let (positions, ops): (Vec<(usize, usize)>, Vec<_>) = ops.into_iter().unzip();
    let routed = route::send(&ctx, ops).await;
    Dispatched::Later(compio::runtime::spawn(async move {
        let replies = routed.collect().await;
        if acks == 0 {
            return None;
        }
        let mut responses: Vec<TopicProduceResponse> = req
            .topic_data
            .iter()
            .map(|t| TopicProduceResponse {
                name: t.name.clone(),
                partition_responses: t
                    .partition_data
                    .iter()
                    .map(|p| PartitionProduceResponse {
                        index: p.index,
                        ..Default::default()
                    })
                    .collect(),
            })
            .collect();
        for (ti, pi, code) in early {
            responses[ti].partition_responses[pi].error_code = code;
        }
        let mut metrics = ctx.metrics.borrow_mut();
        for ((ti, pi), reply) in positions.into_iter().zip(replies) {
            let out = &mut responses[ti].partition_responses[pi];
            match reply {
                PartitionReply::Produced {
                    base_offset,
                    log_append_time,
                    log_start_offset,
                    ..
                } => {
                    out.base_offset = base_offset;
                    out.log_append_time_ms = log_append_time;
                    out.log_start_offset = log_start_offset;
                }
                PartitionReply::MissingKeys {
                    count,
                    records,
                    log_start_offset,
                } => {
                    let topic = &req.topic_data[ti].name;
                    missing_keys(out, topic, count, &records);
                    out.log_start_offset = log_start_offset;
                }
                other => {
                    out.error_code = match route::error_of(&other) {
                        0 => ErrorCode::UnknownServerError.code(),
                        code => code,
                    }
                }
            }
        }
        for p in responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .filter(|p| p.error_code != 0)
        {
            metrics.error("Produce", p.error_code);
        }
        drop(metrics);
        Some(frame(
            &header,
            &ProduceResponse {
                responses,
                ..Default::default()
            },
        ))
    }))
}

/// Kafka's answer to records without a key in a compacted topic (LogValidator's
/// RecordValidationException): INVALID_RECORD, one record error per record (Produce v8+),
/// and a message quoting the first three.
fn missing_keys(out: &mut PartitionProduceResponse, topic: &str, count: u32, records: &[u32]) {
    let reason = format!(
        "Compacted topic cannot accept message without key in topic partition {topic}-{}",
        out.index
    );
    let shown: Vec<String> = records
        .iter()
        .take(3)
        .map(|i| format!("RecordError(batchIndex={i}, message='{reason}')"))
        .collect();
    out.error_code = ErrorCode::InvalidRecord.code();
    out.base_offset = -1;
    out.error_message = Some(format!(
        "One or more records have been rejected due to {count} record errors in total, and \
         only showing the first three errors at most: [{}]",
        shown.join(", ")
    ));
    out.record_errors = records
        .iter()
        .map(|&i| BatchIndexAndErrorMessage {
            batch_index: i as i32,
            batch_index_error_message: Some(reason.clone()),
        })
        .collect();
}
