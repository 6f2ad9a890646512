//! Request handlers, one module per API family, and the dispatch that picks one.

mod acls;
mod alter_replica_log_dirs;
#[cfg(test)]
mod api_table;
mod api_versions;
mod cluster;
mod configs;
mod delegation_tokens;
mod describe_quorum;
mod describe_topic_partitions;
mod elect_leaders;
mod features;
mod fetch;
mod groups;
mod leader_hints;
mod list_config_resources;
mod metadata;
mod offsets;
mod produce;
mod producer;
mod quotas;
mod reassignments;
mod scram;
pub mod share;
mod share_groups;
mod share_offsets;
mod share_state;
mod throttle;
mod topics;
mod txn;

use std::future::Future;
use std::rc::Rc;

use bytes::Bytes;
use compio::runtime::JoinHandle;
use spate_net::messages::RequestHeader;
use spate_net::{ApiKey, ErrorCode, Message, RequestBody};

use crate::quota::busy::Timed;
use crate::quota::QuotaKind;
use crate::security::authorizer::acl::{Operation, ResourceType};
use crate::security::authorizer::Caller;
use crate::security::{sasl, Session};
use crate::shard::ShardContext;

pub use api_versions::SERVED_APIS;

/// What the connection does with a request.
pub enum Dispatched {
    /// The response frame, ready now.
    Respond(Vec<Bytes>),
    /// A task computing the response frame (`None`: no response, as for acks=0).
    Later(JoinHandle<Option<Vec<Bytes>>>),
    /// Close the connection (what Kafka does for malformed or unsupported requests).
    Close(&'static str),
    /// Send the response frame, then close (a failed SASL authentication).
    RespondAndClose(Vec<Bytes>, &'static str),
}

/// Encode `body` as the response to `header`.
pub fn frame<M: Message>(header: &RequestHeader, body: &M) -> Vec<Bytes> {
    let version = header.request_api_version;
    let hv = spate_net::response_header_version(header.request_api_key, version);
    spate_net::encode_response_frame(header.correlation_id, hv, body, version)
}

/// The request quota of the request being handled, if one applies.
type Quota = Option<Rc<throttle::RequestQuota>>;

/// Encode `body` as the response to `header`, throttled by the request quota if one
/// applies (its time counted up to now).
fn respond<M: Message>(quota: &Quota, header: &RequestHeader, mut body: M) -> Vec<Bytes> {
    if let Some(q) = quota {
        q.throttle(&mut body);
    }
    frame(header, &body)
}

/// Run `task`, which computes a response, as a task of its own; its time counts
/// against the request quota if one applies.
fn spawn_response<F>(quota: &Quota, task: F) -> Dispatched
where
    F: Future<Output = Option<Vec<Bytes>>> + 'static,
{
    Dispatched::Later(match quota {
        None => compio::runtime::spawn(task),
        Some(q) => compio::runtime::spawn(Timed::new(task, q.busy())),
    })
}

/// Run `work` as a task whose output is the response to `header`.
fn later<M, F>(quota: &Quota, header: RequestHeader, work: F) -> Dispatched
where
    M: Message + 'static,
    F: Future<Output = M> + 'static,
{
    let q = quota.clone();
    spawn_response(quota, async move {
        let body = work.await;
        Some(respond(&q, &header, body))
    })
}

/// The answer to a group membership request whose caller may not READ the group
/// (GROUP_AUTHORIZATION_FAILED, as Kafka answers before looking at the group).
fn group_denied(
    ctx: &ShardContext,
    session: &Session,
    (header, quota): (&RequestHeader, &Quota),
    body: &RequestBody,
) -> Option<Vec<Bytes>> {
    use spate_net::messages::{
        ConsumerGroupHeartbeatResponse, HeartbeatResponse, JoinGroupResponse, LeaveGroupResponse,
        SyncGroupResponse,
    };
    ctx.authorizer.as_ref()?;
    let group = match body {
        RequestBody::JoinGroup(r) => &r.group_id,
        RequestBody::SyncGroup(r) => &r.group_id,
        RequestBody::Heartbeat(r) => &r.group_id,
        RequestBody::LeaveGroup(r) => &r.group_id,
        RequestBody::ConsumerGroupHeartbeat(r) => &r.group_id,
        _ => return None,
    };
    let caller = session.caller();
    if ctx.authorized(&caller, Operation::Read, ResourceType::Group, group) {
        return consumer_topics_denied(ctx, &caller, (header, quota), body);
    }
    let code = ErrorCode::GroupAuthorizationFailed.code();
    Some(match body {
        RequestBody::JoinGroup(_) => respond(
            quota,
            header,
            JoinGroupResponse {
                error_code: code,
                ..Default::default()
            },
        ),
        RequestBody::SyncGroup(_) => respond(
            quota,
            header,
            SyncGroupResponse {
                error_code: code,
                ..Default::default()
            },
        ),
        RequestBody::Heartbeat(_) => respond(
            quota,
            header,
            HeartbeatResponse {
                error_code: code,
                ..Default::default()
            },
        ),
        RequestBody::ConsumerGroupHeartbeat(_) => respond(
            quota,
            header,
            ConsumerGroupHeartbeatResponse {
                error_code: code,
                error_message: Some("Group authorization failed.".into()),
                ..Default::default()
            },
        ),
        _ => respond(
            quota,
            header,
            LeaveGroupResponse {
                error_code: code,
                ..Default::default()
            },
        ),
    })
}

/// Kafka (KIP-848, KAFKA-18813): a consumer subscribing by name must be allowed to
/// DESCRIBE every topic it names, or the heartbeat fails with TOPIC_AUTHORIZATION_FAILED.
fn consumer_topics_denied(
    ctx: &ShardContext,
    caller: &Caller,
    (header, quota): (&RequestHeader, &Quota),
    body: &RequestBody,
) -> Option<Vec<Bytes>> {
    let RequestBody::ConsumerGroupHeartbeat(r) = body else {
        return None;
    };
    let names = r.subscribed_topic_names.as_ref()?;
    if names
        .iter()
        .all(|t| ctx.authorized(caller, Operation::Describe, ResourceType::Topic, t))
    {
        return None;
    }
    Some(respond(
        quota,
        header,
        spate_net::messages::ConsumerGroupHeartbeatResponse {
            error_code: ErrorCode::TopicAuthorizationFailed.code(),
            ..Default::default()
        },
    ))
}

/// Decode one request frame and start its handling.
pub async fn dispatch(
    ctx: &Rc<ShardContext>,
    session: &Session,
    mut frame_body: Bytes,
    arrived: std::time::Instant,
) -> Dispatched {
    let request_size = frame_body.len();
    // KIP-368: an authenticated SASL session may have an end, and re-authenticate.
    if session.authenticated() {
        if let Some(d) = sasl::authenticated_session(session, &frame_body, arrived) {
            return d;
        }
    }
    // KIP-43: a SASL listener serves nothing else before authentication.
    if !session.authenticated() {
        let image = ctx.image();
        let credentials = |user: &str, m| image.scram_credential(user, m).cloned();
        if let Some(d) = sasl::before_authentication(session, frame_body.clone(), &credentials) {
            return d;
        }
    }
    if let Some(answer) = api_versions::answer_unknown_version(&frame_body) {
        return Dispatched::Respond(answer);
    }
    let header = match spate_net::decode_request_header(&mut frame_body) {
        Ok(h) => h,
        Err(_) => return Dispatched::Close("malformed request header"),
    };
    let key = match ApiKey::try_from(header.request_api_key) {
        Ok(k) if SERVED_APIS.contains(&k) => k,
        _ => return Dispatched::Close("unsupported API key"),
    };
    let (min, max) = key.valid_versions();
    let version = header.request_api_version;
    if version < min || version > max {
        return Dispatched::Close("unsupported API version");
    }
    let body = match RequestBody::decode(header.request_api_key, version, &mut frame_body) {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!(api = key.name(), version, error = %e, "undecodable request");
            return Dispatched::Close("malformed request body");
        }
    };
    // Kafka's request quota: the time spent on the request, from its arrival, counts
    // against it (nothing is timed while no client quota applies).
    let quota = throttle::RequestQuota::of(ctx, session, &header, &body, arrived);
    let busy = quota.as_ref().map(|q| q.busy());
    let work = handle(
        ctx.clone(),
        session,
        (header, key),
        body,
        quota,
        (arrived, request_size),
    );
    match busy {
        None => work.await,
        Some(busy) => Timed::new(work, busy).await,
    }
}

/// Start the handling of a decoded request.
async fn handle(
    ctx: Rc<ShardContext>,
    session: &Session,
    (header, key): (RequestHeader, ApiKey),
    body: RequestBody,
    quota: Quota,
    (arrived, request_size): (std::time::Instant, usize),
) -> Dispatched {
    let (peer, version) = (session.peer, header.request_api_version);
    if let Some(denied) = group_denied(&ctx, session, (&header, &quota), &body) {
        return Dispatched::Respond(denied);
    }
    match body {
        RequestBody::ApiVersions(_) => {
            Dispatched::Respond(respond(&quota, &header, api_versions::handle()))
        }
        RequestBody::Produce(req) => {
            let (listener, caller) = (session.listener.clone(), session.caller());
            let throttle = throttle::produce(&ctx, session, &header, request_size);
            produce::dispatch(
                ctx,
                (header, quota),
                req,
                arrived,
                (listener, caller),
                throttle,
            )
            .await
        }
        RequestBody::Fetch(mut req) => {
            let (listener, caller) = (session.listener.clone(), session.caller());
            let follower = throttle::from_follower(&req);
            let fetch_quota = (!follower)
                .then(|| throttle::client_quota(&ctx, session, &header, QuotaKind::Fetch))
                .flatten();
            let mute = session.mute().clone();
            if let Some(q) = &fetch_quota {
                match throttle::fetch_room(&ctx, q) {
                    Some(room) => req.max_bytes = req.max_bytes.min(room),
                    None => {
                        return Dispatched::Respond(respond(
                            &quota,
                            &header,
                            throttle::fetch_refused(&ctx, q, &mute),
                        ))
                    }
                }
            }
            later(&quota, header.clone(), async move {
                let mut response =
                    fetch::handle(&ctx, req, header.request_api_version, &listener, &caller).await;
                if let Some(q) = fetch_quota {
                    throttle::fetch(&ctx, &q, &mute, &mut response);
                }
                response
            })
        }
        RequestBody::Metadata(req) => {
            let (listener, caller) = (session.listener.clone(), session.caller());
            later(&quota, header.clone(), async move {
                metadata::handle(&ctx, req, header.request_api_version, listener, caller).await
            })
        }
        RequestBody::ListOffsets(req) => {
            let caller = session.caller();
            later(&quota, header.clone(), async move {
                offsets::list_offsets(&ctx, req, header.request_api_version, &caller).await
            })
        }
        RequestBody::OffsetForLeaderEpoch(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                offsets::offset_for_leader_epoch(&ctx, req, &caller).await
            })
        }
        RequestBody::DeleteRecords(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                offsets::delete_records(&ctx, req, &caller).await
            })
        }
        RequestBody::CreateTopics(req) => {
            let caller = session.caller();
            let mutation = throttle::MutationQuota::of(&ctx, session, &header, 6);
            later(&quota, header, async move {
                topics::create_topics(&ctx, req, &caller, mutation).await
            })
        }
        RequestBody::DeleteTopics(req) => {
            let caller = session.caller();
            let mutation = throttle::MutationQuota::of(&ctx, session, &header, 5);
            later(&quota, header.clone(), async move {
                topics::delete_topics(&ctx, req, header.request_api_version, &caller, mutation)
                    .await
            })
        }
        RequestBody::CreatePartitions(req) => {
            let caller = session.caller();
            let mutation = throttle::MutationQuota::of(&ctx, session, &header, 3);
            later(&quota, header, async move {
                topics::create_partitions(&ctx, req, &caller, mutation).await
            })
        }
        RequestBody::DescribeConfigs(req) => Dispatched::Respond(respond(
            &quota,
            &header,
            configs::describe(&ctx, req, version, &session.caller()),
        )),
        RequestBody::AlterConfigs(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                configs::alter(&ctx, req, &caller).await
            })
        }
        RequestBody::IncrementalAlterConfigs(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                configs::incremental_alter(&ctx, req, &caller).await
            })
        }
        RequestBody::DescribeQuorum(req) => {
            // Kafka's controller: DESCRIBE on the cluster.
            if !ctx.authorized_on_cluster(&session.caller(), Operation::Describe) {
                return Dispatched::Respond(respond(
                    &quota,
                    &header,
                    describe_quorum::cluster_denied(),
                ));
            }
            later(&quota, header, async move {
                describe_quorum::handle(&ctx, req).await
            })
        }
        RequestBody::DescribeCluster(req) => Dispatched::Respond(respond(
            &quota,
            &header,
            cluster::describe_cluster(&ctx, req, &session.listener, &session.caller()),
        )),
        RequestBody::InitProducerId(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                producer::init_producer_id(&ctx, req, version, &caller).await
            })
        }
        RequestBody::AddPartitionsToTxn(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                txn::add_partitions(&ctx, req, version, &caller).await
            })
        }
        RequestBody::AddOffsetsToTxn(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                txn::add_offsets(&ctx, req, version, &caller).await
            })
        }
        RequestBody::DescribeTransactions(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                txn::describe_transactions(&ctx, req, &caller).await
            })
        }
        RequestBody::ListTransactions(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                txn::list_transactions(&ctx, req, &caller).await
            })
        }
        RequestBody::DescribeProducers(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                txn::describe_producers(&ctx, req, &caller).await
            })
        }
        RequestBody::TxnOffsetCommit(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                groups::txn_offset_commit(&ctx, req, version, &caller).await
            })
        }
        RequestBody::WriteTxnMarkers(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                txn::write_txn_markers(&ctx, req, &caller).await
            })
        }
        RequestBody::InitializeShareGroupState(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                share_state::initialize(&ctx, req, &caller).await
            })
        }
        RequestBody::ReadShareGroupState(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                share_state::read(&ctx, req, &caller).await
            })
        }
        RequestBody::WriteShareGroupState(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                share_state::write(&ctx, req, &caller).await
            })
        }
        RequestBody::DeleteShareGroupState(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                share_state::delete(&ctx, req, &caller).await
            })
        }
        RequestBody::ReadShareGroupStateSummary(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                share_state::read_summary(&ctx, req, &caller).await
            })
        }
        RequestBody::EndTxn(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                txn::end_txn(&ctx, req, version, &caller).await
            })
        }
        RequestBody::FindCoordinator(req) => Dispatched::Respond(respond(
            &quota,
            &header,
            groups::find_coordinator(&ctx, req, version, &session.listener, &session.caller()),
        )),
        RequestBody::ConsumerGroupHeartbeat(req) => {
            let client_id = header.client_id.clone().unwrap_or_default();
            let caller = session.caller();
            later(&quota, header, async move {
                groups::consumer_group_heartbeat(&ctx, req, version, client_id, peer, caller).await
            })
        }
        RequestBody::ShareFetch(req) => {
            let (listener, caller, id) = (session.listener.clone(), session.caller(), session.id);
            later(&quota, header, async move {
                share::share_fetch(&ctx, req, version, &listener, &caller, id).await
            })
        }
        RequestBody::ShareAcknowledge(req) => {
            let (listener, caller, id) = (session.listener.clone(), session.caller(), session.id);
            later(&quota, header, async move {
                share::share_acknowledge(&ctx, req, version, &listener, &caller, id).await
            })
        }
        RequestBody::ShareGroupHeartbeat(req) => {
            let client_id = header.client_id.clone().unwrap_or_default();
            let caller = session.caller();
            later(&quota, header, async move {
                share_groups::heartbeat(&ctx, req, client_id, peer, caller).await
            })
        }
        RequestBody::DescribeShareGroupOffsets(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                share_offsets::describe(&ctx, req, &caller).await
            })
        }
        RequestBody::AlterShareGroupOffsets(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                share_offsets::alter(&ctx, req, &caller).await
            })
        }
        RequestBody::DeleteShareGroupOffsets(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                share_offsets::delete(&ctx, req, &caller).await
            })
        }
        RequestBody::ShareGroupDescribe(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                share_groups::describe(&ctx, req, &caller).await
            })
        }
        RequestBody::ConsumerGroupDescribe(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                groups::consumer_group_describe(&ctx, req, &caller).await
            })
        }
        RequestBody::JoinGroup(req) => {
            let client_id = header.client_id.clone().unwrap_or_default();
            later(&quota, header, async move {
                groups::join_group(&ctx, req, version, client_id, peer).await
            })
        }
        RequestBody::SyncGroup(req) => later(&quota, header, async move {
            groups::sync_group(&ctx, req).await
        }),
        RequestBody::Heartbeat(req) => {
            later(
                &quota,
                header,
                async move { groups::heartbeat(&ctx, req).await },
            )
        }
        RequestBody::LeaveGroup(req) => later(&quota, header, async move {
            groups::leave_group(&ctx, req, version).await
        }),
        RequestBody::OffsetCommit(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                groups::offset_commit(&ctx, req, version, &caller).await
            })
        }
        RequestBody::OffsetFetch(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                groups::offset_fetch(&ctx, req, version, &caller).await
            })
        }
        RequestBody::DescribeGroups(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                groups::describe_groups(&ctx, req, &caller).await
            })
        }
        RequestBody::ListGroups(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                groups::list_groups(&ctx, req, &caller).await
            })
        }
        RequestBody::DeleteGroups(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                groups::delete_groups(&ctx, req, &caller).await
            })
        }
        RequestBody::OffsetDelete(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                groups::offset_delete(&ctx, req, &caller).await
            })
        }
        RequestBody::DescribeAcls(req) => Dispatched::Respond(respond(
            &quota,
            &header,
            acls::describe_acls(&ctx, &session.caller(), &req),
        )),
        RequestBody::CreateAcls(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                acls::create_acls(&ctx, &caller, req).await
            })
        }
        RequestBody::DeleteAcls(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                acls::delete_acls(&ctx, &caller, req).await
            })
        }
        RequestBody::AlterUserScramCredentials(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                scram::alter(&ctx, &caller, req).await
            })
        }
        RequestBody::DescribeClientQuotas(req) => Dispatched::Respond(respond(
            &quota,
            &header,
            quotas::describe(&ctx, &session.caller(), &req),
        )),
        RequestBody::AlterClientQuotas(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                quotas::alter(&ctx, &caller, req).await
            })
        }
        RequestBody::DescribeUserScramCredentials(req) => Dispatched::Respond(respond(
            &quota,
            &header,
            scram::describe(&ctx, &session.caller(), req),
        )),
        RequestBody::ElectLeaders(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                elect_leaders::handle(&ctx, req, &caller).await
            })
        }
        RequestBody::AlterPartitionReassignments(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                reassignments::alter(&ctx, req, &caller).await
            })
        }
        RequestBody::ListPartitionReassignments(req) => Dispatched::Respond(respond(
            &quota,
            &header,
            reassignments::list(&ctx, &req, &session.caller()),
        )),
        RequestBody::DescribeTopicPartitions(req) => Dispatched::Respond(respond(
            &quota,
            &header,
            describe_topic_partitions::handle(&ctx, req, &session.caller(), &session.listener),
        )),
        RequestBody::ListConfigResources(req) => Dispatched::Respond(respond(
            &quota,
            &header,
            list_config_resources::handle(&ctx, req, version, &session.caller()),
        )),
        RequestBody::AlterReplicaLogDirs(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                alter_replica_log_dirs::handle(&ctx, req, &caller).await
            })
        }
        RequestBody::DescribeLogDirs(req) => {
            let caller = session.caller();
            later(&quota, header, async move {
                cluster::describe_log_dirs(&ctx, req, &caller).await
            })
        }
        RequestBody::UpdateFeatures(req) => {
            let alter = ctx.authorized_on_cluster(&session.caller(), Operation::Alter);
            let response = features::update(&req, version, alter, ctx.config.node_id);
            Dispatched::Respond(respond(&quota, &header, response))
        }
        RequestBody::CreateDelegationToken(req) => {
            let caller = session.caller();
            let allowed = token_requests_allowed(session);
            let may_create_for = |owner: &str| {
                ctx.authorized(&caller, Operation::CreateTokens, ResourceType::User, owner)
            };
            let response = delegation_tokens::create(&req, &caller, allowed, may_create_for);
            Dispatched::Respond(respond(&quota, &header, response))
        }
        RequestBody::RenewDelegationToken(_) => Dispatched::Respond(respond(
            &quota,
            &header,
            delegation_tokens::renew(token_requests_allowed(session)),
        )),
        RequestBody::ExpireDelegationToken(_) => Dispatched::Respond(respond(
            &quota,
            &header,
            delegation_tokens::expire(token_requests_allowed(session)),
        )),
        RequestBody::DescribeDelegationToken(_) => Dispatched::Respond(respond(
            &quota,
            &header,
            delegation_tokens::describe(token_requests_allowed(session)),
        )),
        // Authenticated already, or a listener without SASL.
        RequestBody::SaslHandshake(_) | RequestBody::SaslAuthenticate(_) => {
            Dispatched::Respond(sasl::after_authentication(&header, key))
        }
        _ => Dispatched::Close("unsupported API key"),
    }
}

/// Whether the connection may make delegation token requests (Kafka's rule).
fn token_requests_allowed(session: &Session) -> bool {
    delegation_tokens::allowed(session.listener.protocol, &session.principal())
}
