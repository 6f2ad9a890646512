//! Prometheus metrics: per-shard counters (`registry`), the snapshot each shard sends at
//! scrape time (`snapshot`), the text exposition (`render`) and the HTTP endpoint
//! (`http`: `/metrics`, `/health`, `/ready`).

mod http;
pub mod metadata;
mod registry;
mod render;
mod snapshot;

pub use http::{serve_http, ExtraMetrics};
pub use registry::ShardCounters;
pub use snapshot::{record_count, CleanerTotals, ShardSnapshot};
