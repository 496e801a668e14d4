//! Record bodies: a command, serialized with rkyv and validated when read.

use rkyv::rancor;
use rkyv::util::AlignedVec;
use tally_engine::{Command, Outcome};

use crate::format::{OUTCOME_COMMITTED, OUTCOME_DUPLICATE, OUTCOME_REJECTED};

/// Serializes a command for the log.
pub fn encode(cmd: &Command) -> Result<AlignedVec, String> {
    rkyv::to_bytes::<rancor::Error>(cmd).map_err(|e| format!("serializing a command: {e}"))
}

/// Serializes a command into `buf` (cleared first), reusing its allocation.
pub fn encode_into(cmd: &Command, mut buf: AlignedVec) -> Result<AlignedVec, String> {
    buf.clear();
    rkyv::api::high::to_bytes_in::<_, rancor::Error>(cmd, buf)
        .map_err(|e| format!("serializing a command: {e}"))
}

/// Validates and deserializes a record body (untrusted bytes).
pub fn decode(body: &[u8]) -> Result<Command, String> {
    // rkyv needs the root aligned; bodies are 16-aligned in a segment
    // reader's (16-aligned) buffer, but copy if a caller hands us something
    // else.
    if (body.as_ptr() as usize) % 16 != 0 {
        let mut v = AlignedVec::<16>::with_capacity(body.len());
        v.extend_from_slice(body);
        return rkyv::from_bytes::<Command, rancor::Error>(&v)
            .map_err(|e| format!("invalid record body: {e}"));
    }
    rkyv::from_bytes::<Command, rancor::Error>(body)
        .map_err(|e| format!("invalid record body: {e}"))
}

/// An outcome as stored in a record header: (kind, code, original seq).
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
    use tally_engine::*;

    #[test]
    fn round_trip_and_reject_garbage() {
        let usd = CurrencyCode::parse("USD").unwrap();
        let cmds: Vec<Command> = vec![
            Entry::transfer(1, 2, 3, 4, usd)
                .with_reference("r")
                .correcting(9)
                .into(),
            Command::Chain(Chain {
                id: 5,
                ops: vec![Operation::CreateLien(CreateLien {
                    id: 6,
                    account: 2,
                    currency: usd,
                    amount: 7,
                    expires_in_ns: Some(8),
                    owner: 9,
                    user_data: 10,
                })],
            }),
            Command::CreateAccount(NewAccount {
                id: 3,
                currency: usd,
                policy: BalancePolicy::OverdraftLimit(u128::MAX >> 2),
                user_data: 1,
            }),
            Command::Tick,
        ];
        for c in cmds {
            let bytes = encode(&c).unwrap();
            assert_eq!(decode(&bytes).unwrap(), c);
            let reused = encode_into(&c, encode(&Command::Tick).unwrap()).unwrap();
            assert_eq!(&reused[..], &bytes[..]);
            let mut unaligned = vec![0u8; bytes.len() + 1];
            unaligned[1..].copy_from_slice(&bytes);
            assert_eq!(decode(&unaligned[1..]).unwrap(), c);
        }
        assert!(decode(&[0xffu8; 64]).is_err());
        assert!(decode(&[]).is_err());
    }
}
