//! Broker-wide limits shared by every shard: the memory held by request frames
//! (`queued_max_request_bytes`, Kafka's `queued.max.request.bytes`) and the number of
//! open client connections (`max_connections`, Kafka's `max.connections`).
//!
//! Both are one `Arc`'d atomic counter for the whole process rather than a per-shard
//! split: a single produce frame may be as large as `socket_request_max_bytes`
//! (100 MiB), which a per-shard share of the budget could not hold on a many-core
//! host, and connections land on shards unevenly (`SO_REUSEPORT` hashing). The
//! counters are touched once per request and once per connection, not per byte.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use event_listener::Event;

/// Memory budget for request frames being read, queued or handled.
pub struct RequestMemory {
    limit: usize,
    used: AtomicUsize,
    /// Fired whenever bytes are given back, so that waiting connections retry.
    freed: Event,
}

/// Bytes taken from a `RequestMemory`, given back when dropped.
pub struct Permit {
    pool: Arc<RequestMemory>,
    bytes: usize,
}

impl RequestMemory {
    pub fn new(limit: usize) -> Arc<RequestMemory> {
        Arc::new(RequestMemory {
            limit,
            used: AtomicUsize::new(0),
            freed: Event::new(),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes currently held by permits.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Take `bytes` now if they fit.
    pub fn try_acquire(self: &Arc<Self>, bytes: usize) -> Option<Permit> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let next = used.checked_add(bytes).filter(|n| *n <= self.limit)?;
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Some(Permit {
                        pool: self.clone(),
                        bytes,
                    })
                }
                Err(now) => used = now,
            }
        }
    }

    /// Take `bytes`, waiting until other requests give enough back. `None` when
    /// `bytes` exceeds the whole budget (it could never be granted).
    pub async fn acquire(self: &Arc<Self>, bytes: usize) -> Option<Permit> {
        if bytes > self.limit {
            return None;
        }
        loop {
            if let Some(p) = self.try_acquire(bytes) {
                return Some(p);
            }
            // Listen first, then re-check, so a release between the two is not missed.
            let listener = self.freed.listen();
            if let Some(p) = self.try_acquire(bytes) {
                return Some(p);
            }
            listener.await;
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.pool.used.fetch_sub(self.bytes, Ordering::AcqRel);
            // Every waiter re-checks: a large release may satisfy several small ones.
            self.pool.freed.notify(usize::MAX);
        }
    }
}

/// Open client connections across all shards.
pub struct ConnectionLimit {
    /// `max_connections` (a dynamic broker config: lowering it closes nothing, new
    /// connections wait for the count to drop below it).
    limit: AtomicUsize,
    open: AtomicUsize,
}

/// One open connection; the count drops with it.
pub struct ConnectionSlot {
    limit: Arc<ConnectionLimit>,
}

impl ConnectionLimit {
    pub fn new(limit: usize) -> Arc<ConnectionLimit> {
        Arc::new(ConnectionLimit {
            limit: AtomicUsize::new(limit),
            open: AtomicUsize::new(0),
        })
    }

    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// A slot for a new connection, or `None` when `max_connections` are open.
    pub fn try_open(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let mut open = self.open.load(Ordering::Relaxed);
        let limit = self.limit.load(Ordering::Relaxed);
        loop {
            if open >= limit {
                return None;
            }
            match self.open.compare_exchange_weak(
                open,
                open + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(ConnectionSlot {
                        limit: self.clone(),
                    })
                }
                Err(now) => open = now,
            }
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.limit.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_add_up_and_give_back() {
        let pool = RequestMemory::new(100);
        let a = pool.try_acquire(60).unwrap();
        assert!(pool.try_acquire(41).is_none());
        let b = pool.try_acquire(40).unwrap();
        assert_eq!(pool.used(), 100);
        drop(a);
        assert_eq!(pool.used(), 40);
        drop(b);
        assert_eq!(pool.used(), 0);
        assert!(pool.try_acquire(usize::MAX).is_none());
    }

    #[test]
    fn waiting_acquire_wakes_on_release() {
        let pool = RequestMemory::new(10);
        let held = pool.try_acquire(10).unwrap();
        let p2 = pool.clone();
        let waiter = std::thread::spawn(move || futures_executor_lite(p2));
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(held);
        assert_eq!(waiter.join().unwrap(), 7);
        assert_eq!(pool.used(), 0);
        // Larger than the whole budget: refused at once.
        let rt = compio::runtime::Runtime::new().unwrap();
        assert!(rt.block_on(pool.acquire(11)).is_none());
    }

    fn futures_executor_lite(pool: Arc<RequestMemory>) -> usize {
        let rt = compio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let permit = pool.acquire(7).await;
            let held = pool.used();
            drop(permit);
            held
        })
    }

    #[test]
    fn connection_slots() {
        let limit = ConnectionLimit::new(2);
        let a = limit.try_open().unwrap();
        let _b = limit.try_open().unwrap();
        assert!(limit.try_open().is_none());
        drop(a);
        assert!(limit.try_open().is_some());
    }
}
