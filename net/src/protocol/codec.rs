//! The byte layouts of requests and responses (`PROTOCOL.md`). Encoding
//! cannot fail; decoding checks every length, flag, enumeration and reserved
//! byte and names the offset of the first thing wrong.

use super::command::{
    get_command, get_failure, get_new_event, get_ops, get_step, policy_fields, policy_from,
    put_command, put_failure, put_new_event, put_ops, put_step, state_from, MIN_COMMAND_BYTES,
};
use super::message::*;
use super::wire::{put_list, put_opt, DecodeError, Reader, Result, Writer};
use crate::verify::{CurrencyTotal, Finding, VerifyReport};
use tally_engine::account::Account;
use tally_engine::currency::{Currency, CurrencyCode};
use tally_engine::event::{Event, EventState, StepRecord, StepStatus};
use tally_engine::lien::{Lien, LienStatus};
use tally_engine::limits::MAX_CURRENCY_CODE_LEN;

/// Request types.
pub mod request {
    pub const SUBMIT: u8 = 1;
    pub const ACCOUNT: u8 = 2;
    pub const ENTRY: u8 = 3;
    pub const LIEN: u8 = 4;
    pub const CURRENCY: u8 = 5;
    pub const STATEMENT: u8 = 6;
    pub const FIND: u8 = 7;
    pub const SUBSCRIBE: u8 = 8;
    pub const STATUS: u8 = 9;
    pub const VERIFY: u8 = 10;
    pub const HOTSPOTS: u8 = 11;
    pub const EVENT: u8 = 12;
    pub const EVENTS: u8 = 13;
    pub const BACKUP: u8 = 14;
    pub const BACKUP_READ: u8 = 15;
    pub const BACKUP_END: u8 = 16;
}

/// Response types.
pub mod response {
    pub const OUTCOMES: u8 = 1;
    pub const ACCOUNT: u8 = 2;
    pub const ENTRY: u8 = 3;
    pub const LIEN: u8 = 4;
    pub const CURRENCY: u8 = 5;
    pub const STATEMENT: u8 = 6;
    pub const RECORDS: u8 = 7;
    pub const STATUS: u8 = 8;
    pub const VERIFICATION: u8 = 9;
    pub const HOTSPOTS: u8 = 10;
    pub const EVENT: u8 = 11;
    pub const EVENTS: u8 = 12;
    pub const BACKUP: u8 = 13;
    pub const BACKUP_CHUNK: u8 = 14;
    pub const ERROR: u8 = 255;
}

/// `Events` asks for every state with this value.
pub const ALL_STATES: u8 = 255;
/// Bytes of one exception in `Outcomes` before its text.
pub const EXCEPTION_BYTES: usize = 56;
/// Bytes of the fixed structures.
pub const ACCOUNT_BYTES: usize = 168;
pub const LIEN_BYTES: usize = 136;
pub const CURRENCY_BYTES: usize = 16;
pub const RECORD_HEAD_BYTES: usize = 32;

fn head(w: &mut Vec<u8>, kind: u8) {
    w.u8(kind);
    w.zeros(3);
}

// ---- requests ----------------------------------------------------------

pub fn encode_request(q: &Request) -> Vec<u8> {
    let mut w = Vec::with_capacity(match q {
        Request::Submit(c) => 8 + c.len() * super::command::TRANSFER_BYTES,
        _ => 64,
    });
    put_request(&mut w, q);
    w
}

fn put_request(w: &mut Vec<u8>, q: &Request) {
    use request::*;
    let id_request = |w: &mut Vec<u8>, kind: u8, id: u128| {
        head(w, kind);
        w.zeros(4);
        w.u128(id);
    };
    match q {
        Request::Submit(commands) => {
            head(w, SUBMIT);
            w.u32(u32::try_from(commands.len()).unwrap_or(u32::MAX));
            for c in commands {
                put_command(w, c);
            }
        }
        Request::Account(id) => id_request(w, ACCOUNT, *id),
        Request::Entry(id) => id_request(w, ENTRY, *id),
        Request::Lien(id) => id_request(w, LIEN, *id),
        Request::Event(id) => id_request(w, EVENT, *id),
        Request::Currency(code) => {
            head(w, CURRENCY);
            w.zeros(4);
            w.code(*code);
        }
        Request::Statement {
            account,
            from_seq,
            limit,
        } => {
            head(w, STATEMENT);
            w.u32(*limit);
            w.u128(*account);
            w.u64(*from_seq);
        }
        Request::Find {
            key,
            from_ts,
            to_ts,
            limit,
        } => {
            head(w, FIND);
            w.u32(*limit);
            w.u64(*from_ts);
            w.u64(*to_ts);
            let kind = match key {
                FindKey::Reference(_) => 0,
                FindKey::EntryUserData(_) => 1,
                FindKey::AccountUserData(_) => 2,
            };
            w.u8(kind);
            w.zeros(7);
            match key {
                FindKey::Reference(t) => w.str(t),
                FindKey::EntryUserData(v) | FindKey::AccountUserData(v) => w.u128(*v),
            }
        }
        Request::Subscribe { from_seq } => {
            head(w, SUBSCRIBE);
            w.zeros(4);
            w.u64(*from_seq);
        }
        Request::Status => head(w, STATUS),
        Request::Verify { full } => {
            head(w, VERIFY);
            w.bool(*full);
            w.zeros(3);
        }
        Request::Hotspots { window_s, top } => {
            head(w, HOTSPOTS);
            w.u32(*top);
            w.u64(*window_s);
        }
        Request::Events {
            state,
            older_than_s,
            limit,
        } => {
            head(w, EVENTS);
            w.u32(*limit);
            w.u64(*older_than_s);
            w.u8(state.unwrap_or(ALL_STATES));
            w.zeros(7);
        }
        Request::Backup => head(w, BACKUP),
        Request::BackupRead {
            backup,
            file,
            offset,
            len,
        } => {
            head(w, BACKUP_READ);
            w.u32(*file);
            w.u64(*backup);
            w.u64(*offset);
            w.u32(*len);
            w.zeros(4);
        }
        Request::BackupEnd { backup } => {
            head(w, BACKUP_END);
            w.zeros(4);
            w.u64(*backup);
        }
    }
}

