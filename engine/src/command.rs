//! Commands (what clients ask), outcomes (what they get back), the stateless
//! checks done before a command is sequenced, and content fingerprints.

use crate::account::{AccountState, BalancePolicy, NewAccount};
use crate::amount::Amount;
use crate::chain::{Chain, Operation};
use crate::currency::{Currency, CurrencyCode};
use crate::entry::{Condition, Entry, Side};
use crate::error::{Error, ErrorCode};
use crate::id::AccountId;
use crate::lien::{CaptureLien, CreateLien, ReleaseLien};
use crate::limits::*;
use smallvec::SmallVec;
use xxhash_rust::xxh3::{xxh3_64, Xxh3Default};

/// A command to the ledger. Time is not part of it: the sequencer stamps each
/// command with a global sequence number and a strictly increasing timestamp.
// `Op` is the hot variant (a transfer): boxing it would cost an allocation per
// command, so the enum stays as large as an inline two-line entry.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Command {
    CreateCurrency(Currency),
    CreateAccount(NewAccount),
    SetAccountState {
        account: AccountId,
        state: AccountState,
    },
    /// One entry or lien operation.
    Op(Operation),
    /// Several operations, all or nothing.
    Chain(Chain),
    /// Advances command time (expires liens whose deadline has passed).
    Tick,
    /// A chained transaction event's lifecycle (see [`crate::event`]).
    Event(crate::event::EventCommand),
}

impl From<Entry> for Command {
    /// The general entry as given (see [`Operation::entry`] for the
    /// fixed-form transfer when it has a transfer's shape).
    fn from(e: Entry) -> Command {
        Command::Op(Operation::Entry(Box::new(e)))
    }
}
impl From<crate::transfer::Transfer> for Command {
    fn from(t: crate::transfer::Transfer) -> Command {
        Command::Op(Operation::Transfer(t))
    }
}
impl From<CreateLien> for Command {
    fn from(c: CreateLien) -> Command {
        Command::Op(Operation::CreateLien(c))
    }
}
impl From<CaptureLien> for Command {
    fn from(c: CaptureLien) -> Command {
        Command::Op(Operation::CaptureLien(Box::new(c)))
    }
}
impl From<ReleaseLien> for Command {
    fn from(r: ReleaseLien) -> Command {
        Command::Op(Operation::ReleaseLien(r))
    }
}
impl From<Chain> for Command {
    fn from(c: Chain) -> Command {
        Command::Chain(c)
    }
}

/// Namespaces of idempotency keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdSpace {
    /// Entries, including the entries that lien captures create.
    Entry,
    Lien,
    Chain,
}

impl IdSpace {
    pub const ALL: [IdSpace; 3] = [IdSpace::Entry, IdSpace::Lien, IdSpace::Chain];

    /// Its number in snapshots and in the cold tier.
    pub fn tag(self) -> u8 {
        match self {
            IdSpace::Entry => 0,
            IdSpace::Lien => 1,
            IdSpace::Chain => 2,
        }
    }

    pub fn from_tag(tag: u8) -> Option<IdSpace> {
        IdSpace::ALL.get(tag as usize).copied()
    }
}

/// What became of a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Applied now, at this position of the global order.
    Committed { seq: u64, timestamp: u64 },
    /// The id was seen before with the same content: this is its original
    /// outcome (`code` is `None` when it committed). Nothing was applied.
    Duplicate { seq: u64, code: Option<ErrorCode> },
    /// Refused. `seq` is the position it was decided at, or `None` when it was
    /// refused before sequencing (malformed, or the runtime was busy).
    Rejected { seq: Option<u64>, error: Error },
}

impl Outcome {
    pub fn rejected_early(error: Error) -> Outcome {
        Outcome::Rejected { seq: None, error }
    }

    /// True when the command's effects are in the ledger (now or before).
    pub fn is_ok(&self) -> bool {
        matches!(
            self,
            Outcome::Committed { .. } | Outcome::Duplicate { code: None, .. }
        )
    }

