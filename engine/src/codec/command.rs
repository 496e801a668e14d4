//! Commands on the wire (`PROTOCOL.md`, "Commands"): the fixed 96-byte
//! transfer, the general forms of every other kind, and the facts the event
//! driver logs. Decoding builds the engine's [`Command`] straight from the
//! bytes, checking every flag, enumeration and reserved byte; the engine's
//! own stateless checks (`Command::validate`) run after it.

use super::wire::{put_list, put_opt, DecodeError, Reader, Result, Writer};
use crate::account::{AccountState, BalancePolicy, NewAccount};
use crate::chain::{Chain, Operation};
use crate::currency::Currency;
use crate::entry::{Condition, Entry, Line, Side};
use crate::event::{AppliedStep, EventCommand, Fact, Failure, NewEvent, Step};
use crate::lien::{CaptureLien, CreateLien, ReleaseLien};
use crate::limits::MAX_CHAIN_OPERATIONS;
use crate::transfer::Transfer;
use crate::Command;
use smallvec::SmallVec;

pub const TAG_TRANSFER: u8 = 1;
pub const TAG_ENTRY: u8 = 2;
pub const TAG_CREATE_LIEN: u8 = 3;
pub const TAG_CAPTURE_LIEN: u8 = 4;
pub const TAG_RELEASE_LIEN: u8 = 5;
pub const TAG_CREATE_CURRENCY: u8 = 6;
pub const TAG_CREATE_ACCOUNT: u8 = 7;
pub const TAG_SET_ACCOUNT_STATE: u8 = 8;
pub const TAG_CHAIN: u8 = 9;
pub const TAG_EVENT: u8 = 10;
pub const TAG_TICK: u8 = 11;

/// Bytes of a transfer on the wire.
pub const TRANSFER_BYTES: usize = 96;
/// Bytes of an entry before its lines, and of each line.
pub const ENTRY_HEAD_BYTES: usize = 56;
pub const LINE_BYTES: usize = 72;
pub const CAPTURE_HEAD_BYTES: usize = 64;
/// The smallest command (tick, set state...), for count checks.
pub const MIN_COMMAND_BYTES: usize = 8;
/// The smallest operation (a lien release).
pub const MIN_OPERATION_BYTES: usize = 40;

fn len16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// Appends a command.
#[inline]
pub fn put_command(w: &mut Vec<u8>, c: &Command) {
    match c {
        Command::Op(op) => put_op(w, op),
        Command::CreateCurrency(cur) => {
            w.u8(TAG_CREATE_CURRENCY);
            w.u8(cur.scale);
            w.zeros(6);
            w.code(cur.code);
        }
        Command::CreateAccount(a) => {
            w.u8(TAG_CREATE_ACCOUNT);
            let (policy, limit) = policy_fields(a.policy);
            w.u8(policy);
            w.zeros(6);
            w.u128(a.id);
            w.u128(a.user_data);
            w.u128(limit);
            w.code(a.currency);
        }
        Command::SetAccountState { account, state } => {
            w.u8(TAG_SET_ACCOUNT_STATE);
            w.u8(*state as u8);
            w.zeros(6);
            w.u128(*account);
        }
        Command::Chain(chain) => {
            w.u8(TAG_CHAIN);
            w.zeros(3);
            w.u32(u32::try_from(chain.ops.len()).unwrap_or(u32::MAX));
            w.u128(chain.id);
            for op in &chain.ops {
                put_op(w, op);
            }
        }
        Command::Event(e) => put_event(w, e),
        Command::Tick => {
            w.u8(TAG_TICK);
            w.zeros(7);
        }
    }
}

pub fn policy_fields(p: BalancePolicy) -> (u8, u128) {
    match p {
        BalancePolicy::NoOverdraft => (0, 0),
        BalancePolicy::OverdraftLimit(l) => (1, l),
        BalancePolicy::Unrestricted => (2, 0),
    }
}

pub fn policy_from(r: &Reader, kind: u8, limit: u128) -> Result<BalancePolicy> {
    match (kind, limit) {
        (0, 0) => Ok(BalancePolicy::NoOverdraft),
        (1, l) => Ok(BalancePolicy::OverdraftLimit(l)),
        (2, 0) => Ok(BalancePolicy::Unrestricted),
        (0 | 2, _) => r.error("overdraft_limit must be zero unless the policy is 1"),
        (k, _) => r.error(format!("unknown balance policy {k}")),
    }
}

