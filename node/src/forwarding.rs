//! Calls between nodes and the active controller, over the quorum's application calls
//! (`spate_replication::AppClient`): brokers' registrations and heartbeats, and the
//! metadata changes a node that is not the active controller forwards to it (Kafka's
//! request forwarding: CreateTopics, DeleteTopics, CreatePartitions, config changes,
//! ElectLeaders, AlterPartitionReassignments, producer-id blocks, and partition leaders' AlterPartition reach the
//! active controller from any broker).
//!
//! A forwarded change is answered with each item's error and the metadata offset its
//! records committed at; the forwarding node waits until its own shards applied that
//! offset, so that its answer (and the client's next Metadata) shows the change.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use spate_net::ErrorCode;
use spate_replication::{AppClient, AppReply};

use crate::controller::{ControllerQueue, ControllerReply, ControllerRequest, TopicOutcome};
use crate::metadata::brokers::{BrokerAnswer, BrokerCall};
use crate::metadata::election::ElectionResults;
use crate::metadata::isr::PartitionState;
use crate::metadata::publish::{Published, PublishedOffset};
use crate::metadata::quorum_view::QuorumView;
use crate::metadata::reassignment::ReassignmentResults;

/// What one node asks of the active controller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControllerCall {
    Broker(BrokerCall),
    Forward(ControllerRequest),
}

/// The active controller's answer to a forwarded change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardedReply {
    /// Per item, in request order: name, error code, message.
    Topics {
        outcomes: Vec<(String, i16, Option<String>)>,
        /// The metadata offset that holds the change (the active controller's image
        /// once its shards applied it).
        offset: Option<u64>,
    },
    ProducerId(Result<i64, i16>),
    Quorum(Result<QuorumView, i16>),
    /// An AlterPartition's outcome and the metadata offset that holds it.
    AlterPartition {
        result: Result<PartitionState, i16>,
        offset: Option<u64>,
    },
    /// An ElectLeaders' outcome and the metadata offset that holds it.
    ElectLeaders {
        result: Result<ElectionResults, i16>,
        offset: Option<u64>,
    },
    /// An AlterPartitionReassignments' outcome and the metadata offset that holds it.
    AlterReassignments {
        result: Result<ReassignmentResults, i16>,
        offset: Option<u64>,
    },
    /// The receiver is not the active controller any more.
    NotController,
}

/// How long a forwarding node waits for its own image to reach a forwarded change.
const CATCH_UP: Duration = Duration::from_secs(30);

/// Encodes a call (our own serde types: encoding cannot fail).
pub fn encode(call: &ControllerCall) -> Bytes {
    Bytes::from(serde_json::to_vec(call).expect("controller calls always encode"))
}

/// Whether a request is a change the active controller must make.
pub fn is_forwardable(request: &ControllerRequest) -> bool {
    !matches!(
        request,
        ControllerRequest::Broker(_)
            | ControllerRequest::FenceExpired
            | ControllerRequest::BalanceLeaders
            | ControllerRequest::Forwarded(_)
    )
}

/// Sends `request` to the active controller and answers as the local controller would.
pub async fn forward(
    client: &AppClient,
    published: &Published,
    request: ControllerRequest,
) -> ControllerReply {
    let names = crate::controller::request_names(&request);
    let producer_id = matches!(request, ControllerRequest::AllocateProducerId);
    let quorum = matches!(request, ControllerRequest::DescribeQuorum);
    let alter_partition = matches!(request, ControllerRequest::AlterPartition(_));
    let elect_leaders = matches!(request, ControllerRequest::ElectLeaders(_));
    let reassignments = matches!(request, ControllerRequest::AlterReassignments(_));
    let answer = client
        .call(encode(&ControllerCall::Forward(request)))
        .await
        .map_err(|e| e.to_string())
        .and_then(|body| {
            serde_json::from_slice::<ForwardedReply>(&body)
                .map_err(|e| format!("undecodable answer: {e}"))
        });
    let unavailable = |why: String| {
        tracing::warn!(error = %why, "forwarding to the active controller failed");
        if producer_id {
            return ControllerReply::ProducerId(Err(ErrorCode::CoordinatorLoadInProgress.code()));
        }
        if quorum {
            return ControllerReply::Quorum(Err(ErrorCode::NotLeaderOrFollower.code()));
        }
        if alter_partition {
            return ControllerReply::AlterPartition(Err(ErrorCode::NotController.code()));
        }
        if elect_leaders {
            return ControllerReply::ElectLeaders(Err(ErrorCode::NotController.code()));
        }
        if reassignments {
            return ControllerReply::AlterReassignments(Err(ErrorCode::NotController.code()));
        }
        ControllerReply::Topics(
            names
                .iter()
                .map(|n| TopicOutcome::err(n, ErrorCode::NotController, why.clone()))
                .collect(),
        )
    };
    match answer {
        Ok(ForwardedReply::Topics { outcomes, offset }) => {
            let image = match offset {
                Some(o) => compio::time::timeout(CATCH_UP, published.wait_for(o))
                    .await
                    .unwrap_or_else(|_| published.image()),
                None => published.image(),
            };
            ControllerReply::Topics(
                outcomes
                    .into_iter()
                    .map(|(name, error, message)| {
                        let topic = (error == 0).then(|| image.topic(&name).cloned()).flatten();
                        TopicOutcome {
                            name,
                            error,
                            message,
                            topic,
                        }
                    })
                    .collect(),
            )
        }
        Ok(ForwardedReply::AlterPartition { result, offset }) => {
            catch_up(published, offset).await;
            ControllerReply::AlterPartition(result)
        }
        Ok(ForwardedReply::ElectLeaders { result, offset }) => {
            catch_up(published, offset).await;
            ControllerReply::ElectLeaders(result)
        }
        Ok(ForwardedReply::AlterReassignments { result, offset }) => {
            catch_up(published, offset).await;
            ControllerReply::AlterReassignments(result)
        }
        Ok(ForwardedReply::ProducerId(r)) => ControllerReply::ProducerId(r),
        Ok(ForwardedReply::Quorum(r)) => ControllerReply::Quorum(r),
        Ok(ForwardedReply::NotController) => unavailable("the active controller changed".into()),
        Err(why) => unavailable(why),
    }
}