    /// The error code, if the command (or its original) was refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Outcome::Committed { .. } => None,
            Outcome::Duplicate { code, .. } => *code,
            Outcome::Rejected { error, .. } => Some(error.code),
        }
    }

    /// The sequence number at which the command (or its original) was decided.
    pub fn seq(&self) -> Option<u64> {
        match self {
            Outcome::Committed { seq, .. } | Outcome::Duplicate { seq, .. } => Some(*seq),
            Outcome::Rejected { seq, .. } => *seq,
        }
    }
}

impl Command {
    /// The operations a command consists of (empty for non-ledger commands).
    pub fn ops(&self) -> &[Operation] {
        match self {
            Command::Op(op) => std::slice::from_ref(op),
            Command::Chain(c) => &c.ops,
            _ => &[],
        }
    }

    /// The command's own idempotency key.
    pub fn top_id(&self) -> Option<(IdSpace, u128)> {
        match self {
            Command::Op(op) => op.id(),
            Command::Chain(c) => Some((IdSpace::Chain, c.id)),
            _ => None,
        }
    }

    /// Every id whose record evaluating this command may read: its own id,
    /// its operations' ids (a chain's must be new) and the entries it
    /// corrects. The prefetch stage looks these up in the cold tier.
    pub fn cold_keys(&self, mut f: impl FnMut(IdSpace, u128)) {
        if let Some((space, id)) = self.top_id() {
            f(space, id);
        }
        for op in self.ops() {
            if let Command::Chain(_) = self {
                if let Some((space, id)) = op.id() {
                    f(space, id);
                }
            }
            if let Operation::Entry(e) = op {
                if let Some(c) = e.corrects {
                    f(IdSpace::Entry, c);
                }
            }
        }
    }

    /// Checks everything that does not depend on ledger state. A command that
    /// fails here is never sequenced or logged and leaves no trace.
    pub fn validate(&self) -> Result<(), Error> {
        // The hot case, the same checks inlined: a transfer is far below the
        // size bound (what `validate_size` would find).
        if let Command::Op(Operation::Transfer(t)) = self {
            return validate_transfer(t);
        }
        self.validate_fields()?;
        self.validate_size()
    }

    /// What a client may submit: [`Command::validate`], and no id in the
    /// event driver's namespace (`reserved_id`, see [`crate::event::ids`]).
    pub fn validate_client(&self) -> Result<(), Error> {
        if let Some(id) = crate::event::first_reserved_id(self) {
            return Err(Error::new(ErrorCode::ReservedId)
                .with_subject(id)
                .with_text(format!(
                    "{} is in the range reserved for the event driver's own ids",
                    crate::id::format_id(id)
                )));
        }
        self.validate()
    }

    /// `command_too_large` unless the command's encoded size (its log record
    /// body) is at most [`MAX_COMMAND_BYTES`]. A single operation of at most
    /// `SMALL_COMMAND_LINES` lines is far below the limit (a test checks the
    /// largest such command), so the hot path never encodes twice.
    pub fn validate_size(&self) -> Result<(), Error> {
        if let Command::Op(op) = self {
            if op_lines(op) <= SMALL_COMMAND_LINES {
                return Ok(());
            }
        }
        if matches!(
            self,
            Command::Tick
                | Command::CreateCurrency(_)
                | Command::CreateAccount(_)
                | Command::SetAccountState { .. }
        ) {
            return Ok(());
        }
        let len = self.encoded_len()?;
        if len > MAX_COMMAND_BYTES {
            return Err(Error::new(ErrorCode::CommandTooLarge).with_text(format!(
                "the command encodes to {len} bytes; the limit is {MAX_COMMAND_BYTES}"
            )));
        }
        Ok(())
    }

    /// An upper bound of [`Command::encoded_len`], cheap for single
    /// operations of a few lines (what clients batch by the thousand): exact
    /// for everything else.
    pub fn encoded_len_bound(&self) -> Result<usize, Error> {
        if let Command::Op(op) = self {
            let lines = op_lines(op);
            if lines <= SMALL_COMMAND_LINES {
                let text = match op {
                    Operation::Entry(e) => e.reference.as_ref().map_or(0, |r| r.len()),
                    Operation::CaptureLien(c) => c.reference.as_ref().map_or(0, |r| r.len()),
                    _ => 0,
                };
                return Ok(SMALL_COMMAND_BASE_BYTES + SMALL_COMMAND_LINE_BYTES * lines + text);
            }
        }
        self.encoded_len()
    }