pub fn state_from(r: &Reader, s: u8) -> Result<AccountState> {
    match s {
        0 => Ok(AccountState::Active),
        1 => Ok(AccountState::Frozen),
        2 => Ok(AccountState::Closed),
        s => r.error(format!("unknown account state {s}")),
    }
}

/// Appends an operation (tags 1 to 5).
#[inline]
pub fn put_op(w: &mut Vec<u8>, op: &Operation) {
    match op {
        Operation::Transfer(t) => put_transfer(w, t),
        Operation::Entry(e) => put_entry(w, e),
        Operation::CreateLien(c) => {
            w.u8(TAG_CREATE_LIEN);
            w.u8(c.expires_in_ns.is_some() as u8);
            w.zeros(6);
            w.u128(c.id);
            w.u128(c.account);
            w.u128(c.amount);
            w.u128(c.owner);
            w.u128(c.user_data);
            w.code(c.currency);
            w.u64(c.expires_in_ns.unwrap_or(0));
        }
        Operation::CaptureLien(c) => {
            let reference = c.reference.as_deref().unwrap_or("");
            w.u8(TAG_CAPTURE_LIEN);
            w.u8(c.reference.is_some() as u8);
            w.u16(len16(c.credits.len()));
            w.u16(len16(reference.len()));
            w.zeros(2);
            w.u128(c.lien);
            w.u128(c.account);
            w.u128(c.entry_id);
            w.code(c.currency);
            for &(account, amount) in &c.credits {
                w.u128(account);
                w.u128(amount);
            }
            w.extend_from_slice(reference.as_bytes());
        }
        Operation::ReleaseLien(r) => {
            w.u8(TAG_RELEASE_LIEN);
            w.zeros(7);
            w.u128(r.lien);
            w.u128(r.account);
        }
    }
}

/// The fixed 96-byte form, built on the stack and appended at once (one
/// capacity check).
#[inline]
fn put_transfer(w: &mut Vec<u8>, t: &Transfer) {
    let mut b = [0u8; TRANSFER_BYTES];
    b[0] = TAG_TRANSFER;
    b[8..24].copy_from_slice(&t.id.to_le_bytes());
    b[24..40].copy_from_slice(&t.debit_account.to_le_bytes());
    b[40..56].copy_from_slice(&t.credit_account.to_le_bytes());
    b[56..72].copy_from_slice(&t.amount.to_le_bytes());
    b[72..80].copy_from_slice(&t.currency.to_bytes());
    b[80..96].copy_from_slice(&t.user_data.to_le_bytes());
    w.extend_from_slice(&b);
}

fn put_entry(w: &mut Vec<u8>, e: &Entry) {
    let reference = e.reference.as_deref().unwrap_or("");
    let flags = e.corrects.is_some() as u8
        | (e.allow_repeat_correction as u8) << 1
        | (e.reference.is_some() as u8) << 2;
    w.u8(TAG_ENTRY);
    w.u8(flags);
    w.u16(len16(e.lines.len()));
    w.u16(len16(reference.len()));
    w.zeros(2);
    w.u128(e.id);
    w.u128(e.user_data);
    w.u128(e.corrects.unwrap_or(0));
    for l in &e.lines {
        let (kind, value) = match l.condition {
            None => (0, 0),
            Some(Condition::AvailableAtLeast(v)) => (1, v),
            Some(Condition::BalanceAtMost(v)) => (2, v),
        };
        w.u128(l.account);
        w.u128(l.amount);
        w.i128(value);
        w.code(l.currency);
        w.u64(l.expected_version.unwrap_or(0));
        w.u8(l.side as u8);
        w.u8(l.expected_version.is_some() as u8);
        w.u8(kind);
        w.zeros(5);
    }
    w.extend_from_slice(reference.as_bytes());
}

