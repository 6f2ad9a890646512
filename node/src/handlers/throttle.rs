//! Client quotas on the request path (`crate::quota`): which quota applies to a
//! request, and what a request over its quota gets (a `throttle_time_ms` in its
//! response and a muted connection): a produce or fetch over its byte rate, a topic
//! change over the controller mutation rate, any request over its share of shard time.

use std::rc::Rc;
use std::time::Instant;

use spate_net::messages::{FetchRequest, FetchResponse, RequestHeader};
use spate_net::{Message, RequestBody};

use crate::quota::busy::BusyTime;
use crate::quota::store::Applied;
use crate::quota::QuotaKind;
use crate::security::authorizer::acl::Operation;
use crate::security::{Mute, Session};
use crate::shard::ShardContext;

/// The quota of `kind` that applies to the client of this request, if any (nothing
/// to look up while no client has a quota of that kind).
pub fn client_quota(
    ctx: &ShardContext,
    session: &Session,
    header: &RequestHeader,
    kind: QuotaKind,
) -> Option<Applied> {
    if !ctx.sets_client_quota(kind) {
        return None;
    }
    ctx.image().client_quotas.applied(
        kind,
        &session.principal().name,
        header.client_id.as_deref().unwrap_or(""),
    )
}

/// Counts a produce request of `size` bytes (the whole request, as Kafka counts it);
/// the throttle time of its response, the connection muted for that long.
pub fn produce(ctx: &ShardContext, session: &Session, header: &RequestHeader, size: usize) -> i32 {
    let Some(quota) = client_quota(ctx, session, header, QuotaKind::Produce) else {
        return 0;
    };
    let throttle = ctx
        .quota_sensors
        .record(QuotaKind::Produce, &quota, size as f64);
    throttled(ctx, session.mute(), QuotaKind::Produce, throttle)
}

/// What a fetch may return under `quota` now: the bytes that still fit under it (at
/// most a second's worth), or `None` when none do (the fetch is answered at once, empty,
/// with its throttle time). A fetch that goes over only by its first batch (KIP-74) is
/// served and throttles the next. (Kafka caps a fetch at a whole window's worth and
/// answers one that went over empty; with `quota::rate`'s bucket, fetching what fits
/// keeps a consumer at its quota without lumps.)
pub fn fetch_room(ctx: &ShardContext, quota: &Applied) -> Option<i32> {
    let room = ctx.quota_sensors.headroom(QuotaKind::Fetch, quota);
    (room >= 1.0).then(|| room.min(f64::from(i32::MAX)) as i32)
}

/// The answer to a fetch with no room under its quota: nothing, and the throttle time.
pub fn fetch_refused(ctx: &ShardContext, quota: &Applied, mute: &Mute) -> FetchResponse {
    let throttle = ctx.quota_sensors.throttle_ms(QuotaKind::Fetch, quota);
    FetchResponse {
        throttle_time_ms: throttled(ctx, mute, QuotaKind::Fetch, throttle),
        ..Default::default()
    }
}

/// Counts the record bytes of a fetch response; over the quota, the response carries
/// the throttle time and the connection is muted for it.
pub fn fetch(ctx: &ShardContext, quota: &Applied, mute: &Mute, response: &mut FetchResponse) {
    let bytes: usize = response
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .filter_map(|p| p.records.as_ref())
        .map(|r| r.len())
        .sum();
    let throttle = ctx
        .quota_sensors
        .record(QuotaKind::Fetch, quota, bytes as f64);
    response.throttle_time_ms = throttled(ctx, mute, QuotaKind::Fetch, throttle);
}

/// Mutes the connection for `throttle` ms and counts it; the response's throttle time.
fn throttled(ctx: &ShardContext, mute: &Mute, kind: QuotaKind, throttle: u64) -> i32 {
    if throttle == 0 {
        return 0;
    }
    mute.for_ms(throttle);
    ctx.metrics
        .borrow_mut()
        .quota_throttled(kind.label(), throttle);
    i32::try_from(throttle).unwrap_or(i32::MAX)
}

/// Kafka's controller mutation quota for one CreateTopics, CreatePartitions or
/// DeleteTopics request: the partitions it creates or deletes count against the
/// client's `controller_mutation_rate`. Strict (from the versions that know the error):
/// a topic is refused with THROTTLING_QUOTA_EXCEEDED while the client is over its quota,
/// and one that is not may take it over. Permissive (older versions): every topic is
/// accepted and the response throttles.
pub struct MutationQuota {
    quota: Applied,
    strict: bool,
    mute: Mute,
}

/// Kafka's message for THROTTLING_QUOTA_EXCEEDED.
pub const MUTATION_REFUSED: &str = "The throttling quota has been exceeded.";

impl MutationQuota {
    /// The quota of this request's client, if it has one; strict from `strict_from`.
    pub fn of(
        ctx: &ShardContext,
        session: &Session,
        header: &RequestHeader,
        strict_from: i16,
    ) -> Option<MutationQuota> {
        let quota = client_quota(ctx, session, header, QuotaKind::ControllerMutation)?;
        Some(MutationQuota {
            quota,
            strict: header.request_api_version >= strict_from,
            mute: session.mute().clone(),
        })
    }