    /// The exact size of the command's canonical encoding ([`crate::codec`]:
    /// what the wire carries and the log stores).
    pub fn encoded_len(&self) -> Result<usize, Error> {
        Ok(crate::codec::encode_command(self).len())
    }

    /// The checks a command read back from the log must pass: every check of
    /// [`Command::validate`] but the size bound, which the log's own record
    /// limit enforces (logs written before commands were bounded by bytes
    /// hold records up to 4 MiB, and replay them).
    pub fn validate_logged(&self) -> Result<(), Error> {
        self.validate_fields()
    }

    fn validate_fields(&self) -> Result<(), Error> {
        match self {
            Command::CreateCurrency(c) => c.validate(),
            Command::CreateAccount(a) => {
                nonzero(a.id)?;
                if !a.currency.is_valid() {
                    return Err(Error::new(ErrorCode::InvalidCurrency));
                }
                if let BalancePolicy::OverdraftLimit(l) = a.policy {
                    if l > MAX_AMOUNT {
                        return Err(Error::new(ErrorCode::InvalidAmount)
                            .with_text("overdraft limit too large"));
                    }
                }
                Ok(())
            }
            Command::SetAccountState { account, .. } => nonzero(*account),
            Command::Op(op) => validate_op(op),
            Command::Chain(c) => {
                nonzero(c.id)?;
                if c.ops.is_empty() {
                    return Err(Error::new(ErrorCode::EmptyChain));
                }
                if c.ops.len() > MAX_CHAIN_OPERATIONS {
                    return Err(Error::new(ErrorCode::TooManyOperations));
                }
                for (i, op) in c.ops.iter().enumerate() {
                    validate_op(op).map_err(|e| e.with_op(i))?;
                }
                Ok(())
            }
            Command::Tick => Ok(()),
            Command::Event(e) => e.validate(),
        }
    }

    /// A 64-bit digest of the command's content (stable across builds).
    pub fn fingerprint(&self) -> u64 {
        let mut f = Fingerprint::new();
        match self {
            Command::Op(op) => return op_fingerprint(op),
            Command::Chain(c) => {
                f.tag(10).u128(c.id).u64(c.ops.len() as u64);
                for op in &c.ops {
                    f.u64(op_fingerprint(op));
                }
            }
            Command::CreateCurrency(c) => {
                f.tag(11).bytes(&c.code.to_bytes()).u64(c.scale.into());
            }
            Command::CreateAccount(a) => {
                f.tag(12)
                    .u128(a.id)
                    .bytes(&a.currency.to_bytes())
                    .u128(a.user_data);
                policy(&mut f, a.policy);
            }
            Command::SetAccountState { account, state } => {
                f.tag(13).u128(*account).u64(*state as u64);
            }
            Command::Tick => {
                f.tag(14);
            }
            Command::Event(e) => {
                let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(e)
                    .map(|b| xxh3_64(&b))
                    .unwrap_or(0);
                f.tag(15).u128(e.event()).u64(bytes);
            }
        }
        f.finish()
    }
}

/// Lines of one operation below which its size is not computed (see
/// [`Command::validate_size`]).
const SMALL_COMMAND_LINES: usize = 16;
/// [`Command::encoded_len_bound`] of a small operation: this plus this per
/// line plus its reference text (a test checks it bounds every shape).
const SMALL_COMMAND_BASE_BYTES: usize = 512;
const SMALL_COMMAND_LINE_BYTES: usize = 128;

fn op_lines(op: &Operation) -> usize {
    match op {
        Operation::Entry(e) => e.lines.len(),
        Operation::Transfer(_) => 2,
        Operation::CaptureLien(c) => c.credits.len() + 1,
        Operation::CreateLien(_) | Operation::ReleaseLien(_) => 1,
    }
}

fn nonzero(id: u128) -> Result<(), Error> {
    if id == 0 {
        Err(Error::new(ErrorCode::InvalidId).with_text("id 0 is reserved"))
    } else {
        Ok(())
    }
}

