//! The offline audit: verify a data directory's log (framing, checksums, hash
//! chain, sequence continuity, balanced entries), replay it through the
//! engine (every outcome must match what was logged), check conservation per
//! currency and the ledger's invariants, and optionally produce an account's
//! statement. Read-only: it never writes to the directory.

use crate::format::OUTCOME_DUPLICATE;
use crate::problem::{file_label, Problem};
use crate::scan;
use serde::Serialize;
use std::path::Path;
use tally_engine::amount::{format_amount, format_balance};
use tally_engine::chain::Operation;
use tally_engine::{Command, Ledger, Side};

#[derive(Serialize, Debug)]
pub struct CurrencySum {
    pub code: String,
    pub scale: u8,
    /// Sum of all balances in this currency: must be "0".
    pub sum: String,
}

#[derive(Serialize, Debug)]
pub struct StatementLine {
    pub sequence: u64,
    pub timestamp: u64,
    /// The entry (or lien, or chain) id, as a UUID.
    pub id: String,
    pub kind: &'static str,
    pub debit: String,
    pub credit: String,
    pub balance: String,
    pub reserved: String,
    pub available: String,
    pub version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corrects: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

#[derive(Serialize, Debug)]
pub struct Report {
    pub data_dir: String,
    pub records: u64,
    pub last_sequence: u64,
    pub segments: usize,
    pub accounts: usize,
    pub currencies: Vec<CurrencySum>,
    pub snapshots_checked: usize,
    pub problems: Vec<Problem>,
    /// Not corruption: e.g. a torn tail that the next start will truncate.
    pub warnings: Vec<Problem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement: Option<Vec<StatementLine>>,
    pub clean: bool,
}

/// Audits `dir`. `Err` means the input could not be read at all.
pub fn audit(dir: &Path, account: Option<u128>) -> Result<Report, String> {
    let meta = std::fs::metadata(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    audit_on(&crate::storage::RealDisk, dir, account)
}

/// [`audit`] on any storage (the simulator audits its disk).
pub fn audit_on(
    store: &dyn crate::storage::Storage,
    dir: &Path,
    account: Option<u128>,
) -> Result<Report, String> {
    scan::segment_files(store, dir).map_err(|p| p.to_string())?;
    let mut ledger = Ledger::new(1);
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut statement = account.map(|_| Vec::new());
    // Every snapshot present must equal the replayed state at its sequence.
    let mut snapshots = std::collections::BTreeMap::new();
    for (_, path) in crate::snapshot::list(store, dir) {
        match crate::snapshot::read(store, &path) {
            Ok((info, image)) => {
                snapshots.insert(info.last_seq, (info, image));
            }
            Err(p) => problems.push(p),
        }
    }
    let mut snapshots_checked = 0;
    // With the early segments archived, start from the newest snapshot that
    // covers what is missing (that snapshot is then trusted, and said so).
    let mut start = None;
    if scan::segment_files(store, dir)
        .map_err(|p| p.to_string())?
        .first()
        .is_some_and(|(i, _)| *i > 0)
    {
        let first = crate::durable::archived_start(store, dir, u64::MAX)
            .ok()
            .flatten();
        let base = first.and_then(|f| snapshots.range(f.first_seq.saturating_sub(1)..).next());
        if let (Some(f), Some((_, (info, image)))) = (first, base) {
            {
                // An audit reads the log alone: it cannot start from a
                // snapshot that left id records to the cold tier.
                crate::durable::check_cold(info, None).map_err(|p| p.to_string())?;
                ledger = Ledger::import(image, 1)
                    .map_err(|m| format!("snapshot {}: {m}", info.path.display()))?;
                let msg = format!("segments before sequence {} were archived: the audit starts from the snapshot at {}", f.first_seq, info.last_seq);
                warnings.push(Problem::new("archived", "", 0, f.first_seq, msg));
                start = first;
            }
        }
        // Otherwise nothing covers the removed segments: the scan from
        // genesis reports them missing.
    }
    let from = ledger.sequencer().next_seq();
    let scanned = scan::scan_pipelined(
        store,
        dir,
        start,
        u64::MAX,
        |_| {},
        |rec| {
            if rec.header.seq < from {
                return Ok(());
            }
            let before = account.and_then(|a| ledger.account(a));
            crate::durable::replay_record(&mut ledger, rec)?;
            if let Some((info, image)) = snapshots.get(&rec.header.seq) {
                let name = file_label(&info.path);
                if info.chain != rec.header.chain {
                    return Err(crate::durable::chain_mismatch(info));
                }
                if !same_state(&ledger.export(), image, info.cold_through) {
                    let msg = "the snapshot's state differs from the state the log replays to";
                    return Err(Problem::new(
                        "snapshot_mismatch",
                        name,
                        128,
                        info.last_seq,
                        msg,
                    ));
                }
                snapshots_checked += 1;
            }
            if let (Some(id), Some(lines)) = (account, statement.as_mut()) {
                let after = ledger.account(id);
                let changed = before.map(|b| (b.balance(), b.account.reserved))
                    != after.map(|a| (a.balance(), a.account.reserved));
                if changed && rec.header.outcome != OUTCOME_DUPLICATE {
                    if let Some(a) = after {
                        lines.push(statement_line(
                            &rec.command,
                            id,
                            rec.header.seq,
                            rec.header.timestamp,
                            &a,
                        ));
                    }
                }
            }
            Ok(())
        },
    );
    let end = match scanned {
        Ok(end) => Some(end),
        Err(p) => {
            problems.push(p);
            None
        }
    };
    if let Some(t) = end.as_ref().and_then(|e| e.torn.clone()) {
        let name = file_label(&t.file);
        let msg = format!(
            "incomplete last record (never acknowledged; the next start truncates it): {}",
            t.reason
        );
        warnings.push(Problem::new(
            "torn_tail",
            name,
            t.offset as u64,
            t.sequence,
            msg,
        ));
    }
    let mut currencies = Vec::new();
    for (code, sum) in ledger.balance_sums() {
        let scale = ledger.currency(code).map_or(0, |c| c.scale);
        if sum != 0 {
            let msg = format!(
                "{code} balances sum to {} instead of zero",
                format_balance(sum, scale)
            );
            problems.push(Problem::new(
                "conservation",
                "",
                0,
                ledger.sequencer().next_seq() - 1,
                msg,
            ));
        }
        currencies.push(CurrencySum {
            code: code.to_string(),
            scale,
            sum: format_balance(sum, scale),
        });
    }
    for shard in ledger.shards() {
        for p in shard.check_invariants() {
            problems.push(Problem::new(
                "invariant",
                "",
                0,
                ledger.sequencer().next_seq() - 1,
                p,
            ));
        }
    }
    for (seq, (info, _)) in &snapshots {
        if end.as_ref().is_some_and(|e| *seq > e.last_seq) {
            let name = file_label(&info.path);
            problems.push(Problem::new(
                "snapshot_mismatch",
                name,
                16,
                *seq,
                "the snapshot is past the end of the log",
            ));
        }
    }
    let accounts = ledger.shards().iter().map(|s| s.accounts().len()).sum();
    let (records, last_sequence, segments) = match &end {
        Some(e) => (e.records, e.last_seq, e.segments.len()),
        None => (
            ledger.sequencer().next_seq() - 1,
            ledger.sequencer().next_seq() - 1,
            0,
        ),
    };
    Ok(Report {
        data_dir: dir.display().to_string(),
        records,
        last_sequence,
        segments,
        accounts,
        currencies,
        snapshots_checked,
        clean: problems.is_empty(),
        problems,
        warnings,
        statement,
    })
}

fn statement_line(
    cmd: &Command,
    account: u128,
    seq: u64,
    timestamp: u64,
    after: &tally_engine::AccountView,
) -> StatementLine {
    let scale = after.currency.scale;
    let (mut debit, mut credit) = (0u128, 0u128);
    // A change without an operation naming the account: opening it, a state
    // change, or a lien reaching its deadline.
    let default_kind = match cmd {
        Command::CreateAccount(_) => "account_opened",
        Command::SetAccountState { .. } => "state_changed",
        _ => "lien_expired",
    };
    let (mut id, mut kind, mut corrects, mut reference) = (0u128, default_kind, None, None);
    for op in cmd.ops() {
        // A transfer reads as the entry it means (`Operation::as_entry`).
        let entry = op.as_entry();
        match (op, entry.as_deref()) {
            (_, Some(e)) => {
                let mine: Vec<_> = e.lines.iter().filter(|l| l.account == account).collect();
                if !mine.is_empty() {
                    id = e.id;
                    kind = if e.corrects.is_some() {
                        "correction"
                    } else {
                        "entry"
                    };
                    corrects = e.corrects.map(tally_engine::id::format_uuid);
                    reference = e.reference.as_deref().map(str::to_string);
                }
                for l in mine {
                    match l.side {
                        Side::Debit => debit += l.amount,
                        Side::Credit => credit += l.amount,
                    }
                }
            }
            (Operation::CaptureLien(c), _) => {
                if c.account == account {
                    (id, kind) = (c.entry_id, "lien_capture");
                    debit += c.total().unwrap_or(0);
                }
                for &(to, amount) in &c.credits {
                    if to == account {
                        (id, kind) = (c.entry_id, "lien_capture");
                        credit += amount;
                    }
                }
            }
            (Operation::CreateLien(c), _) if c.account == account => {
                (id, kind) = (c.id, "lien_created")
            }
            (Operation::ReleaseLien(r), _) if r.account == account => {
                (id, kind) = (r.lien, "lien_released")
            }
            _ => {}
        }
    }
    StatementLine {
        sequence: seq,
        timestamp,
        id: if id == 0 {
            String::new()
        } else {
            tally_engine::id::format_uuid(id)
        },
        kind,
        debit: format_amount(debit, scale),
        credit: format_amount(credit, scale),
        balance: format_balance(after.balance(), scale),
        reserved: format_amount(after.account.reserved, scale),
        available: format_balance(after.available(), scale),
        version: after.account.version,
        corrects,
        reference,
    }
}

/// The human report.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    s.push_str(&format!("data directory: {}\n", r.data_dir));
    s.push_str(&format!(
        "records: {} in {} segment(s), last sequence {}\n",
        r.records, r.segments, r.last_sequence
    ));
    s.push_str(&format!("accounts: {}\n", r.accounts));
    for c in &r.currencies {
        s.push_str(&format!(
            "currency {} (scale {}): sum of balances {}\n",
            c.code, c.scale, c.sum
        ));
    }
    s.push_str(&format!("snapshots checked: {}\n", r.snapshots_checked));
    if let Some(lines) = &r.statement {
        s.push_str("statement:\n");
        s.push_str(&format!(
            "  {:>8}  {:<14} {:<36}  {:>14} {:>14} {:>14} {:>14}\n",
            "seq", "kind", "id", "debit", "credit", "balance", "available"
        ));
        for l in lines {
            s.push_str(&format!(
                "  {:>8}  {:<14} {:<36}  {:>14} {:>14} {:>14} {:>14}{}\n",
                l.sequence,
                l.kind,
                l.id,
                l.debit,
                l.credit,
                l.balance,
                l.available,
                l.corrects
                    .as_ref()
                    .map(|c| format!("  corrects {c}"))
                    .unwrap_or_default()
            ));
        }
    }
    for w in &r.warnings {
        s.push_str(&format!("warning: {w}\n"));
    }
    for p in &r.problems {
        s.push_str(&format!("PROBLEM: {p}\n"));
    }
    s.push_str(if r.clean {
        "verdict: clean\n"
    } else {
        "verdict: PROBLEMS FOUND\n"
    });
    s
}

/// Whether a snapshot's image is the replayed state: equal, except that a
/// snapshot with a cold tier (`cold_through` > 0) holds only some of the id
/// records decided at or before `cold_through` (each as replayed) and every
/// one after it.
fn same_state(
    replayed: &tally_engine::image::LedgerImage,
    snapshot: &tally_engine::image::LedgerImage,
    cold_through: u64,
) -> bool {
    if cold_through == 0 {
        return replayed == snapshot;
    }
    let strip = |i: &tally_engine::image::LedgerImage| tally_engine::image::LedgerImage {
        ids: Vec::new(),
        ..i.clone()
    };
    if strip(replayed) != strip(snapshot) {
        return false;
    }
    let all: std::collections::HashSet<_> = replayed.ids.iter().collect();
    let kept: std::collections::HashSet<_> = snapshot.ids.iter().collect();
    kept.is_subset(&all)
        && replayed
            .ids
            .iter()
            .all(|r| r.3 <= cold_through || kept.contains(r))
}