/// Validates and decodes a request body (untrusted bytes).
pub fn decode_request(body: &[u8]) -> Result<Request> {
    decode_request_measured(body).map(|d| d.request)
}

/// A decoded request, what it takes in memory, and for a `Submit` where
/// each command lies in the body (the log stores those bytes verbatim:
/// [`Decoded::encoded`]).
#[derive(Debug)]
pub struct Decoded {
    pub request: Request,
    /// Bytes the decoded request takes beyond its body, an estimate from
    /// the types' sizes.
    pub size: usize,
    /// Each command's (start, end) in the body.
    pub spans: Option<Vec<(u32, u32)>>,
}

impl Decoded {
    /// The commands' bytes as sent, taking the body they were decoded from
    /// (moved, not copied).
    pub fn encoded(&mut self, body: Vec<u8>) -> Option<tally_engine::codec::Encoded> {
        tally_engine::codec::Encoded::over(body, self.spans.take()?)
    }
}

/// [`decode_request`], and the memory the decoded request takes (an
/// estimate from the types' sizes, at most `MAX_DECODED_REQUEST_BYTES`: a
/// request that would take more is refused `frame_too_large` while it is
/// decoded, and a `Submit` of more than `MAX_BATCH_OPERATIONS` commands
/// `batch_too_large` before any is).
pub fn decode_request_measured(body: &[u8]) -> Result<Decoded> {
    use request::*;
    let mut r = Reader::with_limit(body, crate::limits::MAX_DECODED_REQUEST_BYTES);
    let mut spans = None;
    let kind = r.u8()?;
    r.reserved(3)?;
    let q = match kind {
        SUBMIT => {
            let n = r.u32()? as usize;
            if n > crate::limits::MAX_BATCH_OPERATIONS {
                return Err(DecodeError {
                    offset: 4,
                    what: format!(
                        "{n} commands; a Submit holds at most {}",
                        crate::limits::MAX_BATCH_OPERATIONS
                    ),
                    code: tally_engine::ErrorCode::BatchTooLarge,
                });
            }
            r.check_count(n, MIN_COMMAND_BYTES)?;
            let mut commands = Vec::with_capacity(n);
            let mut at = Vec::with_capacity(n);
            r.charge(n * std::mem::size_of::<(u32, u32)>())?;
            for _ in 0..n {
                let start = r.offset() as u32;
                tally_engine::codec::read_command_into(&mut r, &mut commands)?;
                at.push((start, r.offset() as u32));
            }
            spans = Some(at);
            Request::Submit(commands)
        }
        ACCOUNT | ENTRY | LIEN | EVENT => {
            r.reserved(4)?;
            let id = r.u128()?;
            match kind {
                ACCOUNT => Request::Account(id),
                ENTRY => Request::Entry(id),
                LIEN => Request::Lien(id),
                _ => Request::Event(id),
            }
        }
        CURRENCY => {
            r.reserved(4)?;
            Request::Currency(r.code()?)
        }
        STATEMENT => {
            let limit = r.u32()?;
            Request::Statement {
                account: r.u128()?,
                from_seq: r.u64()?,
                limit,
            }
        }
        FIND => {
            let limit = r.u32()?;
            let from_ts = r.u64()?;
            let to_ts = r.u64()?;
            let key = r.u8()?;
            r.reserved(7)?;
            let key = match key {
                0 => FindKey::Reference(r.str()?.to_string()),
                1 => FindKey::EntryUserData(r.u128()?),
                2 => FindKey::AccountUserData(r.u128()?),
                k => return r.error(format!("unknown find key {k}")),
            };
            Request::Find {
                key,
                from_ts,
                to_ts,
                limit,
            }
        }
        SUBSCRIBE => {
            r.reserved(4)?;
            Request::Subscribe { from_seq: r.u64()? }
        }
        STATUS => Request::Status,
        VERIFY => {
            let full = r.bool()?;
            r.reserved(3)?;
            Request::Verify { full }
        }
        HOTSPOTS => {
            let top = r.u32()?;
            Request::Hotspots {
                window_s: r.u64()?,
                top,
            }
        }
        EVENTS => {
            let limit = r.u32()?;
            let older_than_s = r.u64()?;
            let state = r.u8()?;
            r.reserved(7)?;
            Request::Events {
                state: (state != ALL_STATES).then_some(state),
                older_than_s,
                limit,
            }
        }
        BACKUP => Request::Backup,
        BACKUP_READ => {
            let file = r.u32()?;
            let backup = r.u64()?;
            let offset = r.u64()?;
            let len = r.u32()?;
            r.reserved(4)?;
            Request::BackupRead {
                backup,
                file,
                offset,
                len,
            }
        }
        BACKUP_END => {
            r.reserved(4)?;
            Request::BackupEnd { backup: r.u64()? }
        }
        k => {
            return Err(DecodeError {
                offset: 0,
                what: format!("unknown request type {k}"),
                code: tally_engine::ErrorCode::MalformedRequest,
            })
        }
    };
    r.finish()?;
    Ok(Decoded {
        request: q,
        size: r.charged(),
        spans,
    })
}

