//! The sequencer: stamps each command with its global sequence number and a
//! strictly increasing timestamp, and names the shards it involves. It is
//! deterministic: replaying the same commands rebuilds the same routes.

use crate::chain::Operation;
use crate::command::Command;
use crate::id::shard_of;

/// Where and when one command runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Bit i set: shard i takes part.
    pub mask: u64,
    pub seq: u64,
    pub timestamp: u64,
}

impl Route {
    #[inline]
    pub fn is_single(&self) -> bool {
        self.mask.count_ones() == 1
    }
    /// The participant that reports the outcome.
    #[inline]
    pub fn leader(&self) -> usize {
        self.mask.trailing_zeros() as usize
    }
    #[inline]
    pub fn involves(&self, shard: usize) -> bool {
        self.mask & (1u64 << shard) != 0
    }
}

/// Sequencer state: two counters. Routing is a pure function of the command
/// (ids hash to shards), never of earlier outcomes, so it cannot disagree with
/// what the shards decided.
pub struct Sequencer {
    shards: usize,
    next_seq: u64,
    last_timestamp: u64,
}

impl Sequencer {
    pub fn new(shards: usize) -> Sequencer {
        assert!(
            (1..=crate::limits::MAX_SHARDS).contains(&shards),
            "shard count out of range"
        );
        Sequencer {
            shards,
            next_seq: 1,
            last_timestamp: 0,
        }
    }

    pub fn shards(&self) -> usize {
        self.shards
    }
    /// The sequence number the next command will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
    /// The timestamp of the last sequenced command (0 before any).
    pub fn last_timestamp(&self) -> u64 {
        self.last_timestamp
    }

    fn all(&self) -> u64 {
        if self.shards == 64 {
            u64::MAX
        } else {
            (1u64 << self.shards) - 1
        }
    }

    /// Sequences a (valid) command at `now` (nanoseconds, any clock): the
    /// timestamp is `max(now, last + 1)`.
    pub fn sequence(&mut self, cmd: &Command, now: u64) -> Route {
        let timestamp = now.max(self.last_timestamp + 1);
        let seq = self.next_seq;
        self.sequence_at(cmd, seq, timestamp)
    }

    /// Continues the order after a snapshot taken at `last_seq`.
    pub fn resume(shards: usize, last_seq: u64, last_timestamp: u64) -> Sequencer {
        let mut s = Sequencer::new(shards);
        s.next_seq = last_seq + 1;
        s.last_timestamp = last_timestamp;
        s
    }

    /// Sequences a command at a position already decided (log replay).
    /// Panics if the position does not continue the order: replay checks
    /// continuity before calling this.
    pub fn sequence_at(&mut self, cmd: &Command, seq: u64, timestamp: u64) -> Route {
        assert_eq!(seq, self.next_seq, "sequence gap");
        assert!(timestamp > self.last_timestamp, "timestamps must increase");
        self.next_seq += 1;
        self.last_timestamp = timestamp;
        let n = self.shards;
        let bit = |id: u128| 1u64 << shard_of(id, n);
        let mut route = Route {
            mask: 0,
            seq,
            timestamp,
        };
        match cmd {
            Command::CreateCurrency(_) | Command::Tick => route.mask = self.all(),
            Command::CreateAccount(a) => route.mask = bit(a.id),
            Command::SetAccountState { account, .. } => route.mask = bit(*account),
            Command::Event(e) => route.mask = bit(e.event()),
            Command::Op(_) | Command::Chain(_) => {
                if let Command::Chain(c) = cmd {
                    route.mask |= bit(c.id);
                }
                for op in cmd.ops() {
                    match op {
                        Operation::Entry(e) => {
                            route.mask |= bit(e.id);
                            if let Some(c) = e.corrects {
                                route.mask |= bit(c);
                            }
                            for l in &e.lines {
                                route.mask |= bit(l.account);
                            }
                        }
                        Operation::Transfer(t) => {
                            route.mask |= bit(t.id) | bit(t.debit_account) | bit(t.credit_account)
                        }
                        Operation::CreateLien(c) => route.mask |= bit(c.id) | bit(c.account),
                        Operation::CaptureLien(c) => {
                            route.mask |= bit(c.account) | bit(c.entry_id);
                            for &(a, _) in &c.credits {
                                route.mask |= bit(a);
                            }
                        }
                        Operation::ReleaseLien(r) => route.mask |= bit(r.account),
                    }
                }
            }
        }
        debug_assert!(route.mask != 0 && route.mask & !self.all() == 0);
        route
    }
}
