//! Domain types of the log and its history, as the wire carries them.

use super::message::{StatementLine, WireRecord};
use tally_wal::follow::OwnedRecord;
use tally_wal::history::Posted;

/// A record read from the log, as a `RECORD`.
pub fn wire_record(r: &OwnedRecord) -> WireRecord {
    WireRecord {
        seq: r.header.seq,
        timestamp: r.header.timestamp,
        outcome: r.header.outcome,
        code: r.header.code,
        original_seq: r.header.original_seq,
        command: r.command.clone(),
    }
}

/// A posting of a statement, as a `LINE`.
pub fn statement_line(p: &Posted) -> StatementLine {
    StatementLine {
        record: wire_record(&p.record),
        debit: p.debit,
        credit: p.credit,
        balance: p.balance,
    }
}