/// Waits (at most `CATCH_UP`) until this node's shards applied `offset`.
async fn catch_up(published: &Published, offset: Option<u64>) {
    if let Some(o) = offset {
        let _ = compio::time::timeout(CATCH_UP, published.wait_for(o)).await;
    }
}

/// The handler of calls to this node's controller (installed on its voter): each goes
/// through the controller's queue like any local request.
pub fn app_handler(
    queue: ControllerQueue,
    published: Arc<PublishedOffset>,
) -> spate_replication::AppHandler {
    Arc::new(move |body: Bytes| {
        let queue = queue.clone();
        let published = published.clone();
        Box::pin(async move {
            let Ok(call) = serde_json::from_slice::<ControllerCall>(&body) else {
                return AppReply::Failed("not a controller call".into());
            };
            let request = match call {
                ControllerCall::Broker(b) => ControllerRequest::Broker(b),
                ControllerCall::Forward(r) if is_forwardable(&r) => {
                    ControllerRequest::Forwarded(Box::new(r))
                }
                ControllerCall::Forward(_) => {
                    return AppReply::Failed("not a forwardable request".into())
                }
            };
            let (tx, rx) = flume::bounded(1);
            if queue.send_async((request, tx)).await.is_err() {
                return AppReply::Failed("the controller stopped".into());
            }
            let encoded = match rx.recv_async().await {
                Ok(ControllerReply::Broker(BrokerAnswer::NotController)) => {
                    return AppReply::NotLeader { leader: None }
                }
                Ok(ControllerReply::Broker(answer)) => serde_json::to_vec(&answer),
                Ok(ControllerReply::Topics(outcomes)) => {
                    if outcomes
                        .iter()
                        .any(|o| o.error == ErrorCode::NotController.code())
                    {
                        return AppReply::NotLeader { leader: None };
                    }
                    serde_json::to_vec(&ForwardedReply::Topics {
                        outcomes: outcomes
                            .into_iter()
                            .map(|o| (o.name, o.error, o.message))
                            .collect(),
                        offset: published.get(),
                    })
                }
                Ok(ControllerReply::ProducerId(r)) => {
                    serde_json::to_vec(&ForwardedReply::ProducerId(r))
                }
                Ok(ControllerReply::Quorum(Err(_))) => return AppReply::NotLeader { leader: None },
                Ok(
                    ControllerReply::AlterPartition(Err(code))
                    | ControllerReply::ElectLeaders(Err(code))
                    | ControllerReply::AlterReassignments(Err(code)),
                ) if code == ErrorCode::NotController.code() => {
                    return AppReply::NotLeader { leader: None }
                }
                Ok(ControllerReply::AlterPartition(result)) => {
                    serde_json::to_vec(&ForwardedReply::AlterPartition {
                        result,
                        offset: published.get(),
                    })
                }
                Ok(ControllerReply::ElectLeaders(result)) => {
                    serde_json::to_vec(&ForwardedReply::ElectLeaders {
                        result,
                        offset: published.get(),
                    })
                }
                Ok(ControllerReply::AlterReassignments(result)) => {
                    serde_json::to_vec(&ForwardedReply::AlterReassignments {
                        result,
                        offset: published.get(),
                    })
                }
                Ok(ControllerReply::Quorum(r)) => serde_json::to_vec(&ForwardedReply::Quorum(r)),
                Ok(ControllerReply::Done) | Err(_) => {
                    return AppReply::Failed("the controller stopped".into())
                }
            };
            // Our own serde types: encoding cannot fail.
            AppReply::Ok(encoded.expect("controller answers always encode").into())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::isr::{IsrChange, RECOVERED};

    /// AlterPartition and its answer survive the trip between nodes.
    #[test]
    fn alter_partition_calls_and_answers_round_trip() {
        let change = IsrChange {
            broker_id: 1,
            broker_epoch: 12,
            topic_id: [3; 16],
            partition: 2,
            leader_epoch: 4,
            partition_epoch: 5,
            new_isr: vec![(1, 12), (2, -1)],
            leader_recovery_state: RECOVERED,
        };
        let call = encode(&ControllerCall::Forward(ControllerRequest::AlterPartition(
            change.clone(),
        )));
        match serde_json::from_slice::<ControllerCall>(&call) {
            Ok(ControllerCall::Forward(ControllerRequest::AlterPartition(c))) => {
                assert_eq!(c, change)
            }
            other => panic!("{other:?}"),
        }
        let reply = ForwardedReply::AlterPartition {
            result: Ok(PartitionState {
                leader: 1,
                leader_epoch: 4,
                isr: vec![1, 2],
                partition_epoch: 6,
                leader_recovery_state: RECOVERED,
            }),
            offset: Some(40),
        };
        let bytes = serde_json::to_vec(&reply).unwrap();
        match serde_json::from_slice::<ForwardedReply>(&bytes) {
            Ok(ForwardedReply::AlterPartition {
                result: Ok(state),
                offset: Some(40),
            }) => assert_eq!(state.partition_epoch, 6),
            other => panic!("{other:?}"),
        }
    }
}
