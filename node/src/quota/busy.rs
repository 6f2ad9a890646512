//! The time a shard spends running one request's work: what `request_percentage`
//! quotas count (Kafka counts its request handler threads' time on the request).
//!
//! A request's work is the futures that compute its response: the dispatch and the
//! task it may spawn. [`Timed`] wraps each and adds up the time spent inside their
//! `poll`, which is the time the shard ran them: waiting on I/O, on another shard or on
//! other requests is not polling. Work done for the request in other tasks (the owner
//! shard appending or reading a partition) is not counted, as Kafka's purgatory and log
//! threads are not in its request time either.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// One request's time so far.
#[derive(Debug, Default)]
pub struct BusyTime {
    /// The time of the polls that ended.
    spent: Cell<Duration>,
    /// When the poll running now started, while one is.
    polling_since: Cell<Option<Instant>>,
}

impl BusyTime {
    /// A meter that already counts `spent` (the work before it was made, e.g. decoding).
    pub fn new(spent: Duration) -> Rc<BusyTime> {
        Rc::new(BusyTime {
            spent: Cell::new(spent),
            polling_since: Cell::new(None),
        })
    }

    /// The time counted so far, with the poll running now up to now: a response built
    /// inside a poll is charged for the work up to it.
    pub fn total(&self) -> Duration {
        let running = self
            .polling_since
            .get()
            .map_or(Duration::ZERO, |since| since.elapsed());
        self.spent.get() + running
    }

    fn enter(&self) -> Option<Instant> {
        // A poll inside a poll of the same request (a timed future polling another) is
        // already being counted by the outer one.
        if self.polling_since.get().is_some() {
            return None;
        }
        let now = Instant::now();
        self.polling_since.set(Some(now));
        Some(now)
    }

    fn leave(&self, entered: Option<Instant>) {
        if let Some(since) = entered {
            self.polling_since.set(None);
            self.spent.set(self.spent.get() + since.elapsed());
        }
    }
}

pin_project_lite::pin_project! {
    /// `F`, with the time spent polling it added to a [`BusyTime`]: two clock reads a
    /// poll.
    pub struct Timed<F> {
        #[pin]
        inner: F,
        busy: Rc<BusyTime>,
    }
}

impl<F> Timed<F> {
    pub fn new(inner: F, busy: Rc<BusyTime>) -> Timed<F> {
        Timed { inner, busy }
    }
}

impl<F: Future> Future for Timed<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let entered = this.busy.enter();
        let out = this.inner.poll(cx);
        this.busy.leave(entered);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Busy for `busy` on every poll, ready after `polls` polls; wakes itself.
    struct Work {
        polls: u32,
        busy: Duration,
    }

    impl Future for Work {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let start = Instant::now();
            while start.elapsed() < self.busy {
                std::hint::spin_loop();
            }
            self.polls -= 1;
            if self.polls == 0 {
                return Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[test]
    fn polls_are_counted_and_waits_between_them_are_not() {
        let busy = BusyTime::new(Duration::from_millis(1));
        let mut f = Box::pin(Timed::new(
            Work {
                polls: 3,
                busy: Duration::from_millis(2),
            },
            busy.clone(),
        ));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut waited = Duration::ZERO;
        loop {
            if f.as_mut().poll(&mut cx).is_ready() {
                break;
            }
            // Time between polls (the request waiting) is not the request's.
            std::thread::sleep(Duration::from_millis(50));
            waited += Duration::from_millis(50);
        }
        let total = busy.total();
        assert!(total >= Duration::from_millis(7), "{total:?}");
        assert!(total < waited, "{total:?} counts waits");
        assert_eq!(busy.polling_since.get(), None);
    }

    #[test]
    fn the_running_poll_counts_and_nested_polls_count_once() {
        let busy = BusyTime::new(Duration::ZERO);
        let inner_busy = busy.clone();
        let outer = Timed::new(
            async move {
                // The same request's work polled inside its own poll.
                Timed::new(
                    Work {
                        polls: 1,
                        busy: Duration::from_millis(20),
                    },
                    inner_busy.clone(),
                )
                .await;
                // What a response built now is charged: the poll so far.
                inner_busy.total()
            },
            busy.clone(),
        );
        let seen = futures_util::FutureExt::now_or_never(outer).unwrap();
        assert!(seen >= Duration::from_millis(20), "{seen:?}");
        // Counted once: the nested poll did not add its time again.
        let total = busy.total();
        assert!(total >= seen && total < seen * 2, "{total:?} vs {seen:?}");
    }
}
