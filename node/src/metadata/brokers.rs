//! Broker registration, heartbeats and fencing, as Kafka's `ClusterControlManager` and
//! `BrokerHeartbeatManager` do them, on the active controller:
//!
//! * a broker registers (`RegisterBrokerRecord`, fenced) with a new epoch, and is
//!   unfenced (`UnfenceBrokerRecord`) by its first heartbeat that shows its metadata
//!   reached its registration;
//! * a broker without a heartbeat for `broker_session_timeout_ms` is fenced
//!   (`FenceBrokerRecord`); its next heartbeat unfences it again.
//!
//! Calls travel from the broker to the active controller as JSON over the quorum's
//! application calls (`spate_replication::AppClient`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use spate_net::metadata_frame::ApiMessageAndVersion;
use spate_net::metadata_records::register_broker_record::BrokerEndpoint;
use spate_net::metadata_records::{
    BrokerRegistrationChangeRecord, FenceBrokerRecord, MetadataRecord, RegisterBrokerRecord,
    UnfenceBrokerRecord,
};
use spate_net::Uuid;

use super::leadership::OfflineReplicas;
use super::quorum_view::{Heartbeat, OBSERVER_TTL};
use super::records::FENCE;
use super::MetadataImage;

/// A broker's call to the active controller.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum BrokerCall {
    Register {
        broker_id: i32,
        /// Random per process start: a retry of the same start keeps its epoch.
        incarnation_id: [u8; 16],
        /// Every listener, with the address clients are given.
        endpoints: Vec<Endpoint>,
        rack: Option<String>,
    },
    Heartbeat {
        broker_id: i32,
        epoch: i64,
        /// The broker's metadata offset (what it applied).
        offset: Option<u64>,
        /// Its offline replicas (topic id, partition): in a failed log directory, or
        /// with a log that could not be opened (Kafka's `OfflineLogDirs`, per replica).
        /// Absent from a broker that predates it: none.
        #[serde(default)]
        offline: Vec<([u8; 16], i32)>,
    },
    /// The broker is stopping: fence it now and move its leaderships (Kafka's controlled
    /// shutdown), rather than after its session expires.
    ControlledShutdown { broker_id: i32, epoch: i64 },
}

/// One listener of a registering broker (Kafka's `BrokerEndpoint`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub listener: String,
    pub host: String,
    pub port: u16,
    /// Kafka's `SecurityProtocol` id (PLAINTEXT = 0).
    pub security_protocol: i16,
}

/// The active controller's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum BrokerAnswer {
    Registered {
        epoch: i64,
    },
    /// `registered: false`: no registration with that epoch (register again).
    Heartbeat {
        registered: bool,
        fenced: bool,
    },
    Refused(String),
    /// This controller is not the active one (the call is tried elsewhere).
    NotController,
}

/// The active controller's view of broker sessions; in memory only, as in Kafka: a new
/// active controller gives every broker a fresh session.
#[derive(Default)]
pub struct Sessions {
    last_heartbeat: HashMap<i32, Instant>,
    /// The metadata offset each broker reported in its last heartbeat.
    last_offset: HashMap<i32, Option<u64>>,
    /// The metadata offset at which each broker's registration committed.
    registered_at: HashMap<i32, u64>,
    /// The offline replicas each broker reported, once their leadership and ISR changes
    /// committed. A new active controller learns them from the next heartbeats.
    offline: HashMap<i32, Vec<([u8; 16], i32)>>,
}

