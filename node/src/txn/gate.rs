//! KIP-890 on a partition: the batches of a producer whose first transactional write
//! here waits for the coordinator, held in arrival order.
//!
//! A producer pipelines its batches (up to five requests in flight), so while the
//! coordinator is asked about its first batch, its next ones arrive. They must be
//! appended after the first, in order, or their sequence numbers would be out of order.
//! The first batch opens a gate and takes ticket 0; later batches of the producer take
//! the next tickets; once the coordinator has answered, the tickets go through one at a
//! time, in order, each running the produce checks anew.

use std::collections::HashMap;

use event_listener::Event;

/// One producer's gate.
#[derive(Debug)]
struct Gate {
    /// The guard the coordinator's approval is tied to (`ProducerStates::verify_txn`).
    guard: u64,
    /// Tickets handed out, and the next one to go through.
    issued: u64,
    next: u64,
    /// The coordinator's answer (0: approved), once it came.
    answer: Option<i16>,
}

/// The gates of one partition.
#[derive(Debug, Default)]
pub struct TxnGates {
    gates: HashMap<i64, Gate>,
    changed: Event,
}

/// A batch's place at a gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub producer_id: i64,
    pub number: u64,
}

impl TxnGates {
    /// A ticket behind `pid`'s open gate, if it has one: the batch waits its turn.
    pub fn queue(&mut self, pid: i64) -> Option<Ticket> {
        let gate = self.gates.get_mut(&pid)?;
        let number = gate.issued;
        gate.issued += 1;
        Some(Ticket {
            producer_id: pid,
            number,
        })
    }

    /// Open `pid`'s gate for a batch that needs the coordinator: ticket 0.
    pub fn open(&mut self, pid: i64, guard: u64) -> Ticket {
        let previous = self.gates.insert(
            pid,
            Gate {
                guard,
                issued: 1,
                next: 0,
                answer: None,
            },
        );
        assert!(previous.is_none(), "producer {pid} already has a gate");
        Ticket {
            producer_id: pid,
            number: 0,
        }
    }

    /// The coordinator answered for `pid` (0: the partition is in the transaction).
    pub fn resolve(&mut self, pid: i64, answer: i16) {
        let gate = self
            .gates
            .get_mut(&pid)
            .expect("resolving a gate that is open");
        assert!(gate.answer.is_none(), "gate of {pid} resolved twice");
        gate.answer = Some(answer);
        self.changed.notify(usize::MAX);
    }

    /// If it is `ticket`'s turn: the coordinator's answer and the guard.
    pub fn turn(&self, ticket: Ticket) -> Option<(i16, u64)> {
        let gate = self.gates.get(&ticket.producer_id)?;
        match gate.answer {
            Some(answer) if gate.next == ticket.number => Some((answer, gate.guard)),
            _ => None,
        }
    }

    /// A listener to wait on before checking [`TxnGates::turn`] again.
    pub fn listen(&self) -> event_listener::EventListener {
        self.changed.listen()
    }

    /// `ticket` went through (appended, or refused): the next one may go; the gate
    /// closes after its last ticket.
    pub fn pass(&mut self, ticket: Ticket) {
        let gate = self
            .gates
            .get_mut(&ticket.producer_id)
            .expect("passing a gate that is open");
        assert_eq!(gate.next, ticket.number, "tickets pass in order");
        gate.next += 1;
        if gate.next == gate.issued {
            self.gates.remove(&ticket.producer_id);
        }
        self.changed.notify(usize::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_go_in_order_once_answered() {
        let mut g = TxnGates::default();
        assert_eq!(g.queue(7), None);
        let first = g.open(7, 42);
        let second = g.queue(7).unwrap();
        assert_eq!(g.turn(first), None, "no answer yet");
        g.resolve(7, 0);
        assert_eq!(g.turn(first), Some((0, 42)));
        assert_eq!(g.turn(second), None, "not its turn");
        g.pass(first);
        assert_eq!(g.turn(second), Some((0, 42)));
        g.pass(second);
        // Closed: the next batch of the producer does not queue.
        assert_eq!(g.queue(7), None);
    }

    #[test]
    fn a_refusal_reaches_every_ticket() {
        let mut g = TxnGates::default();
        let first = g.open(7, 1);
        let second = g.queue(7).unwrap();
        g.resolve(7, 48);
        assert_eq!(g.turn(first), Some((48, 1)));
        g.pass(first);
        assert_eq!(g.turn(second), Some((48, 1)));
    }
}
