//! The application state the quorum tests drive: topic names in the order their
//! records were applied.

use std::sync::{Arc, Mutex};

use spate_net::metadata_frame::ApiMessageAndVersion;
use spate_net::metadata_records::{MetadataRecord, TopicRecord};
use spate_net::Uuid;
use spate_replication::MetadataStateMachine;

#[derive(Clone, Default)]
pub struct Topics(Arc<Mutex<Vec<String>>>);

impl Topics {
    pub fn names(&self) -> Vec<String> {
        self.0.lock().expect("lock").clone()
    }
}

/// A topic record named `name` (its id from the name's first bytes).
pub fn topic(name: &str) -> ApiMessageAndVersion {
    let mut id = [0u8; 16];
    for (i, b) in name.bytes().enumerate().take(16) {
        id[i] = b;
    }
    ApiMessageAndVersion::latest(MetadataRecord::Topic(TopicRecord {
        name: name.to_string(),
        topic_id: Uuid(id),
    }))
}

/// The topic names of `records`, in order.
pub fn names(records: &[ApiMessageAndVersion]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| match &r.record {
            MetadataRecord::Topic(t) => Some(t.name.clone()),
            _ => None,
        })
        .collect()
}

impl MetadataStateMachine for Topics {
    fn apply(&mut self, _index: u64, records: &[ApiMessageAndVersion]) {
        self.0.lock().expect("lock").extend(names(records));
    }

    fn snapshot_records(&self) -> Vec<ApiMessageAndVersion> {
        self.names().iter().map(|n| topic(n)).collect()
    }

    fn restore(&mut self, records: &[ApiMessageAndVersion]) {
        *self.0.lock().expect("lock") = names(records);
    }
}