fn amount(a: Amount) -> Result<(), Error> {
    if a == 0 || a > MAX_AMOUNT {
        Err(Error::new(ErrorCode::InvalidAmount).with_text(format!("{a} minor units")))
    } else {
        Ok(())
    }
}

fn reference(r: &Option<Box<str>>) -> Result<(), Error> {
    match r {
        Some(r) if r.len() > MAX_REFERENCE_BYTES => Err(Error::new(ErrorCode::ReferenceTooLong)),
        _ => Ok(()),
    }
}

fn currency(c: &CurrencyCode) -> Result<(), Error> {
    if c.is_valid() {
        Ok(())
    } else {
        Err(Error::new(ErrorCode::InvalidCurrency))
    }
}

fn validate_op(op: &Operation) -> Result<(), Error> {
    match op {
        Operation::Entry(e) => validate_entry(e),
        Operation::Transfer(t) => validate_transfer(t),
        Operation::CreateLien(c) => {
            nonzero(c.id)?;
            nonzero(c.account)?;
            currency(&c.currency)?;
            amount(c.amount)?;
            match c.expires_in_ns {
                Some(0) => Err(Error::new(ErrorCode::InvalidExpiry)),
                Some(t) if t > MAX_LIEN_LIFETIME_NS => Err(Error::new(ErrorCode::InvalidExpiry)),
                _ => Ok(()),
            }
        }
        Operation::CaptureLien(c) => {
            nonzero(c.lien)?;
            nonzero(c.account)?;
            nonzero(c.entry_id)?;
            currency(&c.currency)?;
            reference(&c.reference)?;
            if c.credits.is_empty() {
                return Err(
                    Error::new(ErrorCode::TooFewLines).with_text("a capture needs a destination")
                );
            }
            if c.credits.len() + 1 > MAX_LINES_PER_ENTRY {
                return Err(Error::new(ErrorCode::TooManyLines));
            }
            for (i, &(account, a)) in c.credits.iter().enumerate() {
                nonzero(account).map_err(|e| e.with_line(i + 1))?;
                amount(a).map_err(|e| e.with_line(i + 1))?;
            }
            match c.total() {
                Some(t) if t <= MAX_AMOUNT => Ok(()),
                _ => Err(Error::new(ErrorCode::InvalidAmount).with_text("capture total too large")),
            }
        }
        Operation::ReleaseLien(r) => nonzero(r.lien).and(nonzero(r.account)),
    }
}

/// [`validate_entry`] of the transfer's entry, the same checks in the same
/// order (a test compares them), on its fields in place.
#[inline]
fn validate_transfer(t: &crate::transfer::Transfer) -> Result<(), Error> {
    nonzero(t.id)?;
    for (i, account) in t.accounts().into_iter().enumerate() {
        nonzero(account).map_err(|e| e.with_line(i))?;
        amount(t.amount).map_err(|e| e.with_line(i))?;
    }
    currency(&t.currency)
}

fn validate_entry(e: &Entry) -> Result<(), Error> {
    nonzero(e.id)?;
    if let Some(c) = e.corrects {
        nonzero(c)?;
    }
    reference(&e.reference)?;
    if e.lines.len() < 2 {
        return Err(Error::new(ErrorCode::TooFewLines));
    }
    if e.lines.len() > MAX_LINES_PER_ENTRY {
        return Err(Error::new(ErrorCode::TooManyLines));
    }
    if let [a, b] = &e.lines[..] {
        // The common transfer: one debit, one credit, same currency and amount.
        if a.side != b.side && a.currency == b.currency && a.amount == b.amount {
            for (i, l) in [a, b].into_iter().enumerate() {
                nonzero(l.account).map_err(|e| e.with_line(i))?;
                amount(l.amount).map_err(|e| e.with_line(i))?;
            }
            return currency(&a.currency);
        }
    }
    // Debits minus credits per currency; few currencies per entry, so a small vec.
    let mut sums: SmallVec<[(CurrencyCode, u128, u128); 2]> = SmallVec::new();
    for (i, l) in e.lines.iter().enumerate() {
        nonzero(l.account).map_err(|e| e.with_line(i))?;
        currency(&l.currency).map_err(|e| e.with_line(i))?;
        amount(l.amount).map_err(|e| e.with_line(i))?;
        let slot = match sums.iter().position(|s| s.0 == l.currency) {
            Some(p) => p,
            None => {
                sums.push((l.currency, 0, 0));
                sums.len() - 1
            }
        };
        let s = &mut sums[slot];
        let total = if l.side == Side::Debit {
            &mut s.1
        } else {
            &mut s.2
        };
        *total = total
            .checked_add(l.amount)
            .filter(|t| *t <= MAX_AMOUNT)
            .ok_or_else(|| {
                Error::new(ErrorCode::InvalidAmount)
                    .with_line(i)
                    .with_text("entry total too large")
            })?;
    }
    for (code, debits, credits) in sums {
        if debits != credits {
            return Err(Error::new(ErrorCode::UnbalancedEntry).with_text(format!(
                "{code}: debits {debits} != credits {credits} (minor units)"
            )));
        }
    }
    Ok(())
}