fn put_event(w: &mut Vec<u8>, e: &EventCommand) {
    w.u8(TAG_EVENT);
    let kind = match e {
        EventCommand::Create(_) => 0,
        EventCommand::AddStep { .. } => 1,
        EventCommand::Start { .. } => 2,
        EventCommand::Confirm { .. } => 3,
        EventCommand::Fail { .. } => 4,
        EventCommand::Record { .. } => 5,
    };
    w.u8(kind);
    w.zeros(6);
    w.u128(e.event());
    match e {
        EventCommand::Create(n) => put_new_event(w, n),
        EventCommand::AddStep { step, .. } => put_step(w, step),
        EventCommand::Start { .. } => {}
        EventCommand::Confirm { step, amount, .. } => {
            w.str(step);
            put_opt(w, amount, |w, a| w.u128(*a));
        }
        EventCommand::Fail { step, reason, .. } => {
            w.str(step);
            w.str(reason);
        }
        EventCommand::Record { fact, .. } => put_fact(w, fact),
    }
}

/// An event's creation after its id (PROTOCOL.md, event kind 0; also the
/// head of `EVENT`): name, description, timeout, metadata, retries, delay.
pub fn put_new_event(w: &mut Vec<u8>, n: &NewEvent) {
    w.str(&n.name);
    w.str(&n.description);
    put_opt(w, &n.timeout_ns, |w, t| w.u64(*t));
    w.str(&n.metadata);
    w.u8(n.retries);
    w.u64(n.retry_delay_ns);
}

/// Reads what [`put_new_event`] writes, for the event `id`.
pub fn get_new_event(r: &mut Reader, id: u128) -> Result<NewEvent> {
    Ok(NewEvent {
        id,
        name: r.boxed_str()?,
        description: r.boxed_str()?,
        timeout_ns: r.opt(|r| r.u64())?,
        metadata: r.boxed_str()?,
        retries: r.u8()?,
        retry_delay_ns: r.u64()?,
    })
}

pub fn put_step(w: &mut Vec<u8>, s: &Step) {
    w.str(&s.name);
    w.str(&s.description);
    w.str(&s.kind);
    w.u32(s.order);
    w.str(&s.payload);
}

pub fn put_ops(w: &mut Vec<u8>, ops: &[Operation]) {
    put_list(w, ops, put_op);
}

pub fn put_failure(w: &mut Vec<u8>, f: &Failure) {
    w.u16(f.code);
    w.str(&f.message);
    put_opt(w, &f.step, |w, s| w.u16(*s));
    w.bool(f.retryable);
}

fn put_fact(w: &mut Vec<u8>, f: &Fact) {
    match f {
        Fact::Applied {
            group,
            attempt,
            steps,
        } => {
            w.u8(0);
            w.u32(*group);
            w.u16(*attempt);
            put_list(w, steps, |w, s| {
                w.u16(s.step);
                put_ops(w, &s.ops);
                w.str(&s.result);
                w.bool(s.awaiting);
            });
        }
        Fact::Refused {
            group,
            attempt,
            failure,
        } => {
            w.u8(1);
            w.u32(*group);
            w.u16(*attempt);
            put_failure(w, failure);
        }
        Fact::Captured {
            step,
            attempt,
            ops,
            result,
        } => {
            w.u8(2);
            w.u16(*step);
            w.u16(*attempt);
            put_ops(w, ops);
            w.str(result);
        }
        Fact::CaptureRefused {
            step,
            attempt,
            failure,
        } => {
            w.u8(3);
            w.u16(*step);
            w.u16(*attempt);
            put_failure(w, failure);
        }
        Fact::Undone {
            group,
            attempt,
            steps,
        } => {
            w.u8(4);
            w.u32(*group);
            w.u16(*attempt);
            put_list(w, steps, |w, (step, ops)| {
                w.u16(*step);
                put_ops(w, ops);
            });
        }
        Fact::UndoRefused {
            group,
            attempt,
            failure,
        } => {
            w.u8(5);
            w.u32(*group);
            w.u16(*attempt);
            put_failure(w, failure);
        }
        Fact::TimedOut => w.u8(6),
        Fact::Finished { ops } => {
            w.u8(7);
            put_ops(w, ops);
        }
        Fact::Concluded => w.u8(8),
    }
}