// ---- responses ---------------------------------------------------------

pub fn encode_response(p: &Response) -> Vec<u8> {
    let mut w = Vec::with_capacity(match p {
        Response::Outcomes(o) => 32 + o.exceptions.len() * (EXCEPTION_BYTES + 32),
        _ => 256,
    });
    put_response(&mut w, p);
    w
}

fn put_response(w: &mut Vec<u8>, p: &Response) {
    use response::*;
    match p {
        Response::Outcomes(o) => put_outcomes(w, o),
        Response::Account(a) => {
            head(w, ACCOUNT);
            w.bool(a.is_some());
            w.zeros(3);
            if let Some(a) = a {
                put_account(w, a);
            }
        }
        Response::Entry(e) => {
            head(w, ENTRY);
            w.u8(e.status);
            w.bool(e.record.is_some());
            w.u16(e.code);
            w.u64(e.seq);
            if let Some(rec) = &e.record {
                put_record(w, rec);
            }
        }
        Response::Lien(l) => {
            head(w, LIEN);
            w.bool(l.is_some());
            w.u8(l.map_or(0, |l| l.scale));
            w.zeros(2);
            if let Some(l) = l {
                put_lien(w, &l.lien);
            }
        }
        Response::Currency(c) => {
            head(w, CURRENCY);
            w.bool(c.is_some());
            w.zeros(3);
            if let Some(c) = c {
                put_currency(w, c);
            }
        }
        Response::Statement(s) => {
            head(w, STATEMENT);
            w.u8(s.currency.is_some() as u8 | (s.next_from_seq.is_some() as u8) << 1);
            w.zeros(3);
            w.u128(s.account);
            w.u64(s.next_from_seq.unwrap_or(0));
            match &s.currency {
                Some(c) => put_currency(w, c),
                None => w.zeros(CURRENCY_BYTES),
            }
            w.u32(u32::try_from(s.lines.len()).unwrap_or(u32::MAX));
            w.zeros(4);
            for l in &s.lines {
                w.u128(l.debit);
                w.u128(l.credit);
                w.i128(l.balance);
                put_record(w, &l.record);
            }
        }
        Response::Records(records) => {
            head(w, RECORDS);
            w.u32(u32::try_from(records.len()).unwrap_or(u32::MAX));
            for rec in records {
                put_record(w, rec);
            }
        }
        Response::Status(s) => {
            head(w, STATUS);
            w.u32(s.shards);
            w.u64(s.next_seq);
            w.u64(s.durable_seq);
            w.u64(s.history_from);
            w.bool(s.read_only);
            w.zeros(3);
            w.str(&s.version);
        }
        Response::Verification(v) => {
            head(w, VERIFICATION);
            put_verification(w, v);
        }
        Response::Hotspots(h) => {
            head(w, HOTSPOTS);
            w.u64(h.window_s);
            w.u64(h.total_writes);
            w.u64(h.total_conflicts);
            for list in [&h.writes, &h.conflicts] {
                put_list(w, list, |w, (a, n)| {
                    w.u128(*a);
                    w.u64(*n);
                });
            }
        }
        Response::Event(e) => {
            head(w, EVENT);
            w.bool(e.is_some());
            w.zeros(3);
            if let Some(e) = e {
                put_event(w, &e.event);
                put_list(w, &e.liens, put_lien);
                put_list(w, &e.currencies, put_currency);
                w.u64(e.now);
            }
        }
        Response::Events(list) => {
            head(w, EVENTS);
            put_list(w, list, |w, s| {
                w.u128(s.id);
                w.str(&s.name);
                w.u8(s.state);
                w.u32(s.steps);
                w.u64(s.created_ts);
                w.u64(s.started_ts);
                w.u64(s.ended_ts);
                put_opt(w, &s.deadline, |w, d| w.u64(*d));
                put_opt(w, &s.failure, |w, f| w.u16(*f));
            });
        }
        Response::Backup(m) => {
            head(w, BACKUP);
            w.u64(m.backup);
            w.u64(m.durable_seq);
            w.u64(m.snapshot_seq);
            put_list(w, &m.files, |w, f| {
                w.u64(f.size);
                w.u64(f.copy);
                w.str(&f.name);
            });
        }
        Response::BackupChunk(bytes) => {
            head(w, BACKUP_CHUNK);
            w.u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
            w.extend_from_slice(bytes);
        }
        Response::Error(e) => {
            head(w, ERROR);
            w.u16(e.code);
            w.zeros(2);
            w.str(&e.message);
        }
    }
}

