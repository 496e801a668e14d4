//! Record bodies: a batch's commands in the wire's `COMMAND` layout
//! (`tally_engine::codec`: the bytes a client sent, verbatim, or the
//! encoder's for commands that came without bytes), then the outcomes of
//! those that did not commit. Pure functions; bodies read back are
//! untrusted bytes and checked to the last byte.

use crate::format::{
    CommandHeader, RecordHeader, EXCEPTION_BYTES, OUTCOME_COMMITTED, OUTCOME_DUPLICATE,
    OUTCOME_REJECTED,
};
use tally_engine::codec::{self, Reader, Writer};
use tally_engine::{Command, Outcome};

/// One sequenced command and what became of it.
#[derive(Clone, Copy, Debug)]
pub struct Item<'a> {
    pub command: &'a Command,
    pub seq: u64,
    pub timestamp: u64,
    pub outcome: &'a Outcome,
    /// The command's wire bytes as the client sent them, when known: they
    /// are stored verbatim (they decode to `command`).
    pub wire: Option<&'a [u8]>,
}

/// Appends `items` (consecutive sequences and timestamps) as a record body
/// to `body`; returns the number of exceptions written.
pub fn encode_batch(items: &[Item], body: &mut Vec<u8>) -> u32 {
    for it in items {
        put_item(body, it);
    }
    put_exceptions(items, body)
}

/// Appends an item's command to a record body: the client's bytes verbatim
/// when known, its encoding otherwise.
pub fn put_item(body: &mut Vec<u8>, it: &Item) {
    match it.wire {
        Some(w) => {
            debug_assert_eq!(
                codec::decode_command(w).ok().as_ref(),
                Some(it.command),
                "a command's wire bytes decode to it"
            );
            body.extend_from_slice(w);
        }
        None => codec::put_command(body, it.command),
    }
}

/// Appends the exceptions of `items` (those that did not commit), after
/// their commands; returns how many.
pub fn put_exceptions(items: &[Item], body: &mut Vec<u8>) -> u32 {
    let mut exceptions = 0;
    for (i, it) in items.iter().enumerate() {
        let (outcome, code, original) = outcome_fields(it.outcome);
        if outcome == OUTCOME_COMMITTED {
            continue;
        }
        body.u32(i as u32);
        body.u8(outcome);
        body.u8(0);
        body.u16(code);
        body.u64(original);
        exceptions += 1;
    }
    exceptions
}

/// The encoded size of one command (what it adds to a record body).
pub fn command_len(c: &Command) -> usize {
    let mut v = Vec::with_capacity(128);
    codec::put_command(&mut v, c);
    v.len()
}

/// Decodes a record body into its commands, each with its own header.
pub fn decode_batch(
    h: &RecordHeader,
    body: &[u8],
) -> Result<Vec<(CommandHeader, Command)>, String> {
    let count = h.count as usize;
    if count == 0 {
        return Err("a record with no command".into());
    }
    let last = u64::from(h.count) - 1;
    if h.first_seq.checked_add(last).is_none() || h.first_timestamp.checked_add(last).is_none() {
        return Err("sequence numbers or timestamps overflow".into());
    }
    let mut r = Reader::new(body);
    r.check_count(count, codec::command::MIN_COMMAND_BYTES)
        .map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(count);
    for i in 0..count as u64 {
        let at = r.offset();
        let command = match codec::transfer_in_place(r.rest()) {
            Some(t) => {
                r.take(codec::command::TRANSFER_BYTES)
                    .map_err(|e| e.to_string())?;
                Command::Op(tally_engine::Operation::Transfer(t))
            }
            None => codec::get_command(&mut r).map_err(|e| format!("command {i}: {e}"))?,
        };
        out.push((
            CommandHeader {
                seq: h.first_seq + i,
                timestamp: h.first_timestamp + i,
                outcome: OUTCOME_COMMITTED,
                code: 0,
                original_seq: 0,
                chain: h.chain,
                last_in_record: i + 1 == count as u64,
                body_len: (r.offset() - at) as u32,
            },
            command,
        ));
    }
    let n = h.exceptions as usize;
    if n > count || r.remaining() != n * EXCEPTION_BYTES {
        return Err(format!(
            "{n} exceptions do not match the {} bytes after the commands",
            r.remaining()
        ));
    }
    let mut last = None;
    for _ in 0..n {
        let e = |e: codec::DecodeError| e.to_string();
        let index = r.u32().map_err(e)? as usize;
        let outcome = r.u8().map_err(e)?;
        r.reserved(1).map_err(e)?;
        let code = r.u16().map_err(e)?;
        let original = r.u64().map_err(e)?;
        if index >= count || last.is_some_and(|l| index <= l) {
            return Err(format!("exception index {index} out of order or range"));
        }
        last = Some(index);
        let ok = match outcome {
            OUTCOME_DUPLICATE => original != 0,
            OUTCOME_REJECTED => code != 0 && original == 0,
            _ => false,
        };
        if !ok {
            return Err(format!(
                "exception {index}: outcome {outcome}, code {code}, original {original} is not one the log writes"
            ));
        }
        let head = &mut out[index].0;
        (head.outcome, head.code, head.original_seq) = (outcome, code, original);
    }
    Ok(out)
}

