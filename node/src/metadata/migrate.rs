//! The one-time migration of a data dir written before the controller quorum: its
//! `metadata.log` (JSON records, `legacy.rs`) becomes the first KRaft records of the
//! quorum's log, then is renamed `metadata.log.migrated` (kept for an operator, never
//! read again).
//!
//! Interrupted (a crash between the proposals and the rename), it runs again at the next
//! start and proposes the same records: replaying them again changes nothing (a topic
//! record of a known id is skipped, partition and config records set what they already
//! hold), and nothing else is written before the migration finished.

use std::path::Path;

use anyhow::Context;

use super::boot::{propose_all, MetadataQuorum};
use super::{legacy, records, MetadataImage};

pub const OLD_LOG: &str = "metadata.log";
pub const MIGRATED_LOG: &str = "metadata.log.migrated";

/// Migrates `dir/metadata.log` if it exists; returns the index of the last record
/// proposed. `image` is the quorum's current state (for the bootstrap records).
pub async fn run(
    quorum: &MetadataQuorum,
    image: &MetadataImage,
    dir: &Path,
    node: i32,
) -> anyhow::Result<Option<u64>> {
    let old = dir.join(OLD_LOG);
    if !old.exists() {
        return Ok(None);
    }
    let legacy = legacy::read(&old)?;
    let mut proposal = records::bootstrap(image);
    proposal.extend(legacy::to_kraft(&legacy, node));
    let count = proposal.len();
    let last = propose_all(quorum, proposal)
        .await
        .context("migrating the metadata log to the controller quorum")?;
    let migrated = dir.join(MIGRATED_LOG);
    std::fs::rename(&old, &migrated)
        .with_context(|| format!("renaming {} to {}", old.display(), migrated.display()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    tracing::info!(
        old_records = legacy.len(),
        records = count,
        kept = %migrated.display(),
        "metadata log migrated to the controller quorum"
    );
    Ok(last)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use spate_replication::{Quorum, QuorumConfig};

    use super::*;
    use crate::metadata::boot::{boot, metadata_dir};
    use crate::metadata::image::slot_of;

    fn start(dir: &Path) -> (Arc<MetadataQuorum>, BTreeMap<u64, String>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let voters = BTreeMap::from([(0, addr)]);
        let config = QuorumConfig::new(0, voters.clone(), dir);
        let quorum =
            Quorum::start_with_listener(config, listener, MetadataImage::default()).unwrap();
        (Arc::new(quorum), voters)
    }

    fn boot_image(dir: &Path) -> (Arc<MetadataQuorum>, MetadataImage) {
        let (quorum, voters) = start(dir);
        let rt = compio::runtime::Runtime::new().unwrap();
        let booted = rt.block_on(boot(quorum, voters, 0, dir)).unwrap();
        (booted.quorum.unwrap(), booted.image)
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The fixture is a `metadata.log` as the JSON-era broker wrote it (with a torn
    /// last entry): topics created, extended, reconfigured and deleted, broker configs,
    /// producer-id blocks.
    fn check(image: &MetadataImage) {
        assert_eq!(
            image.topics.keys().collect::<Vec<_>>(),
            ["__consumer_offsets", "orders"]
        );
        let orders = image.topic("orders").unwrap();
        assert_eq!(orders.id, [0xa1; 16]);
        assert_eq!(orders.configs, map(&[("cleanup.policy", "compact")]));
        assert_eq!(orders.partitions.len(), 3);
        for (i, p) in orders.partitions.iter().enumerate() {
            assert_eq!(p.slot, slot_of(&[0xa1; 16], i as i32));
            assert_eq!(
                (&p.replicas[..], &p.isr[..], p.leader),
                (&[0][..], &[0][..], 0)
            );
        }
        let offsets = image.topic("__consumer_offsets").unwrap();
        assert_eq!(offsets.partitions.len(), 3);
        assert_eq!(
            offsets.configs,
            map(&[
                ("cleanup.policy", "compact"),
                ("segment.bytes", "104857600")
            ])
        );
        assert!(image.topic_by_id(&[0xb2; 16]).is_none());
        assert_eq!(
            image.broker_configs,
            BTreeMap::from([
                (String::new(), map(&[("log.retention.ms", "1000")])),
                ("0".to_string(), map(&[("log.cleaner.threads", "2")])),
            ])
        );
        assert_eq!(image.producer_ids_end, 2000);
        assert_eq!(
            image.features.get(records::METADATA_VERSION_FEATURE),
            Some(&records::METADATA_VERSION)
        );
    }

    #[test]
    fn an_old_metadata_log_is_migrated_once_and_survives_restarts() {
        let data = tempfile::tempdir().unwrap();
        let dir = metadata_dir(data.path());
        std::fs::create_dir_all(&dir).unwrap();
        let fixture = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/metadata/testdata/metadata.log"
        );
        std::fs::copy(fixture, dir.join(OLD_LOG)).unwrap();

        let (quorum, image) = boot_image(&dir);
        check(&image);
        assert!(!dir.join(OLD_LOG).exists());
        assert_eq!(
            std::fs::read(dir.join(MIGRATED_LOG)).unwrap(),
            std::fs::read(fixture).unwrap()
        );
        let migrated_at = image.offset;
        drop(quorum);

        // Restarted: the same state from the quorum's own log, nothing proposed again.
        let (quorum, image) = boot_image(&dir);
        check(&image);
        assert!(image.offset >= migrated_at);
        let rt = compio::runtime::Runtime::new().unwrap();
        // From a snapshot too.
        rt.block_on(quorum.snapshot()).unwrap();
        drop(quorum);
        let (_quorum, image) = boot_image(&dir);
        check(&image);
    }

    /// A migration interrupted before the rename runs again: the records proposed twice
    /// give the same image.
    #[test]
    fn an_interrupted_migration_runs_again_to_the_same_state() {
        let data = tempfile::tempdir().unwrap();
        let dir = metadata_dir(data.path());
        std::fs::create_dir_all(&dir).unwrap();
        let fixture = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/metadata/testdata/metadata.log"
        );
        std::fs::copy(fixture, dir.join(OLD_LOG)).unwrap();
        let (quorum, image) = boot_image(&dir);
        drop(quorum);
        // As if the rename had not happened.
        std::fs::rename(dir.join(MIGRATED_LOG), dir.join(OLD_LOG)).unwrap();
        let (_quorum, again) = boot_image(&dir);
        check(&again);
        let mut without_offset = again.clone();
        without_offset.offset = image.offset;
        assert_eq!(without_offset, image);
        assert!(!dir.join(OLD_LOG).exists());
    }
}