fn put_outcomes(w: &mut Vec<u8>, o: &Outcomes) {
    head(w, response::OUTCOMES);
    w.u32(o.count);
    w.u32(u32::try_from(o.exceptions.len()).unwrap_or(u32::MAX));
    w.zeros(4);
    w.u64(o.first_seq);
    w.u64(o.first_timestamp);
    for (index, x) in &o.exceptions {
        let text = x.text.as_deref().map(|t| truncate(t, u16::MAX as usize));
        let sequenced = !(x.kind == REJECTED && x.seq == 0);
        let flags = sequenced as u8
            | (x.op.is_some() as u8) << 1
            | (x.line.is_some() as u8) << 2
            | (x.current_version.is_some() as u8) << 3
            | (text.is_some() as u8) << 4;
        w.u32(*index);
        w.u8(x.kind);
        w.u8(flags);
        w.u16(x.code);
        w.u16(x.op.unwrap_or(0));
        w.u16(x.line.unwrap_or(0));
        w.u16(text.map_or(0, |t| t.len() as u16));
        w.zeros(2);
        w.u64(x.seq);
        w.u64(x.current_version.unwrap_or(0));
        w.u128(x.subject);
        w.u64(if x.kind == COMMITTED { x.timestamp } else { 0 });
        w.extend_from_slice(text.unwrap_or("").as_bytes());
    }
}

/// At most `max` bytes of `t`, cut at a character boundary.
fn truncate(t: &str, max: usize) -> &str {
    if t.len() <= max {
        return t;
    }
    let mut end = max;
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    &t[..end]
}

fn put_currency(w: &mut Vec<u8>, c: &Currency) {
    w.code(c.code);
    w.u8(c.scale);
    w.zeros(7);
}

fn put_account(w: &mut Vec<u8>, a: &WireAccount) {
    let (policy, limit) = policy_fields(a.account.policy);
    let acc = &a.account;
    w.u128(acc.id);
    w.u128(acc.debits_posted);
    w.u128(acc.credits_posted);
    w.u128(acc.reserved);
    w.u128(acc.user_data);
    w.u128(limit);
    w.i128(acc.balance());
    w.i128(acc.available());
    w.u64(acc.version);
    w.u64(acc.created_seq);
    w.u64(acc.created_ts);
    w.code(a.currency.code);
    w.u8(a.currency.scale);
    w.u8(policy);
    w.u8(acc.state as u8);
    w.zeros(5);
}

fn put_lien(w: &mut Vec<u8>, l: &Lien) {
    w.u128(l.id);
    w.u128(l.account);
    w.u128(l.amount);
    w.u128(l.captured);
    w.u128(l.owner);
    w.u128(l.user_data);
    w.u64(l.created_seq);
    w.u64(l.created_ts);
    w.u64(l.deadline.unwrap_or(0));
    w.code(l.currency);
    w.u8(l.status as u8);
    w.u8(l.deadline.is_some() as u8);
    w.zeros(6);
}

fn put_record(w: &mut Vec<u8>, r: &WireRecord) {
    w.u64(r.seq);
    w.u64(r.timestamp);
    w.u64(r.original_seq);
    w.u16(r.code);
    w.u8(r.outcome);
    w.zeros(1);
    let at = w.len();
    w.u32(0);
    put_command(w, &r.command);
    let len = w.len() - at - 4;
    w.patch_u32(at, u32::try_from(len).unwrap_or(u32::MAX));
}

fn put_verification(w: &mut Vec<u8>, v: &VerifyReport) {
    w.bool(v.clean);
    w.bool(v.full);
    for n in [
        v.cut_sequence,
        v.accounts,
        v.accounts_checked_against_log,
        v.records_checked_against_index,
        v.max_shard_pause_us,
        v.duration_ms,
    ] {
        w.u64(n);
    }
    put_list(w, &v.currencies, |w, c| {
        w.str(&c.code);
        w.str(&c.sum);
    });
    for list in [&v.errors, &v.warnings] {
        put_list(w, list, |w, f| {
            w.str(&f.kind);
            w.str(&f.subject);
            w.str(&f.message);
        });
    }
}

fn put_event(w: &mut Vec<u8>, e: &Event) {
    w.u128(e.spec.id);
    put_new_event(w, &e.spec);
    w.u64(e.fingerprint);
    put_list(w, &e.steps, |w, st| {
        put_step(w, &st.step);
        w.u8(st.status as u8);
        w.u64(st.added_seq);
        put_ops(w, &st.ops);
        put_ops(w, &st.undo);
        w.str(&st.result);
        put_opt(w, &st.confirm_amount, |w, a| w.u128(*a));
        w.u64(st.confirmed_seq);
        put_opt(w, &st.error, put_failure);
    });
    w.u8(e.state as u8);
    for n in [
        e.version,
        e.created_seq,
        e.created_ts,
        e.started_seq,
        e.started_ts,
        e.ended_ts,
    ] {
        w.u64(n);
    }
    put_opt(w, &e.deadline, |w, d| w.u64(*d));
    w.u16(e.attempt);
    w.u64(e.retry_at);
    w.bool(e.timed_out);
    put_opt(w, &e.failure, put_failure);
    put_opt(w, &e.compensation_error, put_failure);
    put_opt(w, &e.failed_by, |w, (step, seq)| {
        w.u16(*step);
        w.u64(*seq);
    });
    put_ops(w, &e.finish_ops);
}