impl Sessions {
    /// Plans a registration: `Ok(Ok(epoch))` when the same incarnation is registered
    /// already (a retry), `Ok(Err((epoch, record)))` to propose.
    pub fn register(
        &mut self,
        image: &MetadataImage,
        call: &BrokerCall,
        now: Instant,
    ) -> Result<Result<i64, (i64, ApiMessageAndVersion)>, String> {
        let BrokerCall::Register {
            broker_id,
            incarnation_id,
            endpoints,
            rack,
        } = call
        else {
            return Err("not a registration".into());
        };
        if *broker_id < 0 {
            return Err(format!("invalid broker id {broker_id}"));
        }
        self.last_heartbeat.insert(*broker_id, now);
        let existing = image.brokers.get(broker_id);
        if let Some(b) = existing.filter(|b| b.incarnation_id == *incarnation_id) {
            return Ok(Ok(b.epoch));
        }
        // A new process: what the previous one reported offline is its own to report.
        self.offline.remove(broker_id);
        // Epochs only grow: past the current offset (where the record will commit at the
        // earliest) and past the broker's previous epoch.
        let after_offset = image.offset.map_or(1, |o| o as i64 + 1);
        let epoch = after_offset.max(existing.map_or(0, |b| b.epoch + 1));
        let record =
            ApiMessageAndVersion::latest(MetadataRecord::RegisterBroker(RegisterBrokerRecord {
                broker_id: *broker_id,
                incarnation_id: Uuid(*incarnation_id),
                broker_epoch: epoch,
                end_points: endpoints
                    .iter()
                    .map(|e| BrokerEndpoint {
                        name: e.listener.clone(),
                        host: e.host.clone(),
                        port: e.port,
                        security_protocol: e.security_protocol,
                    })
                    .collect(),
                rack: rack.clone(),
                fenced: true,
                ..Default::default()
            }));
        Ok(Err((epoch, record)))
    }

    /// Notes where a registration committed (a heartbeat past it unfences the broker).
    pub fn registered(&mut self, broker_id: i32, offset: u64) {
        self.registered_at.insert(broker_id, offset);
    }

    /// Handles a heartbeat: the answer and, for a fenced broker that caught up with its
    /// registration, the record that unfences it.
    pub fn heartbeat(
        &mut self,
        image: &MetadataImage,
        broker_id: i32,
        epoch: i64,
        offset: Option<u64>,
        now: Instant,
    ) -> (BrokerAnswer, Option<ApiMessageAndVersion>) {
        let Some(b) = image.brokers.get(&broker_id).filter(|b| b.epoch == epoch) else {
            return (
                BrokerAnswer::Heartbeat {
                    registered: false,
                    fenced: true,
                },
                None,
            );
        };
        self.last_heartbeat.insert(broker_id, now);
        self.last_offset.insert(broker_id, offset);
        // Registered before this controller became active: its epoch is a lower bound
        // of the registration's offset.
        let registered_at = self
            .registered_at
            .get(&broker_id)
            .copied()
            .unwrap_or(epoch.max(0) as u64);
        let caught_up = offset >= Some(registered_at);
        let unfence = (b.fenced && caught_up).then(|| {
            ApiMessageAndVersion::latest(MetadataRecord::UnfenceBroker(UnfenceBrokerRecord {
                id: broker_id,
                epoch,
            }))
        });
        let fenced = b.fenced && unfence.is_none();
        (
            BrokerAnswer::Heartbeat {
                registered: true,
                fenced,
            },
            unfence,
        )
    }

    /// The record of a controlled shutdown: the broker fenced and marked shutting down
    /// (its next registration clears both). `None` when that registration is gone.
    pub fn controlled_shutdown(
        &mut self,
        image: &MetadataImage,
        broker_id: i32,
        epoch: i64,
    ) -> Option<ApiMessageAndVersion> {
        image.brokers.get(&broker_id).filter(|b| b.epoch == epoch)?;
        self.last_heartbeat.remove(&broker_id);
        Some(ApiMessageAndVersion::latest(
            MetadataRecord::BrokerRegistrationChange(BrokerRegistrationChangeRecord {
                broker_id,
                broker_epoch: epoch,
                fenced: FENCE,
                in_controlled_shutdown: 1,
                ..Default::default()
            }),
        ))
    }

    /// Whether `reported` (sorted) differs from the offline replicas last committed for
    /// the broker.
    pub fn offline_changed(&self, broker_id: i32, reported: &[([u8; 16], i32)]) -> bool {
        self.offline.get(&broker_id).map_or(&[][..], |v| &v[..]) != reported
    }

    /// Every broker's offline replicas, with `broker_id`'s replaced by `reported`.
    pub fn offline_with(&self, broker_id: i32, reported: &[([u8; 16], i32)]) -> OfflineReplicas {
        let others = self
            .offline
            .iter()
            .filter(|(&b, _)| b != broker_id)
            .flat_map(|(&b, list)| list.iter().map(move |&(t, p)| (b, t, p)));
        let mine = reported.iter().map(|&(t, p)| (broker_id, t, p));
        OfflineReplicas::new(others.chain(mine))
    }

    /// Every broker's offline replicas, as last committed.
    pub fn offline_replicas(&self) -> OfflineReplicas {
        OfflineReplicas::new(
            self.offline
                .iter()
                .flat_map(|(&b, list)| list.iter().map(move |&(t, p)| (b, t, p))),
        )
    }

