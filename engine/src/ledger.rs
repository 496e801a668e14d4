//! The whole ledger as one deterministic, single-threaded state machine: the
//! sequencer plus every shard, driven inline. The threaded runtime runs the
//! very same shard code on threads; this type is what replay, audit and
//! simulation use, and what the runtime is tested against.

use crate::command::{Command, IdSpace, Outcome};
use crate::currency::{Currency, CurrencyCode};
use crate::id::{shard_of, AccountId, LienId};
use crate::image::LedgerImage;
use crate::lien::Lien;
use crate::sequencer::{Route, Sequencer};
use crate::shard::{ShardState, Txn, Verdict};
use crate::view::{AccountView, IdStatus};

pub struct Ledger {
    sequencer: Sequencer,
    shards: Vec<ShardState>,
    scratch: Txn,
}

impl Ledger {
    /// A ledger partitioned like a runtime with `shards` shards (1..=64).
    pub fn new(shards: usize) -> Ledger {
        Ledger {
            sequencer: Sequencer::new(shards),
            shards: (0..shards).map(|i| ShardState::new(i, shards)).collect(),
            scratch: Txn::default(),
        }
    }

    /// Pre-sizes every shard for `accounts` accounts and `entry_ids` entry
    /// ids in total (static allocation: no rehash pauses, denser tables).
    pub fn reserve(&mut self, accounts: usize, entry_ids: usize) {
        let n = self.shards.len();
        for s in &mut self.shards {
            s.reserve(accounts / n + 1, entry_ids / n + 1);
        }
    }

    /// Hands the state over (to a runtime, after recovery).
    pub fn into_parts(self) -> (Sequencer, Vec<ShardState>) {
        (self.sequencer, self.shards)
    }

    /// Rebuilds a ledger from parts (a loaded snapshot).
    pub fn from_parts(sequencer: Sequencer, shards: Vec<ShardState>) -> Ledger {
        assert_eq!(sequencer.shards(), shards.len());
        Ledger {
            sequencer,
            shards,
            scratch: Txn::default(),
        }
    }

    pub fn sequencer(&self) -> &Sequencer {
        &self.sequencer
    }

    pub fn shards(&self) -> &[ShardState] {
        &self.shards
    }

    /// Validates, sequences at `now` (nanoseconds), and applies a command.
    pub fn execute(&mut self, cmd: &Command, now: u64) -> Outcome {
        if let Err(e) = cmd.validate() {
            return Outcome::rejected_early(e);
        }
        let route = self.sequencer.sequence(cmd, now);
        self.apply(cmd, &route)
    }

    /// Applies a command at a position read back from the log. The caller
    /// checks continuity (`seq` is `next_seq`, the timestamp increases) and
    /// that the command is valid.
    /// Keeps about two windows of id records per namespace and shard in
    /// memory, the rest in a cold tier (see [`crate::idindex::IdIndex`]).
    /// Each command must then come with the cold tier's answers
    /// ([`Ledger::replay_cold`]).
    pub fn set_id_window(&mut self, window: usize) {
        for s in &mut self.shards {
            s.set_id_window(window);
        }
    }

    /// [`Ledger::replay`] with the cold tier's answers for this command.
    pub fn replay_cold(
        &mut self,
        cmd: &Command,
        seq: u64,
        timestamp: u64,
        cold: &std::sync::Arc<crate::idindex::ColdAnswers>,
    ) -> Outcome {
        for s in &mut self.shards {
            s.begin_batch(cold);
        }
        self.replay(cmd, seq, timestamp)
    }

    /// The id records made since the last call (with a window set).
    pub fn take_id_records(&mut self) -> Vec<(u8, u128, crate::idindex::IdRecord)> {
        let mut all = Vec::new();
        for s in &mut self.shards {
            all.extend(s.take_id_records());
        }
        all
    }