/// Validates and decodes a response body.
pub fn decode_response(body: &[u8]) -> Result<Response> {
    use response::*;
    let mut r = Reader::new(body);
    let kind = r.u8()?;
    r.reserved(3)?;
    let p = match kind {
        OUTCOMES => Response::Outcomes(get_outcomes(&mut r)?),
        ACCOUNT => {
            let found = r.bool()?;
            r.reserved(3)?;
            Response::Account(if found {
                Some(get_account(&mut r)?)
            } else {
                None
            })
        }
        ENTRY => {
            let status = r.u8()?;
            let has = r.bool()?;
            let code = r.u16()?;
            let seq = r.u64()?;
            let record = if has { Some(get_record(&mut r)?) } else { None };
            Response::Entry(EntryInfo {
                status,
                seq,
                code,
                record,
            })
        }
        LIEN => {
            let found = r.bool()?;
            let scale = r.u8()?;
            r.reserved(2)?;
            Response::Lien(if found {
                Some(WireLien {
                    lien: get_lien(&mut r)?,
                    scale,
                })
            } else {
                None
            })
        }
        CURRENCY => {
            let found = r.bool()?;
            r.reserved(3)?;
            Response::Currency(if found {
                Some(get_currency(&mut r)?)
            } else {
                None
            })
        }
        STATEMENT => Response::Statement(get_statement(&mut r)?),
        RECORDS => {
            let n = r.u32()? as usize;
            r.check_count(n, RECORD_HEAD_BYTES)?;
            let mut records = Vec::with_capacity(n);
            for _ in 0..n {
                records.push(get_record(&mut r)?);
            }
            Response::Records(records)
        }
        STATUS => Response::Status(ServerStatus {
            shards: r.u32()?,
            next_seq: r.u64()?,
            durable_seq: r.u64()?,
            history_from: r.u64()?,
            read_only: {
                let b = r.bool()?;
                r.reserved(3)?;
                b
            },
            version: r.str()?.to_string(),
        }),
        VERIFICATION => Response::Verification(get_verification(&mut r)?),
        HOTSPOTS => {
            let window_s = r.u64()?;
            let total_writes = r.u64()?;
            let total_conflicts = r.u64()?;
            let pair = |r: &mut Reader| r.list(24, |r| Ok((r.u128()?, r.u64()?)));
            let writes = pair(&mut r)?;
            let conflicts = pair(&mut r)?;
            Response::Hotspots(HotspotReport {
                window_s,
                writes,
                conflicts,
                total_writes,
                total_conflicts,
            })
        }
        EVENT => {
            let found = r.bool()?;
            r.reserved(3)?;
            Response::Event(if found {
                Some(WireEvent {
                    event: get_event(&mut r)?,
                    liens: r.list(LIEN_BYTES, get_lien)?,
                    currencies: r.list(CURRENCY_BYTES, get_currency)?,
                    now: r.u64()?,
                })
            } else {
                None
            })
        }
        EVENTS => Response::Events(r.list(16, |r| {
            Ok(EventSummary {
                id: r.u128()?,
                name: r.str()?.to_string(),
                state: r.u8()?,
                steps: r.u32()?,
                created_ts: r.u64()?,
                started_ts: r.u64()?,
                ended_ts: r.u64()?,
                deadline: r.opt(|r| r.u64())?,
                failure: r.opt(|r| r.u16())?,
            })
        })?),
        BACKUP => Response::Backup(BackupManifest {
            backup: r.u64()?,
            durable_seq: r.u64()?,
            snapshot_seq: r.u64()?,
            files: r.list(20, |r| {
                Ok(BackupFileInfo {
                    size: r.u64()?,
                    copy: r.u64()?,
                    name: r.str()?.to_string(),
                })
            })?,
        }),
        BACKUP_CHUNK => {
            let n = r.u32()? as usize;
            Response::BackupChunk(r.take(n)?.to_vec())
        }
        ERROR => {
            let code = r.u16()?;
            r.reserved(2)?;
            Response::Error(WireError {
                code,
                message: r.str()?.to_string(),
            })
        }
        k => {
            return Err(DecodeError {
                offset: 0,
                what: format!("unknown response type {k}"),
                code: tally_engine::ErrorCode::MalformedRequest,
            })
        }
    };
    r.finish()?;
    Ok(p)
}

fn get_outcomes(r: &mut Reader) -> Result<Outcomes> {
    let count = r.u32()?;
    if count as usize > crate::limits::MAX_BATCH_OPERATIONS {
        return r.error(format!(
            "a count of {count} outcomes is over the batch limit of {}",
            crate::limits::MAX_BATCH_OPERATIONS
        ));
    }
    let n = r.u32()? as usize;
    r.reserved(4)?;
    let first_seq = r.u64()?;
    let first_timestamp = r.u64()?;
    r.check_count(n, EXCEPTION_BYTES)?;
    let mut exceptions = Vec::with_capacity(n);
    let mut last: Option<u32> = None;
    for _ in 0..n {
        let at = r.offset();
        let index = r.u32()?;
        if index >= count || last.is_some_and(|l| index <= l) {
            return Err(DecodeError {
                offset: at,
                what: format!("exception index {index} is out of order or not below {count}"),
                code: tally_engine::ErrorCode::MalformedRequest,
            });
        }
        last = Some(index);
        exceptions.push((index, get_exception(r)?));
    }
    Ok(Outcomes {
        count,
        first_seq,
        first_timestamp,
        exceptions,
    })
}