/// The fingerprint of a single operation (also used for ids inside chains).
pub fn op_fingerprint(op: &Operation) -> u64 {
    let mut f = Fingerprint::new();
    match op {
        Operation::Entry(e) => {
            f.tag(1)
                .u128(e.id)
                .u128(e.user_data)
                .u128(e.corrects.unwrap_or(0))
                .u64(e.allow_repeat_correction as u64)
                .str(e.reference.as_deref());
            f.u64(e.lines.len() as u64);
            for l in &e.lines {
                f.u128(l.account)
                    .u64(l.side as u64)
                    .u128(l.amount)
                    .bytes(&l.currency.to_bytes());
                f.u64(l.expected_version.map_or(0, |v| v.wrapping_add(1)));
                match l.condition {
                    None => f.tag(0),
                    Some(Condition::AvailableAtLeast(v)) => f.tag(1).u128(v as u128),
                    Some(Condition::BalanceAtMost(v)) => f.tag(2).u128(v as u128),
                };
            }
        }
        Operation::Transfer(t) => {
            // Exactly the bytes of the entry it means (see `crate::transfer`).
            f.tag(1)
                .u128(t.id)
                .u128(t.user_data)
                .u128(0)
                .u64(0)
                .str(None);
            f.u64(2);
            for (account, side) in [
                (t.debit_account, Side::Debit),
                (t.credit_account, Side::Credit),
            ] {
                f.u128(account)
                    .u64(side as u64)
                    .u128(t.amount)
                    .bytes(&t.currency.to_bytes());
                f.u64(0);
                f.tag(0);
            }
        }
        Operation::CreateLien(c) => {
            f.tag(2)
                .u128(c.id)
                .u128(c.account)
                .bytes(&c.currency.to_bytes())
                .u128(c.amount);
            f.u64(c.expires_in_ns.map_or(0, |t| t.wrapping_add(1)))
                .u128(c.owner)
                .u128(c.user_data);
        }
        Operation::CaptureLien(c) => {
            f.tag(3)
                .u128(c.lien)
                .u128(c.account)
                .u128(c.entry_id)
                .bytes(&c.currency.to_bytes())
                .str(c.reference.as_deref());
            f.u64(c.credits.len() as u64);
            for &(a, amt) in &c.credits {
                f.u128(a).u128(amt);
            }
        }
        Operation::ReleaseLien(r) => {
            f.tag(4).u128(r.lien).u128(r.account);
        }
    }
    f.finish()
}

fn policy(f: &mut Fingerprint, p: BalancePolicy) {
    match p {
        BalancePolicy::NoOverdraft => f.tag(0),
        BalancePolicy::OverdraftLimit(l) => f.tag(1).u128(l),
        BalancePolicy::Unrestricted => f.tag(2),
    };
}

/// Canonical little-endian encoding hashed with XXH3-64: independent of
/// `Hash` impls, so fingerprints stay the same across compiler versions.
/// Bytes collect in a stack buffer; only commands larger than it (many lines)
/// stream through the incremental hasher. Both paths hash the same bytes.
pub(crate) struct Fingerprint {
    buf: [u8; FP_BUF],
    len: usize,
    spill: Option<Box<Xxh3Default>>,
}

const FP_BUF: usize = 256;

