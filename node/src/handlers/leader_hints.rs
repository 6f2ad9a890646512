//! KIP-951: a partition answered NOT_LEADER_OR_FOLLOWER names its current leader, and
//! the response carries that leader's endpoint (for the listener the client came in
//! on), so that producers and consumers re-route without a Metadata round trip.

use std::collections::BTreeSet;

use crate::metadata::MetadataImage;
use crate::security::Listener;

/// A partition's current leader and its epoch, when it has one.
pub fn current_leader(image: &MetadataImage, topic: &str, partition: i32) -> Option<(i32, i32)> {
    let info = image.partition(topic, partition)?;
    // The image's epoch, the one Metadata reports.
    (info.leader >= 0).then_some((info.leader, info.leader_epoch))
}

/// The endpoints of `leaders` for `listener`: node id, host, port, rack. A leader that
/// is not live, or has no such listener, is left out.
pub fn endpoints(
    image: &MetadataImage,
    leaders: &BTreeSet<i32>,
    listener: &Listener,
    node: i32,
) -> Vec<(i32, String, i32, Option<String>)> {
    leaders
        .iter()
        .filter_map(|&id| {
            let (host, port) = if id == node {
                listener.advertised.clone()
            } else {
                super::metadata::endpoint(image, id, listener)?
            };
            let rack = image.brokers.get(&id).and_then(|b| b.rack.clone());
            Some((id, host, port, rack))
        })
        .collect()
}
