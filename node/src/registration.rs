//! The broker's side of registration: register with the active controller, then
//! heartbeat every `broker_heartbeat_interval_ms` with the metadata offset this broker
//! applied and its offline replicas (a failed log dir: the controller moves their
//! leaderships), registering again whenever the controller no longer knows the epoch
//! (e.g. the registration was replaced). Runs on shard 0 for the broker's life; failures are
//! retried at the next beat (the controller client already tried every voter).

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::{select, Either};
use spate_replication::AppClient;

use crate::config::BrokerConfig;
use crate::metadata::brokers::{BrokerAnswer, BrokerCall, Endpoint};
use crate::metadata::publish::Published;

/// The heartbeat interval while fenced.
const FENCED_BEAT: Duration = Duration::from_millis(100);

/// Shortest time between two warnings about failed heartbeats.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// Sends one call to the active controller and decodes its answer.
pub async fn call(client: &AppClient, call: &BrokerCall) -> Result<BrokerAnswer, String> {
    let body = crate::forwarding::encode(&crate::forwarding::ControllerCall::Broker(call.clone()));
    let answer = client.call(body).await.map_err(|e| e.to_string())?;
    serde_json::from_slice(&answer).map_err(|e| format!("undecodable answer: {e}"))
}

/// This process's incarnation id: the same for every registration it makes, new at
/// every start (the controller tells a restarted broker from the one it replaces).
pub fn incarnation_id() -> [u8; 16] {
    static ID: std::sync::OnceLock<[u8; 16]> = std::sync::OnceLock::new();
    *ID.get_or_init(crate::random_id::uuid_v4)
}

/// Whether `image` has this process registered and unfenced: the controller unfences a
/// broker once its metadata caught up, so the image is at least that recent.
pub fn registered_and_unfenced(image: &crate::metadata::MetadataImage, node_id: i32) -> bool {
    image
        .brokers
        .get(&node_id)
        .is_some_and(|b| !b.fenced && b.incarnation_id == incarnation_id())
}

pub async fn run(
    client: AppClient,
    config: Arc<BrokerConfig>,
    endpoints: Vec<Endpoint>,
    published: Rc<Published>,
    log_dirs: Arc<crate::log_dirs::LogDirs>,
    unfenced: std::sync::mpsc::SyncSender<()>,
    stop: flume::Receiver<flume::Sender<()>>,
) {
    let incarnation_id = incarnation_id();
    let interval = Duration::from_millis(config.broker_heartbeat_interval_ms);
    let mut epoch: Option<i64> = None;
    // Until unfenced, beat quickly: the first heartbeat past the registration unfences.
    let mut fenced = true;
    let mut last_warning: Option<Instant> = None;
    loop {
        // Read before the replicas it reports: a change after it makes another beat.
        let offline_seen = log_dirs.offline_generation();
        let request = match epoch {
            None => BrokerCall::Register {
                broker_id: config.node_id,
                incarnation_id,
                endpoints: endpoints.clone(),
                rack: config.broker_rack.clone(),
            },
            Some(e) => BrokerCall::Heartbeat {
                broker_id: config.node_id,
                epoch: e,
                offset: published.image().offset,
                offline: log_dirs.offline_replicas(),
            },
        };
        match call(&client, &request).await {
            Ok(BrokerAnswer::Registered { epoch: e }) => {
                tracing::info!(
                    broker = config.node_id,
                    epoch = e,
                    "registered with the controller"
                );
                epoch = Some(e);
                // Heartbeat at once: it unfences the broker once its metadata caught up.
                continue;
            }
            Ok(BrokerAnswer::Heartbeat {
                registered: false, ..
            }) => epoch = None,
            Ok(BrokerAnswer::Heartbeat { fenced: f, .. }) => {
                if !f {
                    // The start waits for the first (a full channel: told already).
                    let _ = unfenced.try_send(());
                }
                fenced = f
            }
            // The client tries the other voters before answering this.
            Ok(BrokerAnswer::NotController) => {}
            Ok(BrokerAnswer::Refused(why)) => {
                tracing::error!(broker = config.node_id, reason = %why, "the controller refused the broker")
            }
            Err(e) => {
                if last_warning.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    tracing::warn!(broker = config.node_id, error = %e, "heartbeat to the controller failed");
                    last_warning = Some(Instant::now());
                }
            }
        }
        let pause = if fenced {
            interval.min(FENCED_BEAT)
        } else {
            interval
        };
        let sleep = Box::pin(next_beat(pause, &log_dirs, offline_seen));
        let Either::Right((Ok(done), _)) = select(sleep, stop.recv_async()).await else {
            continue;
        };
        if let Some(e) = epoch {
            controlled_shutdown(&client, config.node_id, e).await;
        }
        // The broker stops: no more heartbeats (they would unfence it again).
        let _ = done.send(());
        return;
    }
}

/// Waits `pause`, or less when the broker's offline replicas changed since `seen`: a
/// failed log dir is reported at once (as Kafka's broker sends a heartbeat as soon as a
/// directory fails), so its leaderships move without waiting for the next beat.
async fn next_beat(pause: Duration, log_dirs: &crate::log_dirs::LogDirs, seen: u64) {
    let until = Instant::now() + pause;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || log_dirs.offline_generation() != seen {
            return;
        }
        compio::time::sleep(left.min(FENCED_BEAT)).await;
    }
}

/// Asks the active controller to fence this broker and move its leaderships now.
async fn controlled_shutdown(client: &AppClient, broker_id: i32, epoch: i64) {
    match call(client, &BrokerCall::ControlledShutdown { broker_id, epoch }).await {
        Ok(BrokerAnswer::Heartbeat { .. }) => {
            tracing::info!(
                broker = broker_id,
                "controlled shutdown: fenced, leaderships moved"
            )
        }
        Ok(other) => {
            tracing::warn!(broker = broker_id, answer = ?other, "controlled shutdown refused")
        }
        Err(e) => {
            tracing::warn!(broker = broker_id, error = %e, "controlled shutdown failed; the session will expire instead")
        }
    }
}