impl Fingerprint {
    pub(crate) fn new() -> Fingerprint {
        Fingerprint {
            buf: [0; FP_BUF],
            len: 0,
            spill: None,
        }
    }
    #[inline]
    pub(crate) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        if self.len + b.len() <= FP_BUF {
            self.buf[self.len..self.len + b.len()].copy_from_slice(b);
            self.len += b.len();
        } else {
            let h = self
                .spill
                .get_or_insert_with(|| Box::new(Xxh3Default::new()));
            h.update(&self.buf[..self.len]);
            h.update(b);
            self.len = 0;
        }
        self
    }
    pub(crate) fn tag(&mut self, t: u8) -> &mut Self {
        self.bytes(&[t])
    }
    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    pub(crate) fn u128(&mut self, v: u128) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    pub(crate) fn str(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            None => self.u64(0),
            Some(s) => self.u64(s.len() as u64 + 1).bytes(s.as_bytes()),
        }
    }
    pub(crate) fn finish(&mut self) -> u64 {
        match &mut self.spill {
            None => xxh3_64(&self.buf[..self.len]),
            Some(h) => {
                h.update(&self.buf[..self.len]);
                h.digest()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transfer is validated in place, and must be refused exactly as the
    /// entry it means (same code, same line), and have its fingerprint.
    #[test]
    fn a_transfer_validates_and_fingerprints_as_its_entry() {
        use crate::transfer::Transfer;
        let codes = [usd(), CurrencyCode::default()];
        let values = [0, 1, 7, MAX_AMOUNT, MAX_AMOUNT + 1];
        let mut seen = 0;
        let derived = crate::event::ids::DERIVED_PREFIX | 5;
        for id in [0, 1, derived] {
            for (debit, credit) in [(0, 2), (1, 0), (1, 2), (0, 0)] {
                for amount in values {
                    for currency in codes {
                        let t =
                            Transfer::new(id, debit, credit, amount, currency).with_user_data(3);
                        let fixed = Command::Op(Operation::Transfer(t));
                        let general = Command::from(t.to_entry());
                        assert_eq!(fixed.validate(), general.validate(), "{t:?}");
                        let client = fixed.validate_client();
                        assert_eq!(client, general.validate_client(), "{t:?}");
                        assert_eq!(fixed.fingerprint(), general.fingerprint(), "{t:?}");
                        seen += usize::from(fixed.validate().is_err());
                    }
                }
            }
        }
        assert!(seen > 0);
        assert!(
            std::mem::size_of::<Command>() <= 128,
            "{}",
            std::mem::size_of::<Command>()
        );
    }
    use crate::entry::Line;

    fn usd() -> CurrencyCode {
        CurrencyCode::parse("USD").unwrap()
    }

    #[test]
    fn stateless_errors() {
        let ok = Entry::transfer(1, 10, 11, 5, usd());
        assert!(Command::from(ok.clone()).validate().is_ok());
        let code = |c: Command| c.validate().unwrap_err().code;
        assert_eq!(
            code(Entry::new(1, [Line::debit(10, 5, usd())]).into()),
            ErrorCode::TooFewLines
        );
        assert_eq!(
            code(Entry::new(1, [Line::debit(10, 5, usd()), Line::credit(11, 4, usd())]).into()),
            ErrorCode::UnbalancedEntry
        );
        let eur = CurrencyCode::parse("EUR").unwrap();
        assert_eq!(
            code(Entry::new(1, [Line::debit(10, 5, usd()), Line::credit(11, 5, eur)]).into()),
            ErrorCode::UnbalancedEntry
        );
        assert_eq!(
            code(Entry::transfer(1, 10, 11, 0, usd()).into()),
            ErrorCode::InvalidAmount
        );
        assert_eq!(
            code(Entry::transfer(0, 10, 11, 1, usd()).into()),
            ErrorCode::InvalidId
        );
        assert_eq!(
            code(Entry::transfer(1, 0, 11, 1, usd()).into()),
            ErrorCode::InvalidId
        );
        assert_eq!(
            code(Entry::transfer(1, 10, 11, MAX_AMOUNT + 1, usd()).into()),
            ErrorCode::InvalidAmount
        );
        assert_eq!(
            code(Entry::transfer(1, 10, 11, 1, CurrencyCode::default()).into()),
            ErrorCode::InvalidCurrency
        );
        assert_eq!(
            code(
                ok.clone()
                    .with_reference("x".repeat(MAX_REFERENCE_BYTES + 1))
                    .into()
            ),
            ErrorCode::ReferenceTooLong
        );
        let many = Entry::new(
            1,
            (0..=MAX_LINES_PER_ENTRY).map(|i| Line::debit(i as u128 + 1, 1, usd())),
        );
        assert_eq!(code(many.into()), ErrorCode::TooManyLines);
        assert_eq!(
            code(Chain { id: 1, ops: vec![] }.into()),
            ErrorCode::EmptyChain
        );
        let big = Chain {
            id: 1,
            ops: vec![Operation::Entry(Box::new(ok.clone())); MAX_CHAIN_OPERATIONS + 1],
        };
        assert_eq!(code(big.into()), ErrorCode::TooManyOperations);
        let bad_in_chain = Chain {
            id: 1,
            ops: vec![
                Operation::Entry(Box::new(ok)),
                Operation::ReleaseLien(ReleaseLien {
                    lien: 0,
                    account: 1,
                }),
            ],
        };
        let e = Command::from(bad_in_chain).validate().unwrap_err();
        assert_eq!((e.code, e.op), (ErrorCode::InvalidId, Some(1)));
        let lien = |expires_in_ns| CreateLien {
            id: 1,
            account: 2,
            currency: usd(),
            amount: 3,
            expires_in_ns,
            owner: 0,
            user_data: 0,
        };
        assert_eq!(code(lien(Some(0)).into()), ErrorCode::InvalidExpiry);
        assert_eq!(
            code(lien(Some(MAX_LIEN_LIFETIME_NS + 1)).into()),
            ErrorCode::InvalidExpiry
        );
        let cap = CaptureLien {
            lien: 1,
            account: 3,
            entry_id: 2,
            currency: usd(),
            credits: SmallVec::new(),
            reference: None,
        };
        assert_eq!(code(cap.into()), ErrorCode::TooFewLines);
        assert_eq!(
            code(Command::CreateCurrency(Currency {
                code: usd(),
                scale: 19
            })),
            ErrorCode::InvalidCurrency
        );
        let acct = NewAccount {
            id: 1,
            currency: usd(),
            policy: BalancePolicy::OverdraftLimit(MAX_AMOUNT + 1),
            user_data: 0,
        };
        assert_eq!(code(Command::CreateAccount(acct)), ErrorCode::InvalidAmount);
    }

    #[test]
    fn fingerprint_spill_hashes_the_same_bytes() {
        let mut small = Fingerprint::new();
        let mut big = Fingerprint::new();
        let mut all = Vec::new();
        for i in 0..100u128 {
            big.u128(i);
            all.extend_from_slice(&i.to_le_bytes());
        }
        small.bytes(&all[..10]);
        assert_eq!(small.finish(), xxh3_64(&all[..10]));
        assert_eq!(big.finish(), xxh3_64(&all));
        // An entry with many lines spills and stays deterministic.
        let e = Entry::new(1, (0..100).map(|i| Line::debit(i + 1, 1, usd())));
        assert_eq!(
            Command::from(e.clone()).fingerprint(),
            Command::from(e).fingerprint()
        );
    }

    #[test]
    fn fingerprints_see_every_field() {
        let base = Entry::transfer(1, 10, 11, 5, usd());
        let fp = |e: &Entry| Command::from(e.clone()).fingerprint();
        let mut variants = vec![base.clone().with_reference("r"), base.clone().correcting(9)];
        let mut e = base.clone();
        e.lines[0].expected_version = Some(0);
        variants.push(e);
        let mut e = base.clone();
        e.lines[1].amount = 6;
        e.lines[0].amount = 6;
        variants.push(e);
        let mut e = base.clone();
        e.user_data = 1;
        variants.push(e);
        let mut e = base.clone();
        e.lines[1].condition = Some(Condition::AvailableAtLeast(0));
        variants.push(e);
        for v in &variants {
            assert_ne!(fp(&base), fp(v), "{v:?}");
        }
        assert_eq!(fp(&base), fp(&base.clone()));
    }

    fn capture(lien: u128, credits: usize) -> Operation {
        Operation::CaptureLien(Box::new(CaptureLien {
            lien,
            account: 7,
            entry_id: lien.wrapping_add(1_000_000),
            currency: usd(),
            credits: (0..credits).map(|i| (i as u128 + 100, 1)).collect(),
            reference: Some("r".repeat(MAX_REFERENCE_BYTES).into()),
        }))
    }

    #[test]
    fn oversized_commands_are_refused_before_sequencing() {
        // The command that once aborted the log writer: 1,024 captures with
        // 127 credits and a full reference each (about 4.5 MB encoded).
        let attack = Command::Chain(Chain {
            id: 1,
            ops: (0..MAX_CHAIN_OPERATIONS as u128)
                .map(|i| capture(i + 10, MAX_LINES_PER_ENTRY - 1))
                .collect(),
        });
        let e = attack.validate().unwrap_err();
        assert_eq!(e.code, ErrorCode::CommandTooLarge);
        assert!(attack.encoded_len().unwrap() > MAX_COMMAND_BYTES);
        // The largest single entry is far inside the limit.
        let big = Entry::new(
            2,
            (0..MAX_LINES_PER_ENTRY / 2).flat_map(|i| {
                [
                    Line::debit(i as u128 + 1, 1, usd()),
                    Line::credit(i as u128 + 1_000, 1, usd()),
                ]
            }),
        )
        .with_reference("x".repeat(MAX_REFERENCE_BYTES));
        let big = Command::from(big);
        assert!(big.validate().is_ok());
        assert!(big.encoded_len().unwrap() < MAX_COMMAND_BYTES / 16);
    }

    #[test]
    fn small_operations_are_far_below_the_size_limit() {
        // validate_size skips encoding single operations of at most
        // SMALL_COMMAND_LINES lines: the largest of them must be tiny.
        let lines = SMALL_COMMAND_LINES;
        let e = Entry::new(
            3,
            (0..lines / 2).flat_map(|i| {
                [
                    Line::debit(i as u128 + 1, MAX_AMOUNT / 64, usd()),
                    Line::credit(i as u128 + 1_000, MAX_AMOUNT / 64, usd()),
                ]
            }),
        )
        .with_reference("x".repeat(MAX_REFERENCE_BYTES))
        .correcting(9);
        let c = Command::from(e);
        assert!(c.encoded_len().unwrap() < MAX_COMMAND_BYTES / 256);
        let c = Command::Op(capture(5, lines - 1));
        assert!(c.encoded_len().unwrap() < MAX_COMMAND_BYTES / 256);
    }

    #[test]
    fn the_size_bound_bounds_every_small_shape() {
        for lines in 2..=SMALL_COMMAND_LINES {
            for text in [0, 1, 17, MAX_REFERENCE_BYTES] {
                let mut e = Entry::new(
                    4,
                    (0..lines).map(|i| {
                        let mut l = Line::debit(u128::MAX - i as u128, MAX_AMOUNT, usd());
                        l.expected_version = Some(u64::MAX);
                        l.condition = Some(Condition::AvailableAtLeast(i128::MIN));
                        l
                    }),
                )
                .correcting(u128::MAX);
                if text > 0 {
                    e = e.with_reference("é".repeat(text / 2) + &"x".repeat(text % 2));
                }
                e.user_data = u128::MAX;
                let c = Command::from(e);
                let exact = c.encoded_len().unwrap();
                assert!(
                    c.encoded_len_bound().unwrap() >= exact,
                    "{lines} lines, {text}: {exact}"
                );
            }
            let c = Command::Op(capture(u128::MAX - 1, lines - 1));
            assert!(c.encoded_len_bound().unwrap() >= c.encoded_len().unwrap());
        }
        let c = Command::Op(Operation::CreateLien(CreateLien {
            id: u128::MAX,
            account: u128::MAX,
            currency: usd(),
            amount: MAX_AMOUNT,
            expires_in_ns: Some(1),
            owner: u128::MAX,
            user_data: u128::MAX,
        }));
        assert!(c.encoded_len_bound().unwrap() >= c.encoded_len().unwrap());
    }
}