/// The fixed-form transfer at the start of `b`, validated in place: its
/// tag, reserved bytes and currency code checked at their fixed offsets,
/// its fields read from there. `None` when `b` does not start with a
/// well-formed one; [`get_command`] then reads it and names the fault.
#[inline(always)]
pub fn transfer_in_place(b: &[u8]) -> Option<Transfer> {
    let (&tag, body) = b.get(..TRANSFER_BYTES)?.split_first()?;
    let body: &[u8; TRANSFER_BYTES - 1] = body.try_into().ok()?;
    if tag != TAG_TRANSFER || body[..7] != [0; 7] {
        return None;
    }
    Some(transfer_fields(body, transfer_currency(body)?))
}

/// The currency code of a transfer's body (the bytes after its tag).
#[inline(always)]
fn transfer_currency(body: &[u8; TRANSFER_BYTES - 1]) -> Option<crate::currency::CurrencyCode> {
    let mut code = [0u8; 8];
    code.copy_from_slice(&body[71..79]);
    crate::currency::CurrencyCode::from_bytes(code)
}

/// A transfer's fields from its body (the bytes after its tag, so each
/// offset is PROTOCOL.md's minus one), once its checks have passed.
#[inline(always)]
fn transfer_fields(
    body: &[u8; TRANSFER_BYTES - 1],
    currency: crate::currency::CurrencyCode,
) -> Transfer {
    let u128_at = |o: usize| {
        let mut x = [0u8; 16];
        x.copy_from_slice(&body[o - 1..o + 15]);
        u128::from_le_bytes(x)
    };
    Transfer {
        id: u128_at(8),
        debit_account: u128_at(24),
        credit_account: u128_at(40),
        amount: u128_at(56),
        currency,
        user_data: u128_at(80),
    }
}

/// Reads one command onto the end of `out`: a fixed-form transfer in place
/// and straight into the vector (no intermediate `Result<Command>` to
/// copy), anything else through [`get_command`] (which also reads a
/// transfer in place, and a malformed one slowly, to name its fault).
#[inline]
pub fn read_command_into(r: &mut Reader, out: &mut Vec<Command>) -> Result<()> {
    if let Some(t) = transfer_in_place(r.rest()) {
        r.charge(std::mem::size_of::<Command>())?;
        r.take(TRANSFER_BYTES)?;
        out.push(Command::Op(Operation::Transfer(t)));
        return Ok(());
    }
    out.push(get_command(r)?);
    Ok(())
}

/// Reads one command.
#[inline]
pub fn get_command(r: &mut Reader) -> Result<Command> {
    if let Some(t) = transfer_in_place(r.rest()) {
        r.charge(std::mem::size_of::<Command>())?;
        r.take(TRANSFER_BYTES)?;
        return Ok(Command::Op(Operation::Transfer(t)));
    }
    let at = r.offset();
    let tag = r.u8()?;
    r.charge(std::mem::size_of::<Command>())?;
    Ok(match tag {
        TAG_TRANSFER..=TAG_RELEASE_LIEN => Command::Op(get_op_body(r, tag)?),
        TAG_CREATE_CURRENCY => {
            let scale = r.u8()?;
            r.reserved(6)?;
            Command::CreateCurrency(Currency {
                code: r.code()?,
                scale,
            })
        }
        TAG_CREATE_ACCOUNT => {
            let policy = r.u8()?;
            r.reserved(6)?;
            let id = r.u128()?;
            let user_data = r.u128()?;
            let limit = r.u128()?;
            let policy = policy_from(r, policy, limit)?;
            Command::CreateAccount(NewAccount {
                id,
                currency: r.code()?,
                policy,
                user_data,
            })
        }
        TAG_SET_ACCOUNT_STATE => {
            let state = r.u8()?;
            let state = state_from(r, state)?;
            r.reserved(6)?;
            Command::SetAccountState {
                account: r.u128()?,
                state,
            }
        }
        TAG_CHAIN => {
            r.reserved(3)?;
            let n = r.u32()? as usize;
            if n > MAX_CHAIN_OPERATIONS {
                return Err(DecodeError {
                    offset: r.offset() - 4,
                    what: format!("a chain of {n} operations; the limit is {MAX_CHAIN_OPERATIONS}"),
                    code: crate::error::ErrorCode::TooManyOperations,
                });
            }
            let id = r.u128()?;
            r.check_count(n, MIN_OPERATION_BYTES)?;
            r.charge(n * std::mem::size_of::<Operation>())?;
            let mut ops = Vec::with_capacity(n);
            for _ in 0..n {
                ops.push(get_op(r)?);
            }
            Command::Chain(Chain { id, ops })
        }
        TAG_EVENT => Command::Event(get_event(r)?),
        TAG_TICK => {
            r.reserved(7)?;
            Command::Tick
        }
        t => {
            return Err(DecodeError {
                offset: at,
                what: format!("unknown command tag {t}"),
                code: crate::error::ErrorCode::MalformedRequest,
            })
        }
    })
}