    /// The id records in memory decided after `seq`.
    pub fn id_records_after(&self, seq: u64) -> Vec<(u8, u128, crate::idindex::IdRecord)> {
        let mut all = Vec::new();
        for s in &self.shards {
            for space in IdSpace::ALL {
                all.extend(
                    s.id_index(space)
                        .iter()
                        .filter(|(_, r)| r.seq > seq)
                        .map(|(id, r)| (space.tag(), id, r)),
                );
            }
        }
        all
    }

    /// Id records decided at or before this sequence may have left memory
    /// for the cold tier (0: memory holds every one).
    pub fn released_through(&self) -> u64 {
        self.shards
            .iter()
            .flat_map(|s| IdSpace::ALL.map(|space| s.id_index(space).released_through()))
            .max()
            .unwrap_or(0)
    }

    /// After [`Ledger::import`] of a snapshot taken with a cold tier: the
    /// records at or before `seq` are there, not in the image.
    pub fn restore_released_through(&mut self, seq: u64) {
        for s in &mut self.shards {
            s.restore_released_through(seq);
        }
    }

    pub fn replay(&mut self, cmd: &Command, seq: u64, timestamp: u64) -> Outcome {
        let route = self.sequencer.sequence_at(cmd, seq, timestamp);
        self.apply(cmd, &route)
    }

    fn apply(&mut self, cmd: &Command, route: &Route) -> Outcome {
        match cmd {
            Command::CreateCurrency(_) | Command::Tick => {
                let mut outcome = None;
                for s in &mut self.shards {
                    let o = s.apply_everywhere(cmd, route);
                    debug_assert!(outcome.as_ref().is_none_or(|p| *p == o), "shards disagree");
                    outcome = Some(o);
                }
                outcome.unwrap_or_else(|| unreachable!("a ledger has at least one shard"))
            }
            _ if route.is_single() => {
                self.shards[route.leader()].apply_local(cmd, route, &mut self.scratch)
            }
            _ => {
                let n = self.shards.len();
                let participants = || (0..n).filter(|&i| route.involves(i));
                for i in participants() {
                    self.shards[i].sweep(route.timestamp);
                }
                let mut votes: Vec<(usize, Verdict, Txn)> = participants()
                    .map(|i| {
                        let mut txn = Txn::default();
                        let v = self.shards[i].evaluate(cmd, route, &mut txn);
                        (i, v, txn)
                    })
                    .collect();
                let verdict = votes
                    .iter()
                    .fold(Verdict::Commit, |acc, (_, v, _)| acc.combine(v.clone()));
                for (i, _, txn) in &mut votes {
                    self.shards[*i].finalize(cmd, route, &verdict, txn);
                }
                verdict.outcome(route)
            }
        }
    }

    fn shard_mut(&mut self, id: u128) -> &mut ShardState {
        let i = shard_of(id, self.shards.len());
        let now = self.sequencer.last_timestamp();
        let s = &mut self.shards[i];
        s.sweep(now);
        s
    }

    pub fn account(&mut self, id: AccountId) -> Option<AccountView> {
        self.shard_mut(id).account(id)
    }

    /// A lien by id: its id's home says which account, the account's shard
    /// holds it.
    pub fn lien(&mut self, id: LienId) -> Option<Lien> {
        let account = self.shard_mut(id).lien_account(id)?;
        self.shard_mut(account).lien(id)
    }

    pub fn status(&mut self, space: IdSpace, id: u128) -> IdStatus {
        self.shard_mut(id).id_status(space, id)
    }

    /// An event by id.
    pub fn event(&self, id: crate::event::EventId) -> Option<crate::event::Event> {
        self.shards[shard_of(id, self.shards.len())]
            .events()
            .get(id)
            .cloned()
    }