    /// Whether a topic of `partitions` partitions may go ahead; counted if so.
    pub fn admit(&self, ctx: &ShardContext, partitions: usize) -> bool {
        let sensors = &ctx.quota_sensors;
        if self.strict && sensors.throttle_ms(QuotaKind::ControllerMutation, &self.quota) > 0 {
            return false;
        }
        sensors.record(
            QuotaKind::ControllerMutation,
            &self.quota,
            partitions as f64,
        );
        true
    }

    /// The response's throttle time (the connection muted for it).
    pub fn throttle_time_ms(&self, ctx: &ShardContext) -> i32 {
        let throttle = ctx
            .quota_sensors
            .throttle_ms(QuotaKind::ControllerMutation, &self.quota);
        throttled(ctx, &self.mute, QuotaKind::ControllerMutation, throttle)
    }
}

/// Whether a fetch is a follower's (replication is not a client's traffic).
pub fn from_follower(req: &FetchRequest) -> bool {
    req.replica_id >= 0 || req.replica_state.replica_id >= 0
}

/// Kafka's request quota for one request (KIP-124): the shard time spent on it
/// (`quota::busy`) counts against the client's `request_percentage`, and its response
/// carries the throttle time, the connection muted for it.
pub struct RequestQuota {
    ctx: Rc<ShardContext>,
    quota: Applied,
    mute: Mute,
    busy: Rc<BusyTime>,
}

impl RequestQuota {
    /// The request quota of this request's client, if it has one and the request is
    /// not exempt; its time is counted from `arrived` (reading the frame and decoding).
    pub fn of(
        ctx: &Rc<ShardContext>,
        session: &Session,
        header: &RequestHeader,
        body: &RequestBody,
        arrived: Instant,
    ) -> Option<Rc<RequestQuota>> {
        let quota = client_quota(ctx, session, header, QuotaKind::Request)?;
        let cluster_action =
            || ctx.authorized_on_cluster(&session.caller(), Operation::ClusterAction);
        if exempt(body, cluster_action) {
            return None;
        }
        Some(Rc::new(RequestQuota {
            ctx: ctx.clone(),
            quota,
            mute: session.mute().clone(),
            busy: BusyTime::new(arrived.elapsed()),
        }))
    }

    /// The meter the request's futures add their time to.
    pub fn busy(&self) -> Rc<BusyTime> {
        self.busy.clone()
    }

    /// Counts the time spent on the request up to now; its throttle time goes into
    /// `response` (the larger of it and a throttle the response has already, as Kafka
    /// takes the larger of two quotas' throttles).
    pub fn throttle<M: Message>(&self, response: &mut M) {
        let throttle = self
            .ctx
            .quota_sensors
            .record_request(&self.quota, self.busy.total());
        let ms = throttled(&self.ctx, &self.mute, QuotaKind::Request, throttle);
        if let Some(field) = response.throttle_time_ms_mut() {
            *field = (*field).max(ms);
        }
    }
}

/// Requests Kafka does not hold to request quotas (`sendResponseExemptThrottle`):
/// other brokers' (a follower's fetch; WriteTxnMarkers from a caller allowed
/// CLUSTER_ACTION: one refused counts, as Kafka's `handleError` throttles a cluster
/// authorization failure), and a produce with acks=0, which has no response to carry
/// a throttle. SaslHandshake and SaslAuthenticate after authentication (an error
/// answer, once) are not counted either. ApiVersions is, as in Kafka.
fn exempt(body: &RequestBody, cluster_action: impl FnOnce() -> bool) -> bool {
    match body {
        RequestBody::Fetch(req) => from_follower(req),
        RequestBody::WriteTxnMarkers(_) => cluster_action(),
        RequestBody::Produce(req) => req.acks == 0,
        RequestBody::SaslHandshake(_) | RequestBody::SaslAuthenticate(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spate_net::messages::{
        ApiVersionsRequest, MetadataRequest, ProduceRequest, WriteTxnMarkersRequest,
    };

    #[test]
    fn brokers_requests_are_exempt_and_clients_are_not() {
        let never = || panic!("only WriteTxnMarkers asks for CLUSTER_ACTION");
        let follower = FetchRequest {
            replica_id: 2,
            ..Default::default()
        };
        assert!(exempt(&RequestBody::Fetch(follower), never));
        let mut follower = FetchRequest {
            replica_id: -1,
            ..Default::default()
        };
        follower.replica_state.replica_id = 2;
        assert!(exempt(&RequestBody::Fetch(follower), never));
        let consumer = FetchRequest {
            replica_id: -1,
            ..Default::default()
        };
        assert!(!exempt(&RequestBody::Fetch(consumer), never));
        // Markers from another broker (allowed CLUSTER_ACTION) are exempt; refused
        // ones count, as Kafka throttles a cluster authorization failure.
        let markers = || RequestBody::WriteTxnMarkers(WriteTxnMarkersRequest::default());
        assert!(exempt(&markers(), || true));
        assert!(!exempt(&markers(), || false));
        let produce = |acks| {
            RequestBody::Produce(ProduceRequest {
                acks,
                ..Default::default()
            })
        };
        assert!(exempt(&produce(0), never));
        assert!(!exempt(&produce(1), never));
        assert!(!exempt(&produce(-1), never));
        // As in Kafka, ApiVersions and Metadata count.
        assert!(!exempt(
            &RequestBody::ApiVersions(ApiVersionsRequest::default()),
            never
        ));
        assert!(!exempt(
            &RequestBody::Metadata(MetadataRequest::default()),
            never
        ));
    }
}