/// Reads one operation (a command with tag 1 to 5).
pub fn get_op(r: &mut Reader) -> Result<Operation> {
    if let Some(t) = transfer_in_place(r.rest()) {
        r.take(TRANSFER_BYTES)?;
        return Ok(Operation::Transfer(t));
    }
    let at = r.offset();
    match r.u8()? {
        t @ TAG_TRANSFER..=TAG_RELEASE_LIEN => get_op_body(r, t),
        t => Err(DecodeError {
            offset: at,
            what: format!("tag {t} is not an operation (1 to 5)"),
            code: crate::error::ErrorCode::MalformedRequest,
        }),
    }
}

#[inline]
fn get_op_body(r: &mut Reader, tag: u8) -> Result<Operation> {
    Ok(match tag {
        TAG_TRANSFER => Operation::Transfer(get_transfer(r)?),
        TAG_ENTRY => Operation::Entry(Box::new(get_entry(r)?)),
        TAG_CREATE_LIEN => {
            let flags = r.u8()?;
            if flags > 1 {
                return r.error("create lien flags: only bit 0 is defined");
            }
            r.reserved(6)?;
            let id = r.u128()?;
            let account = r.u128()?;
            let amount = r.u128()?;
            let owner = r.u128()?;
            let user_data = r.u128()?;
            let currency = r.code()?;
            let expires = r.u64()?;
            if flags == 0 && expires != 0 {
                return r.error("expires_in_ns must be zero when absent");
            }
            Operation::CreateLien(CreateLien {
                id,
                account,
                currency,
                amount,
                expires_in_ns: (flags == 1).then_some(expires),
                owner,
                user_data,
            })
        }
        TAG_CAPTURE_LIEN => {
            r.charge(std::mem::size_of::<CaptureLien>())?;
            let flags = r.u8()?;
            if flags > 1 {
                return r.error("capture flags: only bit 0 is defined");
            }
            let n = r.u16()? as usize;
            let text_len = r.u16()? as usize;
            r.reserved(2)?;
            let lien = r.u128()?;
            let account = r.u128()?;
            let entry_id = r.u128()?;
            let currency = r.code()?;
            r.check_count(n, 32)?;
            if n > 1 {
                r.charge(n * 32)?;
            }
            let mut credits = SmallVec::with_capacity(n);
            for _ in 0..n {
                credits.push((r.u128()?, r.u128()?));
            }
            let reference = reference(r, flags & 1 == 1, text_len)?;
            Operation::CaptureLien(Box::new(CaptureLien {
                lien,
                account,
                entry_id,
                currency,
                credits,
                reference,
            }))
        }
        _ => {
            r.reserved(7)?;
            Operation::ReleaseLien(ReleaseLien {
                lien: r.u128()?,
                account: r.u128()?,
            })
        }
    })
}

/// The fixed 96-byte transfer, its tag already read. A well-formed one is
/// read by [`transfer_in_place`] before it gets here; this path names the
/// fault of one that is not (a test keeps the two in agreement).
#[inline]
fn get_transfer(r: &mut Reader) -> Result<Transfer> {
    let at = r.offset();
    let b: &[u8; TRANSFER_BYTES - 1] = r
        .take(TRANSFER_BYTES - 1)?
        .try_into()
        .map_err(|_| r.error::<()>("a transfer is 96 bytes").unwrap_err())?;
    if b[..7] != [0; 7] {
        return Err(DecodeError {
            offset: at,
            what: "7 reserved bytes must be zero".into(),
            code: crate::error::ErrorCode::MalformedRequest,
        });
    }
    let Some(currency) = transfer_currency(b) else {
        return Err(DecodeError {
            offset: at + 71,
            what: "a currency code is 1 to 8 of A-Z 0-9, then zero bytes".into(),
            code: crate::error::ErrorCode::MalformedRequest,
        });
    };
    Ok(transfer_fields(b, currency))
}