fn get_exception(r: &mut Reader) -> Result<WireOutcome> {
    let kind = r.u8()?;
    let flags = r.u8()?;
    if kind > REJECTED {
        return r.error(format!("unknown outcome kind {kind}"));
    }
    if flags > 0b1_1111 {
        return r.error("exception flags: only bits 0 to 4 are defined");
    }
    let code = r.u16()?;
    let op = r.u16()?;
    let line = r.u16()?;
    let text_len = r.u16()? as usize;
    r.reserved(2)?;
    let seq = r.u64()?;
    let version = r.u64()?;
    let subject = r.u128()?;
    let timestamp = r.u64()?;
    let sequenced = flags & 1 == 1;
    if sequenced != (kind != REJECTED || seq != 0) {
        return r.error("the sequenced flag disagrees with the outcome's sequence");
    }
    let text = if flags & 0b1_0000 != 0 {
        Some(r.text(text_len)?.to_string())
    } else if text_len != 0 {
        return r.error("text_len must be zero without text");
    } else {
        None
    };
    Ok(WireOutcome {
        kind,
        seq,
        timestamp,
        code,
        op: (flags & 0b10 != 0).then_some(op),
        line: (flags & 0b100 != 0).then_some(line),
        subject,
        current_version: (flags & 0b1000 != 0).then_some(version),
        text,
    })
}

fn get_currency(r: &mut Reader) -> Result<Currency> {
    let code = r.code()?;
    let scale = r.u8()?;
    r.reserved(7)?;
    Ok(Currency { code, scale })
}

fn get_account(r: &mut Reader) -> Result<WireAccount> {
    let id = r.u128()?;
    let debits_posted = r.u128()?;
    let credits_posted = r.u128()?;
    let reserved = r.u128()?;
    let user_data = r.u128()?;
    let limit = r.u128()?;
    let _balance = r.i128()?;
    let _available = r.i128()?;
    let version = r.u64()?;
    let created_seq = r.u64()?;
    let created_ts = r.u64()?;
    let code: CurrencyCode = r.code()?;
    let scale = r.u8()?;
    let policy = r.u8()?;
    let policy = policy_from(r, policy, limit)?;
    let state = r.u8()?;
    let state = state_from(r, state)?;
    r.reserved(5)?;
    Ok(WireAccount {
        account: Account {
            id,
            debits_posted,
            credits_posted,
            reserved,
            user_data,
            policy,
            version,
            created_seq,
            created_ts,
            // The shard's own index into its currency table: not sent.
            currency: 0,
            state,
        },
        currency: Currency { code, scale },
    })
}

fn get_lien(r: &mut Reader) -> Result<Lien> {
    let id = r.u128()?;
    let account = r.u128()?;
    let amount = r.u128()?;
    let captured = r.u128()?;
    let owner = r.u128()?;
    let user_data = r.u128()?;
    let created_seq = r.u64()?;
    let created_ts = r.u64()?;
    let deadline = r.u64()?;
    let currency = r.code()?;
    let status = match r.u8()? {
        0 => LienStatus::Active,
        1 => LienStatus::Captured,
        2 => LienStatus::Released,
        3 => LienStatus::Expired,
        s => return r.error(format!("unknown lien status {s}")),
    };
    let flags = r.u8()?;
    r.reserved(6)?;
    let deadline = match flags {
        0 if deadline == 0 => None,
        1 => Some(deadline),
        _ => return r.error("lien flags or deadline are inconsistent"),
    };
    Ok(Lien {
        id,
        account,
        currency,
        amount,
        captured,
        status,
        owner,
        user_data,
        created_seq,
        created_ts,
        deadline,
    })
}

fn get_record(r: &mut Reader) -> Result<WireRecord> {
    let seq = r.u64()?;
    let timestamp = r.u64()?;
    let original_seq = r.u64()?;
    let code = r.u16()?;
    let outcome = r.u8()?;
    r.reserved(1)?;
    let len = r.u32()? as usize;
    let at = r.offset();
    let bytes = r.take(len)?;
    let mut inner = Reader::new(bytes);
    let shift = |e: DecodeError| DecodeError {
        offset: at + e.offset,
        what: e.what,
        code: e.code,
    };
    let command = get_command(&mut inner).map_err(shift)?;
    inner.finish().map_err(shift)?;
    Ok(WireRecord {
        seq,
        timestamp,
        outcome,
        code,
        original_seq,
        command,
    })
}

fn get_statement(r: &mut Reader) -> Result<Statement> {
    let flags = r.u8()?;
    if flags > 0b11 {
        return r.error("statement flags: only bits 0 and 1 are defined");
    }
    r.reserved(3)?;
    let account = r.u128()?;
    let next = r.u64()?;
    let currency = if flags & 1 == 1 {
        Some(get_currency(r)?)
    } else {
        r.reserved(CURRENCY_BYTES)?;
        None
    };
    let n = r.u32()? as usize;
    r.reserved(4)?;
    r.check_count(n, 48 + RECORD_HEAD_BYTES)?;
    let mut lines = Vec::with_capacity(n);
    for _ in 0..n {
        lines.push(StatementLine {
            debit: r.u128()?,
            credit: r.u128()?,
            balance: r.i128()?,
            record: get_record(r)?,
        });
    }
    Ok(Statement {
        account,
        currency,
        lines,
        next_from_seq: (flags & 0b10 != 0).then_some(next),
    })
}

