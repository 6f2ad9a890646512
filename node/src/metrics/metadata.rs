//! Metrics of the metadata log: the controller quorum as this node's voter sees it, and
//! how far this broker's shards applied the log. Offsets are Raft index + 1, as
//! DescribeQuorum reports them.

use std::fmt::Write;

use crate::metadata::publish::PublishedOffset;
use crate::metadata::MetadataQuorum;

fn gauge(out: &mut String, name: &str, help: &str, value: i64) {
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

fn offset_after(index: Option<u64>) -> i64 {
    index.map_or(0, |i| i as i64 + 1)
}

/// Renders the metadata metrics: the quorum's for a controller (`quorum`), the
/// published offset for a broker.
pub fn render(
    quorum: Option<&MetadataQuorum>,
    published: &PublishedOffset,
    node_id: i32,
) -> String {
    let mut out = String::new();
    if let Some(q) = quorum {
        let (leader, term) = q.leader();
        let (log_end, applied) = q.progress();
        let leader = leader.map_or(-1, |l| l as i64);
        gauge(
            &mut out,
            "spate_metadata_quorum_leader",
            "The active controller's node id as this voter knows it, -1 when none",
            leader,
        );
        gauge(
            &mut out,
            "spate_metadata_quorum_active",
            "1 when this node is the active controller",
            i64::from(leader == i64::from(node_id)),
        );
        gauge(
            &mut out,
            "spate_metadata_quorum_epoch",
            "The quorum's epoch (Raft term)",
            term as i64,
        );
        gauge(
            &mut out,
            "spate_metadata_quorum_log_end_offset",
            "The end of this voter's metadata log",
            offset_after(log_end),
        );
        gauge(
            &mut out,
            "spate_metadata_quorum_applied_offset",
            "The metadata this voter's state machine applied (committed)",
            offset_after(applied),
        );
    }
    gauge(
        &mut out,
        "spate_metadata_published_offset",
        "The metadata every shard of this broker applied",
        offset_after(published.get()),
    );
    out
}