fn reference(r: &mut Reader, present: bool, len: usize) -> Result<Option<Box<str>>> {
    if !present {
        if len != 0 {
            return r.error("reference_len must be zero when there is no reference");
        }
        return Ok(None);
    }
    let t = r.text(len)?;
    r.charge(len)?;
    Ok(Some(t.into()))
}

fn get_entry(r: &mut Reader) -> Result<Entry> {
    // The general entry is boxed (see `Operation`).
    r.charge(std::mem::size_of::<Entry>())?;
    let flags = r.u8()?;
    if flags > 0b111 {
        return r.error("entry flags: only bits 0 to 2 are defined");
    }
    let n = r.u16()? as usize;
    let text_len = r.u16()? as usize;
    r.reserved(2)?;
    let id = r.u128()?;
    let user_data = r.u128()?;
    let corrects = r.u128()?;
    if flags & 1 == 0 && corrects != 0 {
        return r.error("corrects must be zero when flag bit 0 is clear");
    }
    r.check_count(n, LINE_BYTES)?;
    if n > 2 {
        r.charge(n * std::mem::size_of::<Line>())?;
    }
    let mut lines = SmallVec::with_capacity(n);
    for _ in 0..n {
        lines.push(get_line(r)?);
    }
    Ok(Entry {
        id,
        lines,
        reference: reference(r, flags & 0b100 != 0, text_len)?,
        user_data,
        corrects: (flags & 1 == 1).then_some(corrects),
        allow_repeat_correction: flags & 0b10 != 0,
    })
}

fn get_line(r: &mut Reader) -> Result<Line> {
    let account = r.u128()?;
    let amount = r.u128()?;
    let value = r.i128()?;
    let currency = r.code()?;
    let version = r.u64()?;
    let side = match r.u8()? {
        0 => Side::Debit,
        1 => Side::Credit,
        s => return r.error(format!("unknown side {s}")),
    };
    let flags = r.u8()?;
    let condition = match (r.u8()?, value) {
        (0, 0) => None,
        (0, _) => return r.error("condition_value must be zero without a condition"),
        (1, v) => Some(Condition::AvailableAtLeast(v)),
        (2, v) => Some(Condition::BalanceAtMost(v)),
        (c, _) => return r.error(format!("unknown condition {c}")),
    };
    r.reserved(5)?;
    let expected_version = match flags {
        0 if version == 0 => None,
        0 => return r.error("expected_version must be zero when absent"),
        1 => Some(version),
        _ => return r.error("line flags: only bit 0 is defined"),
    };
    Ok(Line {
        account,
        side,
        amount,
        currency,
        expected_version,
        condition,
    })
}

fn get_event(r: &mut Reader) -> Result<EventCommand> {
    let kind = r.u8()?;
    r.reserved(6)?;
    let event = r.u128()?;
    Ok(match kind {
        0 => EventCommand::Create(get_new_event(r, event)?),
        1 => EventCommand::AddStep {
            event,
            step: get_step(r)?,
        },
        2 => EventCommand::Start { event },
        3 => EventCommand::Confirm {
            event,
            step: r.boxed_str()?,
            amount: r.opt(|r| r.u128())?,
        },
        4 => EventCommand::Fail {
            event,
            step: r.boxed_str()?,
            reason: r.boxed_str()?,
        },
        5 => EventCommand::Record {
            event,
            fact: get_fact(r)?,
        },
        k => return r.error(format!("unknown event command kind {k}")),
    })
}

pub fn get_step(r: &mut Reader) -> Result<Step> {
    Ok(Step {
        name: r.boxed_str()?,
        description: r.boxed_str()?,
        kind: r.boxed_str()?,
        order: r.u32()?,
        payload: r.boxed_str()?,
    })
}

pub fn get_ops(r: &mut Reader) -> Result<Vec<Operation>> {
    r.list(MIN_OPERATION_BYTES, |r| {
        r.charge(std::mem::size_of::<Operation>())?;
        get_op(r)
    })
}

pub fn get_failure(r: &mut Reader) -> Result<Failure> {
    Ok(Failure {
        code: r.u16()?,
        message: r.boxed_str()?,
        step: r.opt(|r| r.u16())?,
        retryable: r.bool()?,
    })
}