fn get_verification(r: &mut Reader) -> Result<VerifyReport> {
    let finding = |r: &mut Reader| {
        Ok(Finding {
            kind: r.str()?.to_string(),
            subject: r.str()?.to_string(),
            message: r.str()?.to_string(),
        })
    };
    Ok(VerifyReport {
        clean: r.bool()?,
        full: r.bool()?,
        cut_sequence: r.u64()?,
        accounts: r.u64()?,
        accounts_checked_against_log: r.u64()?,
        records_checked_against_index: r.u64()?,
        max_shard_pause_us: r.u64()?,
        duration_ms: r.u64()?,
        currencies: r.list(8, |r| {
            Ok(CurrencyTotal {
                code: r.str()?.to_string(),
                sum: r.str()?.to_string(),
            })
        })?,
        errors: r.list(12, finding)?,
        warnings: r.list(12, finding)?,
    })
}

fn event_state(r: &Reader, s: u8) -> Result<EventState> {
    match EventState::ALL.get(s as usize) {
        Some(&st) => Ok(st),
        None => r.error(format!("unknown event state {s}")),
    }
}

fn step_status(r: &Reader, s: u8) -> Result<StepStatus> {
    Ok(match s {
        0 => StepStatus::Pending,
        1 => StepStatus::Applied,
        2 => StepStatus::Awaiting,
        3 => StepStatus::Confirming,
        4 => StepStatus::Compensated,
        5 => StepStatus::Failed,
        s => return r.error(format!("unknown step status {s}")),
    })
}

fn get_event(r: &mut Reader) -> Result<Event> {
    let id = r.u128()?;
    let spec = get_new_event(r, id)?;
    let fingerprint = r.u64()?;
    let steps = r.list(40, |r| {
        let step = get_step(r)?;
        let status = r.u8()?;
        Ok(StepRecord {
            step,
            status: step_status(r, status)?,
            added_seq: r.u64()?,
            ops: get_ops(r)?,
            undo: get_ops(r)?,
            result: r.boxed_str()?,
            confirm_amount: r.opt(|r| r.u128())?,
            confirmed_seq: r.u64()?,
            error: r.opt(get_failure)?,
        })
    })?;
    let state = r.u8()?;
    let state = event_state(r, state)?;
    Ok(Event {
        spec,
        fingerprint,
        steps,
        state,
        version: r.u64()?,
        created_seq: r.u64()?,
        created_ts: r.u64()?,
        started_seq: r.u64()?,
        started_ts: r.u64()?,
        ended_ts: r.u64()?,
        deadline: r.opt(|r| r.u64())?,
        attempt: r.u16()?,
        retry_at: r.u64()?,
        timed_out: r.bool()?,
        failure: r.opt(get_failure)?,
        compensation_error: r.opt(get_failure)?,
        failed_by: r.opt(|r| Ok((r.u16()?, r.u64()?)))?,
        finish_ops: get_ops(r)?,
    })
}