    /// Notes the broker's offline replicas once the changes they cause committed.
    pub fn set_offline(&mut self, broker_id: i32, reported: Vec<([u8; 16], i32)>) {
        if reported.is_empty() {
            self.offline.remove(&broker_id);
        } else {
            self.offline.insert(broker_id, reported);
        }
    }

    /// The last heartbeat of every registered broker heard from recently.
    pub fn heartbeats(&self, image: &MetadataImage, now: Instant) -> Vec<Heartbeat> {
        image
            .brokers
            .keys()
            .filter_map(|id| {
                let at = *self.last_heartbeat.get(id)?;
                (now.saturating_duration_since(at) <= OBSERVER_TTL).then(|| Heartbeat {
                    broker: *id,
                    at,
                    offset: self.last_offset.get(id).copied().flatten(),
                })
            })
            .collect()
    }

    /// The records that fence every unfenced broker whose session expired. A broker
    /// this controller never heard from starts its session now.
    pub fn expired(
        &mut self,
        image: &MetadataImage,
        timeout: Duration,
        now: Instant,
    ) -> Vec<ApiMessageAndVersion> {
        image
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .filter(|b| {
                let last = *self.last_heartbeat.entry(b.id).or_insert(now);
                now.saturating_duration_since(last) > timeout
            })
            .map(|b| {
                ApiMessageAndVersion::latest(MetadataRecord::FenceBroker(FenceBrokerRecord {
                    id: b.id,
                    epoch: b.epoch,
                }))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register_call(id: i32, incarnation: u8) -> BrokerCall {
        BrokerCall::Register {
            broker_id: id,
            incarnation_id: [incarnation; 16],
            endpoints: vec![Endpoint {
                listener: "PLAINTEXT".into(),
                host: "127.0.0.1".into(),
                port: 9092,
                security_protocol: 0,
            }],
            rack: Some("r1".into()),
        }
    }

    #[test]
    fn register_unfence_expire_and_come_back() {
        let t0 = Instant::now();
        let mut sessions = Sessions::default();
        let mut img = MetadataImage {
            offset: Some(10),
            ..Default::default()
        };
        let Ok(Err((epoch, record))) = sessions.register(&img, &register_call(3, 1), t0) else {
            panic!("a new registration");
        };
        assert_eq!(epoch, 11);
        img.apply_batch(11, &[record]);
        sessions.registered(3, 11);
        let b = &img.brokers[&3];
        assert!(b.fenced);
        assert_eq!(b.rack.as_deref(), Some("r1"));
        // A retry of the same start keeps the epoch.
        assert_eq!(
            sessions.register(&img, &register_call(3, 1), t0),
            Ok(Ok(11))
        );

        // A heartbeat behind the registration leaves it fenced; one past it unfences.
        let (answer, record) = sessions.heartbeat(&img, 3, 11, Some(10), t0);
        assert_eq!(
            (answer, record),
            (
                BrokerAnswer::Heartbeat {
                    registered: true,
                    fenced: true
                },
                None
            )
        );
        let (answer, record) = sessions.heartbeat(&img, 3, 11, Some(11), t0);
        assert_eq!(
            answer,
            BrokerAnswer::Heartbeat {
                registered: true,
                fenced: false
            }
        );
        img.apply_batch(12, &[record.expect("unfence")]);
        assert!(!img.brokers[&3].fenced);
        // A stale epoch is told to register again.
        assert_eq!(
            sessions.heartbeat(&img, 3, 5, Some(12), t0).0,
            BrokerAnswer::Heartbeat {
                registered: false,
                fenced: true
            }
        );

        // No heartbeat for longer than the timeout: fenced.
        let timeout = Duration::from_secs(9);
        assert!(sessions.expired(&img, timeout, t0 + timeout).is_empty());
        let fence = sessions.expired(&img, timeout, t0 + timeout * 2);
        assert_eq!(fence.len(), 1);
        img.apply_batch(13, &fence);
        assert!(img.brokers[&3].fenced);

        // A new process start registers anew with a higher epoch.
        let Ok(Err((epoch, _))) = sessions.register(&img, &register_call(3, 2), t0) else {
            panic!("a new incarnation");
        };
        assert_eq!(epoch, 14);
    }
}