fn get_fact(r: &mut Reader) -> Result<Fact> {
    Ok(match r.u8()? {
        0 => Fact::Applied {
            group: r.u32()?,
            attempt: r.u16()?,
            steps: r.list(11, |r| {
                Ok(AppliedStep {
                    step: r.u16()?,
                    ops: get_ops(r)?,
                    result: r.boxed_str()?,
                    awaiting: r.bool()?,
                })
            })?,
        },
        1 => Fact::Refused {
            group: r.u32()?,
            attempt: r.u16()?,
            failure: get_failure(r)?,
        },
        2 => Fact::Captured {
            step: r.u16()?,
            attempt: r.u16()?,
            ops: get_ops(r)?,
            result: r.boxed_str()?,
        },
        3 => Fact::CaptureRefused {
            step: r.u16()?,
            attempt: r.u16()?,
            failure: get_failure(r)?,
        },
        4 => Fact::Undone {
            group: r.u32()?,
            attempt: r.u16()?,
            steps: r.list(6, |r| Ok((r.u16()?, get_ops(r)?)))?,
        },
        5 => Fact::UndoRefused {
            group: r.u32()?,
            attempt: r.u16()?,
            failure: get_failure(r)?,
        },
        6 => Fact::TimedOut,
        7 => Fact::Finished { ops: get_ops(r)? },
        8 => Fact::Concluded,
        k => {
            return Err(DecodeError {
                offset: r.offset() - 1,
                what: format!("unknown fact kind {k}"),
                code: crate::error::ErrorCode::MalformedRequest,
            })
        }
    })
}

/// The memory a decoder charges for `c` ([`Reader::charge`]), exactly for
/// ledger commands and generously for event commands: what a client adds up
/// to keep a request within the server's decoded-size limit.
pub fn decoded_size(c: &Command) -> usize {
    use std::mem::size_of;
    size_of::<Command>()
        + match c {
            Command::Op(op) => op_extra(op),
            Command::Chain(ch) => ch
                .ops
                .iter()
                .map(|op| size_of::<Operation>() + op_extra(op))
                .sum(),
            Command::Event(_) => 8 * encode_command(c).len(),
            _ => 0,
        }
}

/// What an operation's variable parts are charged beyond its own size.
fn op_extra(op: &Operation) -> usize {
    let text = |r: &Option<Box<str>>| r.as_ref().map_or(0, |t| t.len());
    match op {
        Operation::Entry(e) => {
            let lines = e.lines.len();
            std::mem::size_of::<Entry>()
                + text(&e.reference)
                + if lines > 2 {
                    lines * std::mem::size_of::<Line>()
                } else {
                    0
                }
        }
        Operation::CaptureLien(c) => {
            let n = c.credits.len();
            std::mem::size_of::<CaptureLien>() + text(&c.reference) + if n > 1 { n * 32 } else { 0 }
        }
        Operation::Transfer(_) | Operation::CreateLien(_) | Operation::ReleaseLien(_) => 0,
    }
}

/// A command's encoding on its own.
pub fn encode_command(c: &Command) -> Vec<u8> {
    let mut w = Vec::with_capacity(TRANSFER_BYTES);
    put_command(&mut w, c);
    w
}