    /// Ids of running or compensating events, ascending.
    pub fn active_events(&self) -> Vec<crate::event::EventId> {
        let mut ids: Vec<_> = self
            .shards
            .iter()
            .flat_map(|s| s.events().active().map(|(id, _)| id))
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The sequencer's last timestamp (log time).
    pub fn now(&self) -> u64 {
        self.sequencer.last_timestamp()
    }

    pub fn currency(&self, code: CurrencyCode) -> Option<Currency> {
        self.shards[0].currency(code)
    }

    /// The whole state as a shard-count-independent image, sorted so equal
    /// states give equal images.
    pub fn export(&mut self) -> LedgerImage {
        let now = self.sequencer.last_timestamp();
        let mut image = LedgerImage {
            last_seq: self.sequencer.next_seq() - 1,
            last_timestamp: now,
            ..LedgerImage::default()
        };
        for (i, s) in self.shards.iter_mut().enumerate() {
            s.sweep(now);
            s.export_into(&mut image, i == 0);
        }
        image.accounts.sort_by_key(|(a, _)| a.id);
        image.liens.sort_by_key(|l| l.id);
        image.ids.sort_by_key(|r| (r.0, r.1));
        image.lien_accounts.sort_unstable();
        image.corrected.sort_unstable();
        image.events.sort_by_key(|e| e.id());
        image
    }

    /// Rebuilds a ledger with `shards` shards from an image.
    pub fn import(image: &LedgerImage, shards: usize) -> Result<Ledger, String> {
        if !(1..=crate::limits::MAX_SHARDS).contains(&shards) {
            return Err(format!("shards must be 1..={}", crate::limits::MAX_SHARDS));
        }
        let sequencer = Sequencer::resume(shards, image.last_seq, image.last_timestamp);
        let mut states: Vec<ShardState> = (0..shards).map(|i| ShardState::new(i, shards)).collect();
        for s in &mut states {
            for &(c, seq) in &image.currencies {
                c.validate().map_err(|e| e.to_string())?;
                s.restore_currency(c, seq);
            }
            s.restore_swept(image.last_timestamp);
        }
        for &(a, code) in &image.accounts {
            states[shard_of(a.id, shards)].restore_account(a, code)?;
        }
        for &l in &image.liens {
            states[shard_of(l.account, shards)].restore_lien(l);
        }
        for &(space, id, fp_code, seq) in &image.ids {
            let space =
                IdSpace::from_tag(space).ok_or_else(|| format!("unknown id space {space}"))?;
            let record = crate::idindex::IdRecord::try_from_raw(fp_code, seq)
                .map_err(|e| format!("id {}: {e}", crate::id::format_id(id)))?;
            states[shard_of(id, shards)].restore_id(space, id, record)?;
        }
        for &(lien, account) in &image.lien_accounts {
            states[shard_of(lien, shards)].restore_lien_account(lien, account);
        }
        for &entry in &image.corrected {
            states[shard_of(entry, shards)].restore_corrected(entry);
        }
        for e in &image.events {
            states[shard_of(e.id(), shards)].restore_event(e.clone());
        }
        Ok(Ledger::from_parts(sequencer, states))
    }

    /// A digest of the whole state (see `ShardState::digest`): equal for equal
    /// states whatever the shard count.
    pub fn digest(&mut self) -> u64 {
        let now = self.sequencer.last_timestamp();
        let mut sum = 0u64;
        for (i, s) in self.shards.iter_mut().enumerate() {
            s.sweep(now);
            sum = sum.wrapping_add(s.digest(i == 0));
        }
        sum
    }

    /// Sum of balances per currency over all shards (zero when conserved).
    pub fn balance_sums(&self) -> Vec<(CurrencyCode, i128)> {
        merge_sums(self.shards.iter().map(|s| s.balance_sums()))
    }
}

/// Adds per-shard currency sums together (currencies are in the same order on
/// every shard: they are created everywhere at once).
pub fn merge_sums(
    parts: impl IntoIterator<Item = Vec<(CurrencyCode, i128)>>,
) -> Vec<(CurrencyCode, i128)> {
    let mut total: Vec<(CurrencyCode, i128)> = Vec::new();
    for part in parts {
        if total.is_empty() {
            total = part;
            continue;
        }
        for (t, p) in total.iter_mut().zip(part) {
            debug_assert_eq!(t.0, p.0);
            t.1 += p.1;
        }
    }
    total
}
