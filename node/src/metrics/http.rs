//! The HTTP endpoint for Prometheus and orchestrators, on its own thread (off the
//! shards): `/metrics` asks every shard for a snapshot and renders them merged;
//! `/health` is 200 while every shard answers a ping, `/ready` while every shard also
//! serves (not shutting down); 503 otherwise. A probe waits at most `PROBE_TIMEOUT` in
//! all (one deadline for every shard), so a shard whose thread is dead or stuck (its
//! runtime does not get to the ping) turns `/health` into 503 within that time.

use std::time::{Duration, Instant};

use super::render::render;
use crate::mesh::ShardMsg;

/// How long a scrape waits for a shard before answering without it.
const SHARD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a probe waits for all shards together.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Metrics rendered outside the shards (the schema registry's), appended to a scrape.
pub type ExtraMetrics = std::sync::Arc<dyn Fn() -> String + Send + Sync>;

pub fn serve_http(
    addr: &str,
    shards: Vec<flume::Sender<ShardMsg>>,
    extra: ExtraMetrics,
) -> anyhow::Result<std::net::SocketAddr> {
    let server = tiny_http::Server::http(addr)
        .map_err(|e| anyhow::anyhow!("binding the HTTP endpoint {addr}: {e}"))?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| anyhow::anyhow!("HTTP endpoint {addr} is not an IP socket"))?;
    std::thread::Builder::new()
        .name("spate-http".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                let path = request
                    .url()
                    .split('?')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let (status, body, content_type) = match path.as_str() {
                    "/metrics" => (
                        200,
                        scrape(&shards) + &extra(),
                        "text/plain; version=0.0.4; charset=utf-8",
                    ),
                    "/health" | "/ready" => {
                        let answers = ping(&shards, PROBE_TIMEOUT);
                        let alive = answers.iter().all(Option::is_some);
                        let serving = answers.iter().all(|a| *a == Some(true));
                        match (path.as_str(), alive, serving) {
                            ("/health", true, _) => (200, "ok\n".to_string(), "text/plain"),
                            ("/ready", _, true) => (200, "ready\n".to_string(), "text/plain"),
                            ("/health", false, _) => {
                                (503, "a shard does not answer\n".to_string(), "text/plain")
                            }
                            _ => (503, "not serving\n".to_string(), "text/plain"),
                        }
                    }
                    _ => (404, "not found\n".to_string(), "text/plain"),
                };
                let header = tiny_http::Header::from_bytes("Content-Type", content_type)
                    .expect("static header is valid");
                let response = tiny_http::Response::from_string(body)
                    .with_status_code(status)
                    .with_header(header);
                let _ = request.respond(response);
            }
        })?;
    Ok(bound)
}

/// Each shard's answer to a ping (`None`: no answer before the deadline, or the shard's
/// channel is closed).
fn ping(shards: &[flume::Sender<ShardMsg>], timeout: Duration) -> Vec<Option<bool>> {
    let deadline = Instant::now() + timeout;
    let waits: Vec<_> = shards
        .iter()
        .map(|s| {
            let (tx, rx) = flume::bounded(1);
            s.send_deadline(ShardMsg::Ping { reply: tx }, deadline)
                .ok()
                .map(|_| rx)
        })
        .collect();
    waits
        .into_iter()
        .map(|rx| rx.and_then(|rx| rx.recv_deadline(deadline).ok()))
        .collect()
}

fn scrape(shards: &[flume::Sender<ShardMsg>]) -> String {
    let waits: Vec<_> = shards
        .iter()
        .filter_map(|s| {
            let (tx, rx) = flume::bounded(1);
            s.send_timeout(ShardMsg::Metrics { reply: tx }, SHARD_TIMEOUT)
                .ok()
                .map(|_| rx)
        })
        .collect();
    let snapshots: Vec<_> = waits
        .into_iter()
        .filter_map(|rx| rx.recv_timeout(SHARD_TIMEOUT).ok())
        .collect();
    render(&snapshots)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A live shard answers; a stuck one (its channel is never read) and a dead one (its
    /// channel is closed) do not, and the probe still returns within its timeout.
    #[test]
    fn ping_is_bounded_and_reports_silent_shards() {
        let (live, live_rx) = flume::bounded::<ShardMsg>(8);
        let answering = std::thread::spawn(move || {
            if let Ok(ShardMsg::Ping { reply }) = live_rx.recv() {
                let _ = reply.send(true);
            }
        });
        let (stuck, _stuck_rx) = flume::bounded::<ShardMsg>(8);
        let (stuck_full, _full_rx) = flume::bounded::<ShardMsg>(0);
        let (dead, dead_rx) = flume::bounded::<ShardMsg>(8);
        drop(dead_rx);
        let started = Instant::now();
        let answers = ping(&[live, stuck, stuck_full, dead], Duration::from_millis(300));
        let took = started.elapsed();
        answering.join().unwrap();
        assert_eq!(answers, vec![Some(true), None, None, None]);
        assert!(took < Duration::from_millis(1500), "probe took {took:?}");
    }
}
