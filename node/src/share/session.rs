//! Share sessions (KIP-932): per broker, one per (group, member), holding the partitions
//! the member fetches from this broker and the epoch its next request must carry.
//! ShareFetch at epoch 0 opens (or replaces) a session, each answered request moves the
//! epoch on, and epoch -1 closes it. A member's records are released when its session
//! ends: closed, replaced, or its connection gone.
//!
//! A session lives on the shard of the connection that opened it (a member fetches
//! from a broker over one connection; one that reconnects elsewhere opens a new
//! session, as after any reconnection): each shard keeps its own, and only their
//! number, for `group.share.max.share.sessions`, is shared by the shards.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use spate_net::{ErrorCode, Uuid};

/// Epoch that opens a session.
pub const OPEN: i32 = 0;
/// Epoch that closes one.
pub const CLOSE: i32 = -1;

/// A partition a session fetches: topic id and index.
pub type SessionPartition = (Uuid, i32);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub group_id: String,
    pub member_id: String,
}

#[derive(Debug)]
struct Session {
    /// The epoch the member's next request must carry.
    next_epoch: i32,
    partitions: BTreeSet<SessionPartition>,
    /// The connection that last used it (its close ends the session).
    connection: u64,
}

/// What a request does to its session.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The session's partitions after the request's changes. `released`: a session
    /// this one replaced, whose records must be released.
    Open {
        partitions: Vec<SessionPartition>,
        replaced: Option<Vec<SessionPartition>>,
    },
    /// The session ended: its partitions (the member's records there are released
    /// after the request's acknowledgements).
    Closed { partitions: Vec<SessionPartition> },
}

/// The share sessions of one shard.
#[derive(Debug)]
pub struct ShareSessions {
    sessions: RefCell<HashMap<SessionKey, Session>>,
    /// The broker's sessions, over every shard.
    count: Arc<AtomicUsize>,
    limit: usize,
}

impl ShareSessions {
    /// A shard's sessions; `count` is shared by the broker's shards.
    pub fn new(limit: usize, count: Arc<AtomicUsize>) -> ShareSessions {
        ShareSessions {
            sessions: RefCell::new(HashMap::new()),
            count,
            limit: limit.max(1),
        }
    }

    fn ended(&self, sessions: usize) {
        let before = self.count.fetch_sub(sessions, Ordering::Relaxed);
        debug_assert!(before >= sessions, "share session count below zero");
    }