/// An outcome as stored in a record: (kind, code, original seq).
pub fn outcome_fields(o: &Outcome) -> (u8, u16, u64) {
    match o {
        Outcome::Committed { .. } => (OUTCOME_COMMITTED, 0, 0),
        Outcome::Duplicate { seq, code } => (OUTCOME_DUPLICATE, code.map_or(0, |c| c as u16), *seq),
        Outcome::Rejected { error, .. } => (OUTCOME_REJECTED, error.code as u16, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{genesis, KIND_BATCH};
    use tally_engine::*;

    #[test]
    fn batches_round_trip_and_garbage_is_refused() {
        let usd = CurrencyCode::parse("USD").unwrap();
        let cmds: Vec<Command> = vec![
            Entry::transfer(1, 2, 3, 4, usd)
                .with_reference("r")
                .correcting(9)
                .into(),
            Entry::transfer(2, 2, 3, 4, usd).into(),
            Command::CreateAccount(NewAccount {
                id: 3,
                currency: usd,
                policy: BalancePolicy::OverdraftLimit(u128::MAX >> 2),
                user_data: 1,
            }),
            Command::Tick,
        ];
        let outcomes = [
            Outcome::Committed {
                seq: 5,
                timestamp: 50,
            },
            Outcome::Duplicate { seq: 2, code: None },
            Outcome::Rejected {
                seq: Some(7),
                error: ErrorCode::InsufficientFunds.into(),
            },
            Outcome::Committed {
                seq: 8,
                timestamp: 53,
            },
        ];
        let items: Vec<Item> = cmds
            .iter()
            .zip(&outcomes)
            .enumerate()
            .map(|(i, (command, outcome))| Item {
                command,
                seq: 5 + i as u64,
                timestamp: 50 + i as u64,
                outcome,
                wire: None,
            })
            .collect();
        let mut body = Vec::new();
        let exceptions = encode_batch(&items, &mut body);
        assert_eq!(exceptions, 2);
        let mut h = RecordHeader {
            body_len: body.len() as u32,
            kind: KIND_BATCH,
            first_seq: 5,
            first_timestamp: 50,
            count: 4,
            exceptions,
            watermark: 4,
            chain: [0; 32],
            crc: 0,
        };
        h.seal(&genesis(), &body);
        let back = decode_batch(&h, &body).unwrap();
        assert_eq!(back.len(), 4);
        for (i, ((head, c), o)) in back.iter().zip(&outcomes).enumerate() {
            assert_eq!(c, &cmds[i]);
            assert_eq!((head.seq, head.timestamp), (5 + i as u64, 50 + i as u64));
            assert_eq!(
                (head.outcome, head.code, head.original_seq),
                outcome_fields(o)
            );
            assert_eq!(head.body_len as usize, command_len(c));
            assert_eq!(head.last_in_record, i == 3);
        }
        assert!(decode_batch(&h, &body[..body.len() - 1]).is_err());
        let mut more = h;
        more.count = 5;
        assert!(decode_batch(&more, &body).is_err());
        assert!(decode_batch(&h, &[0xff; 64]).is_err());
        let mut zero = h;
        zero.count = 0;
        assert!(decode_batch(&zero, &[]).is_err());
    }
}
