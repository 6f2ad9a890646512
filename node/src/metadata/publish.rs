//! The broker side of the metadata log: follows what the quorum commits, keeps the
//! broker's image, hands every new image to all shards (waiting until each applied it),
//! and lets the controller wait until a change it proposed has reached every shard.
//! Runs on shard 0, beside the controller.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use event_listener::Event;
use spate_replication::Committed;

use super::{MetadataImage, MetadataQuorum};
use crate::mesh::ShardMsg;

/// The image every shard has applied, and a signal when it moves.
pub struct Published {
    image: RefCell<Arc<MetadataImage>>,
    changed: Event,
    offset: Arc<PublishedOffset>,
}

/// The offset of the published image, readable from any thread (the controller's
/// handler of calls from other nodes runs on the quorum's thread).
#[derive(Debug, Default)]
pub struct PublishedOffset(AtomicU64);

/// `PublishedOffset`'s "nothing applied yet".
const NO_OFFSET: u64 = u64::MAX;

impl PublishedOffset {
    pub fn get(&self) -> Option<u64> {
        Some(self.0.load(Ordering::Acquire)).filter(|&o| o != NO_OFFSET)
    }

    fn set(&self, offset: Option<u64>) {
        self.0.store(offset.unwrap_or(NO_OFFSET), Ordering::Release);
    }
}

impl Published {
    /// `offset` is kept equal to the published image's (for readers on other threads).
    pub fn new(image: Arc<MetadataImage>, offset: Arc<PublishedOffset>) -> Rc<Self> {
        offset.set(image.offset);
        Rc::new(Published {
            image: RefCell::new(image),
            changed: Event::new(),
            offset,
        })
    }

    pub fn offset_handle(&self) -> Arc<PublishedOffset> {
        self.offset.clone()
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    /// Waits until every shard applied the metadata log up to `offset`.
    pub async fn wait_for(&self, offset: u64) -> Arc<MetadataImage> {
        loop {
            // Listen first, then check, so that a change between the two is not missed.
            let listener = self.changed.listen();
            let image = self.image();
            if image.offset >= Some(offset) {
                return image;
            }
            listener.await;
        }
    }

    fn set(&self, image: Arc<MetadataImage>) {
        assert!(
            image.offset >= self.image.borrow().offset,
            "the published metadata went back from {:?} to {:?}",
            self.image.borrow().offset,
            image.offset
        );
        self.offset.set(image.offset);
        self.image.replace(image);
        self.changed.notify(usize::MAX);
    }
}

/// Applies one event of a quorum subscription to `image`; `true` when the content
/// changed (not just the offset: entries without records only move it).
pub fn apply_event(image: &mut MetadataImage, event: Committed) -> bool {
    match event {
        Committed::Snapshot { index, records } => {
            *image = MetadataImage::from_records(index, &records);
            true
        }
        Committed::Batch { index, records, .. } => {
            image.apply_batch(index, &records);
            !records.is_empty()
        }
    }
}

/// Follows the quorum for the broker's life, starting from `published`'s image and the
/// subscription that produced it: this node's voter's (`quorum`), or an observer's.
pub async fn follow(
    quorum: Option<Arc<MetadataQuorum>>,
    mut committed: flume::Receiver<Committed>,
    published: Rc<Published>,
    shards: Vec<flume::Sender<ShardMsg>>,
) {
    let mut image = (*published.image()).clone();
    loop {
        let Ok(first) = committed.recv_async().await else {
            let Some(quorum) = &quorum else {
                // The observer thread feeds the channel for the process's life.
                crate::fault::fail_stop("following the metadata log", &"the observer stopped");
            };
            // Dropped for falling behind: start again from the current state.
            tracing::warn!("metadata subscription dropped; resubscribing");
            committed = quorum.subscribe();
            continue;
        };
        let mut changed = apply_event(&mut image, first);
        // Whatever else is already queued goes to the shards in the same image.
        while let Ok(event) = committed.try_recv() {
            changed |= apply_event(&mut image, event);
        }
        let next = Arc::new(image.clone());
        if changed {
            to_shards(&shards, &next).await;
        }
        published.set(next);
    }
}

/// Sends `image` to every shard and waits until each applied it (opened, reconfigured
/// or deleted its partitions).
async fn to_shards(shards: &[flume::Sender<ShardMsg>], image: &Arc<MetadataImage>) {
    let mut waits = Vec::with_capacity(shards.len());
    for shard in shards {
        let (tx, rx) = flume::bounded(1);
        let msg = ShardMsg::Metadata {
            image: image.clone(),
            done: tx,
        };
        if shard.send_async(msg).await.is_ok() {
            waits.push(rx);
        }
    }
    for rx in waits {
        let _ = rx.recv_async().await;
    }
}