    /// Apply a request at `epoch` that adds `added` and forgets `forgotten`.
    /// ShareAcknowledge (`fetch` false) cannot open a session.
    pub fn update(
        &self,
        key: &SessionKey,
        epoch: i32,
        added: &[SessionPartition],
        forgotten: &[SessionPartition],
        connection: u64,
        fetch: bool,
    ) -> Result<Outcome, i16> {
        let mut sessions = self.sessions.borrow_mut();
        match epoch {
            OPEN if fetch => {
                let replaced = sessions.remove(key).map(|s| {
                    self.ended(1);
                    s.partitions.into_iter().collect()
                });
                // Taken before the insert, so that shards opening at once cannot pass
                // the limit together.
                let taken = self
                    .count
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                        (n < self.limit).then_some(n + 1)
                    });
                if taken.is_err() {
                    return Err(ErrorCode::ShareSessionLimitReached.code());
                }
                let partitions: BTreeSet<_> = added.iter().copied().collect();
                let list = partitions.iter().copied().collect();
                sessions.insert(
                    key.clone(),
                    Session {
                        next_epoch: 1,
                        partitions,
                        connection,
                    },
                );
                Ok(Outcome::Open {
                    partitions: list,
                    replaced,
                })
            }
            OPEN => Err(ErrorCode::InvalidShareSessionEpoch.code()),
            CLOSE => match sessions.remove(key) {
                Some(s) => {
                    self.ended(1);
                    Ok(Outcome::Closed {
                        partitions: s.partitions.into_iter().collect(),
                    })
                }
                None => Err(ErrorCode::ShareSessionNotFound.code()),
            },
            _ => {
                let Some(s) = sessions.get_mut(key) else {
                    return Err(ErrorCode::ShareSessionNotFound.code());
                };
                if s.next_epoch != epoch {
                    return Err(ErrorCode::InvalidShareSessionEpoch.code());
                }
                s.next_epoch = if epoch == i32::MAX { 1 } else { epoch + 1 };
                s.connection = connection;
                s.partitions.extend(added.iter().copied());
                for f in forgotten {
                    s.partitions.remove(f);
                }
                Ok(Outcome::Open {
                    partitions: s.partitions.iter().copied().collect(),
                    replaced: None,
                })
            }
        }
    }

    /// A connection closed: the sessions it last used end; their keys and partitions.
    pub fn connection_closed(&self, connection: u64) -> Vec<(SessionKey, Vec<SessionPartition>)> {
        let mut sessions = self.sessions.borrow_mut();
        let keys: Vec<SessionKey> = sessions
            .iter()
            .filter(|(_, s)| s.connection == connection)
            .map(|(k, _)| k.clone())
            .collect();
        self.ended(keys.len());
        keys.into_iter()
            .filter_map(|k| {
                let s = sessions.remove(&k)?;
                Some((k, s.partitions.into_iter().collect()))
            })
            .collect()
    }

    /// The broker's sessions, over every shard.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SessionKey {
        SessionKey {
            group_id: "g".into(),
            member_id: "m".into(),
        }
    }

    const T: Uuid = Uuid([7; 16]);

    #[test]
    fn open_continue_close() {
        let s = ShareSessions::new(10, Arc::default());
        assert_eq!(
            s.update(&key(), 1, &[], &[], 1, true),
            Err(ErrorCode::ShareSessionNotFound.code())
        );
        assert_eq!(
            s.update(&key(), OPEN, &[(T, 0)], &[], 1, false),
            Err(ErrorCode::InvalidShareSessionEpoch.code())
        );
        let opened = s.update(&key(), OPEN, &[(T, 0)], &[], 1, true).unwrap();
        assert_eq!(
            opened,
            Outcome::Open {
                partitions: vec![(T, 0)],
                replaced: None
            }
        );
        assert_eq!(
            s.update(&key(), 2, &[], &[], 1, true),
            Err(ErrorCode::InvalidShareSessionEpoch.code())
        );
        let next = s.update(&key(), 1, &[(T, 1)], &[(T, 0)], 1, false).unwrap();
        assert_eq!(
            next,
            Outcome::Open {
                partitions: vec![(T, 1)],
                replaced: None
            }
        );
        let reopened = s.update(&key(), OPEN, &[(T, 2)], &[], 2, true).unwrap();
        assert_eq!(
            reopened,
            Outcome::Open {
                partitions: vec![(T, 2)],
                replaced: Some(vec![(T, 1)])
            }
        );
        assert_eq!(
            s.update(&key(), CLOSE, &[], &[], 2, false).unwrap(),
            Outcome::Closed {
                partitions: vec![(T, 2)]
            }
        );
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn limit_and_connection_close() {
        let count = Arc::default();
        let s = ShareSessions::new(1, Arc::clone(&count));
        s.update(&key(), OPEN, &[(T, 0)], &[], 5, true).unwrap();
        // Another shard's sessions count towards the same limit.
        let elsewhere = ShareSessions::new(1, count);
        assert_eq!(
            elsewhere.update(&key(), OPEN, &[], &[], 6, true),
            Err(ErrorCode::ShareSessionLimitReached.code())
        );
        let other = SessionKey {
            group_id: "g".into(),
            member_id: "n".into(),
        };
        assert_eq!(
            s.update(&other, OPEN, &[], &[], 5, true),
            Err(ErrorCode::ShareSessionLimitReached.code())
        );
        assert_eq!(s.connection_closed(5), vec![(key(), vec![(T, 0)])]);
        assert_eq!(s.len(), 0);
    }
}