const _: () = assert!(MAX_CURRENCY_CODE_LEN == 8);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{self, KIND_REQUEST, KIND_RESPONSE};
    use tally_engine::{Command, Error, ErrorCode, Outcome};

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    /// The worked examples of `PROTOCOL.md`, byte for byte.
    #[test]
    fn the_worked_examples_of_protocol_md() {
        let usd = CurrencyCode::parse("USD").unwrap();
        let transfer = Command::from(tally_engine::Transfer::new(100, 1, 2, 5000, usd));
        let mut f = Vec::new();
        frame::encode(
            KIND_REQUEST,
            1,
            &encode_request(&Request::Submit(vec![transfer.clone()])),
            &mut f,
        )
        .unwrap();
        let expected = hex("68 00 00 00 02 01 00 00 01 00 00 00 00 00 00 00
             01 00 00 00 01 00 00 00 01 00 00 00 00 00 00 00
             64 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
             01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
             02 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
             88 13 00 00 00 00 00 00 00 00 00 00 00 00 00 00
             55 53 44 00 00 00 00 00 00 00 00 00 00 00 00 00
             00 00 00 00 00 00 00 00");
        assert_eq!(f, expected);
        assert_eq!(
            decode_request(&f[16..]).unwrap(),
            Request::Submit(vec![transfer])
        );

        let committed = [Outcome::Committed {
            seq: 7,
            timestamp: 1_796_083_200_000_000_000,
        }];
        let mut f = Vec::new();
        let body = encode_response(&Response::Outcomes(Outcomes::from_outcomes(&committed)));
        frame::encode(KIND_RESPONSE, 1, &body, &mut f).unwrap();
        assert_eq!(
            f,
            hex("20 00 00 00 02 02 00 00 01 00 00 00 00 00 00 00
                 01 00 00 00 01 00 00 00 00 00 00 00 00 00 00 00
                 07 00 00 00 00 00 00 00 00 00 0c 83 27 f8 ec 18")
        );

        let rejected = [Outcome::Rejected {
            seq: Some(8),
            error: Error::new(ErrorCode::InsufficientFunds).with_subject(1),
        }];
        let mut f = Vec::new();
        let body = encode_response(&Response::Outcomes(Outcomes::from_outcomes(&rejected)));
        frame::encode(KIND_RESPONSE, 1, &body, &mut f).unwrap();
        assert_eq!(
            f,
            hex("58 00 00 00 02 02 00 00 01 00 00 00 00 00 00 00
                 01 00 00 00 01 00 00 00 01 00 00 00 00 00 00 00
                 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
                 00 00 00 00 02 01 6c 00 00 00 00 00 00 00 00 00
                 08 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
                 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
                 00 00 00 00 00 00 00 00")
        );
        let Response::Outcomes(o) = decode_response(&f[16..]).unwrap() else {
            panic!()
        };
        assert_eq!(o.expand().unwrap(), rejected);
    }

    #[test]
    fn the_fixed_forms_have_their_documented_sizes() {
        let usd = CurrencyCode::parse("USD").unwrap();
        let t = super::super::command::encode_command(&Command::from(tally_engine::Transfer::new(
            1, 2, 3, 4, usd,
        )));
        assert_eq!(t.len(), super::super::command::TRANSFER_BYTES);
        assert!(t.len() <= 128, "a two-line transfer in at most 128 bytes");
        let all_committed: Vec<Outcome> = (0..1_000)
            .map(|i| Outcome::Committed {
                seq: 5 + i,
                timestamp: 9 + i,
            })
            .collect();
        let body = encode_response(&Response::Outcomes(Outcomes::from_outcomes(&all_committed)));
        assert_eq!(body.len(), 32, "all committed: 32 bytes however many");
        let mut w = Vec::new();
        put_account(
            &mut w,
            &WireAccount {
                account: Account::default(),
                currency: Currency {
                    code: usd,
                    scale: 2,
                },
            },
        );
        assert_eq!(w.len(), ACCOUNT_BYTES);
        let mut w = Vec::new();
        put_lien(
            &mut w,
            &Lien {
                id: 1,
                account: 2,
                currency: usd,
                amount: 3,
                captured: 0,
                status: LienStatus::Active,
                owner: 0,
                user_data: 0,
                created_seq: 1,
                created_ts: 1,
                deadline: Some(5),
            },
        );
        assert_eq!(w.len(), LIEN_BYTES);
    }

    /// A small request cannot expand into a large allocation: counts are
    /// checked before anything is reserved, and the decoded size is charged.
    #[test]
    fn limits_are_checked_while_decoding() {
        use tally_engine::ErrorCode;
        // 1,048,575 ticks announced and present: refused by the count alone.
        let mut b = vec![1, 0, 0, 0];
        b.extend_from_slice(&0x000F_FFFFu32.to_le_bytes());
        for _ in 0..0x000F_FFFF {
            b.extend_from_slice(&[11, 0, 0, 0, 0, 0, 0, 0]);
        }
        assert_eq!(
            decode_request(&b).unwrap_err().code,
            ErrorCode::BatchTooLarge
        );
        // A chain of 1,025 releases.
        let release = |w: &mut Vec<u8>| {
            w.push(5);
            w.extend_from_slice(&[0; 7]);
            w.extend_from_slice(&1u128.to_le_bytes());
            w.extend_from_slice(&2u128.to_le_bytes());
        };
        let chain = |ops: u32| {
            let mut b = vec![1, 0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0];
            b.extend_from_slice(&ops.to_le_bytes());
            b.extend_from_slice(&7u128.to_le_bytes());
            for _ in 0..ops {
                release(&mut b);
            }
            b
        };
        assert_eq!(
            decode_request(&chain(1_025)).unwrap_err().code,
            ErrorCode::TooManyOperations
        );
        assert!(decode_request(&chain(1_024)).is_ok());
        // Many chains of releases: 8 MiB of memory is reached long before
        // the frame limit.
        let mut b = vec![1, 0, 0, 0];
        b.extend_from_slice(&200u32.to_le_bytes());
        for c in 0..200u128 {
            b.extend_from_slice(&[9, 0, 0, 0]);
            b.extend_from_slice(&1_000u32.to_le_bytes());
            b.extend_from_slice(&(c + 1).to_le_bytes());
            for _ in 0..1_000 {
                release(&mut b);
            }
        }
        assert!(b.len() < crate::limits::MAX_FRAME_BYTES);
        let e = decode_request(&b).unwrap_err();
        assert_eq!(e.code, ErrorCode::FrameTooLarge, "{e}");
        // What a batch of 1,000 transfers is charged.
        let usd = CurrencyCode::parse("USD").unwrap();
        let q = Request::Submit(
            (1..=1_000)
                .map(|i| Command::from(tally_engine::Transfer::new(i, 1, 2, 3, usd)))
                .collect(),
        );
        let body = encode_request(&q);
        let mut d = decode_request_measured(&body).unwrap();
        assert_eq!(
            d.size,
            1_000 * (std::mem::size_of::<Command>() + 8),
            "the commands and where each lies"
        );
        // The bytes kept for the log are the request's own, command by command.
        let sent = d
            .encoded(body.clone())
            .expect("a submit keeps its commands' bytes");
        assert_eq!(sent.len(), 1_000);
        for i in 0..1_000 {
            let at = 8 + i * tally_engine::codec::command::TRANSFER_BYTES;
            let expected = &body[at..at + tally_engine::codec::command::TRANSFER_BYTES];
            assert_eq!(sent.get(i), Some(expected));
        }
    }

    #[test]
    fn trailing_bytes_and_unknown_types_are_refused_with_their_offset() {
        let mut b = encode_request(&Request::Status);
        b.push(0);
        assert_eq!(decode_request(&b).unwrap_err().offset, 4);
        assert!(decode_request(&[99, 0, 0, 0]).is_err());
        assert!(decode_request(&[9, 1, 0, 0]).is_err(), "reserved bytes");
        assert!(decode_response(&[]).is_err());
    }
}