/// Decodes exactly one command.
pub fn decode_command(b: &[u8]) -> Result<Command> {
    let mut r = Reader::new(b);
    let c = get_command(&mut r)?;
    r.finish()?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::currency::CurrencyCode;

    #[test]
    fn general_forms_have_their_documented_sizes() {
        let usd = CurrencyCode::parse("USD").unwrap();
        let lines = (0..5).map(|i| Line::debit(i + 1, 7, usd).expect_version(3));
        let e = Entry::new(9, lines).with_reference("invoice 7");
        let b = encode_command(&Command::from(e.clone()));
        assert_eq!(b.len(), ENTRY_HEAD_BYTES + 5 * LINE_BYTES + 9);
        assert_eq!(decode_command(&b).unwrap(), Command::from(e));
        let c = CaptureLien {
            lien: 1,
            account: 2,
            entry_id: 3,
            currency: usd,
            credits: [(4, 5), (6, 7)].into_iter().collect(),
            reference: None,
        };
        let b = encode_command(&Command::from(c.clone()));
        assert_eq!(b.len(), CAPTURE_HEAD_BYTES + 2 * 32);
        assert_eq!(decode_command(&b).unwrap(), Command::from(c));
        // The fixed form is a transfer, and a general entry stays one even
        // with a transfer's shape: each decodes to what was encoded.
        let fixed = Command::from(Transfer::new(1, 2, 3, 4, usd).with_user_data(6));
        assert_eq!(decode_command(&encode_command(&fixed)).unwrap(), fixed);
        let general = Command::from(Entry::transfer(1, 2, 3, 4, usd));
        let b = encode_command(&general);
        assert_eq!(b.len(), ENTRY_HEAD_BYTES + 2 * LINE_BYTES);
        assert_eq!(decode_command(&b).unwrap(), general);
        // A transfer whose lines carry anything more takes the general form.
        let mut t = Entry::transfer(1, 2, 3, 4, usd);
        t.lines[0].expected_version = Some(0);
        assert_eq!(
            encode_command(&Command::from(t)).len(),
            ENTRY_HEAD_BYTES + 2 * LINE_BYTES
        );
    }

    #[test]
    fn decoded_size_is_what_the_decoder_charges() {
        let usd = CurrencyCode::parse("USD").unwrap();
        let lines = (0..5).map(|i| Line::debit(i + 1, 7, usd));
        let entry = Command::from(Entry::new(9, lines).with_reference("invoice 7"));
        let capture = Command::from(CaptureLien {
            lien: 1,
            account: 2,
            entry_id: 3,
            currency: usd,
            credits: [(4, 5), (6, 7)].into_iter().collect(),
            reference: Some("r".into()),
        });
        let chain = Command::Chain(Chain {
            id: 1,
            ops: vec![
                Operation::Entry(Box::new(Entry::transfer(1, 2, 3, 4, usd))),
                capture.ops()[0].clone(),
            ],
        });
        let transfer = Command::from(Transfer::new(1, 2, 3, 4, usd).with_user_data(5));
        for c in [entry, capture, chain, transfer, Command::Tick] {
            let bytes = encode_command(&c);
            let mut r = Reader::new(&bytes);
            get_command(&mut r).unwrap();
            assert_eq!(decoded_size(&c), r.charged(), "{c:?}");
        }
    }

    /// The in-place reading of a transfer accepts exactly what the general
    /// decoder accepts, with the same values: every byte of a transfer set
    /// to values that break or keep it.
    #[test]
    fn a_transfer_read_in_place_is_what_the_decoder_reads() {
        let usd = CurrencyCode::parse("USD").unwrap();
        let t = Transfer::new(11, 22, 33, 44, usd).with_user_data(55);
        let good = encode_command(&Command::from(t));
        let mut accepted = 0;
        for at in 0..TRANSFER_BYTES {
            for v in [0u8, 1, b'A', b'z', 0xff] {
                let mut b = good.clone();
                b[at] = v;
                let general = decode_command(&b).ok();
                let in_place = transfer_in_place(&b).map(Command::from);
                assert_eq!(in_place, general, "byte {at} = {v}");
                accepted += usize::from(general.is_some());
                let mut out = Vec::new();
                let mut r = Reader::new(&b);
                let read = read_command_into(&mut r, &mut out).map(|()| out.pop());
                assert_eq!(read.ok().flatten(), general, "byte {at} = {v}");
            }
        }
        assert!(accepted > 0 && accepted < TRANSFER_BYTES * 5);
        assert_eq!(transfer_in_place(&good[..TRANSFER_BYTES - 1]), None);
    }

    #[test]
    fn inconsistent_flags_are_refused() {
        let usd = CurrencyCode::parse("USD").unwrap();
        let mut b = encode_command(&Command::from(Transfer::new(1, 2, 3, 4, usd)));
        assert_eq!(b.len(), TRANSFER_BYTES);
        b[1] = 1;
        assert_eq!(decode_command(&b).unwrap_err().offset, 1);
        let e =
            Entry::new(1, [Line::debit(2, 4, usd), Line::credit(3, 4, usd)]).with_reference("x");
        let mut b = encode_command(&Command::from(e));
        b[1] = 0; // reference present, flag says absent
        assert!(decode_command(&b).is_err());
        let mut b = encode_command(&Command::Tick);
        b[3] = 1;
        assert!(decode_command(&b).is_err());
    }
}
