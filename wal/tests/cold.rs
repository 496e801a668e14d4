//! The cold tier (issue 14), crossed on purpose: shards keep 64 id records
//! per window, so nearly every id of these workloads has left memory when
//! it is retried, corrected or reused inside a chain. Each retry must keep
//! the first outcome across snapshots, restarts and a crash; the audit
//! (which replays the whole log with every id in memory) must find every
//! logged outcome; a missing or damaged cold tier is refused, naming where.

mod common;

use common::*;
use std::path::Path;
use std::process::Command as Process;
use tally_engine::runtime::ColdIds;
use tally_engine::*;
use tally_wal::{ColdTier, Durable, DurableConfig};

const WINDOW: usize = 64;

fn cold_config(shards: usize) -> DurableConfig {
    DurableConfig {
        cold: Some(ColdTier {
            window: WINDOW,
            run_records: WINDOW,
        }),
        ..config(shards, 64 << 10)
    }
}

fn open_cold(dir: &Path, shards: usize) -> Durable {
    Durable::open(dir, cold_config(shards)).unwrap().0
}

fn round(r: u128) -> Vec<Command> {
    (0..60u128).map(|i| command(r, i)).collect()
}

fn submit(d: &Durable, batch: Vec<Command>) -> Vec<Outcome> {
    d.runtime().submit(batch).unwrap().wait()
}

/// What a retry must say of a command whose first outcome was `first`.
fn as_retry(first: &Outcome) -> Outcome {
    match first {
        Outcome::Committed { seq, .. } => Outcome::Duplicate {
            seq: *seq,
            code: None,
        },
        Outcome::Rejected {
            seq: Some(seq),
            error,
        } => Outcome::Duplicate {
            seq: *seq,
            code: Some(error.code),
        },
        other => other.clone(),
    }
}

fn audit_clean(dir: &Path) {
    let out = Process::new(env!("CARGO_BIN_EXE_tally-audit"))
        .arg(dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("verdict: clean"), "{text}");
}

/// Waits until the cold tier's watermark passes `seq`.
fn wait_covered(d: &Durable, seq: u64) {
    let cold = d.cold().expect("a cold tier");
    for _ in 0..5_000 {
        if cold.covered() >= seq {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    panic!("the cold tier stayed at {} (wanted {seq})", cold.covered());
}

fn entry_ids_in_memory(d: &Durable) -> usize {
    d.runtime()
        .cut(|s| s.id_index(IdSpace::Entry).len())
        .1
        .into_iter()
        .sum()
}

#[test]
fn ids_far_behind_the_window_keep_their_first_outcome_across_snapshots_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let rounds = 30u128;
    let mut first: Vec<Vec<Outcome>> = Vec::new();
    {
        let d = open_cold(dir.path(), 2);
        set_up(&d);
        for r in 0..rounds {
            first.push(submit(&d, round(r)));
            if r >= 8 {
                // A round long gone from memory, retried whole.
                let again = submit(&d, round(r - 8));
                let want: Vec<Outcome> = first[(r - 8) as usize].iter().map(as_retry).collect();
                assert_eq!(again, want, "retrying round {}", r - 8);
            }
            if r == 15 {
                let snap = d.take_snapshot().unwrap().expect("a snapshot");
                assert!(
                    snap.cold_through > 0,
                    "the snapshot left ids to the cold tier"
                );
            }
        }
        let last = d.runtime().next_seq() - 1;
        let _ = submit(&d, vec![Command::Tick]);
        wait_covered(&d, last.saturating_sub(4 * WINDOW as u64));
        let in_memory = entry_ids_in_memory(&d);
        // Two windows per shard, and what the cold tier has not caught up with.
        assert!(
            in_memory <= 2 * 4 * WINDOW + 2 * WINDOW,
            "{in_memory} entry ids in memory"
        );
        let cold = d.cold().unwrap();
        assert!(cold.stats().hits.load(std::sync::atomic::Ordering::Relaxed) > 0);
        assert!(cold.runs() >= 1);

        // A correction of an entry long gone from memory works; a chain
        // reusing such an id as an operation's id is refused.
        let old: Entry = match &round(0)[0] {
            Command::Op(Operation::Entry(e)) => (**e).clone(),
            other => panic!("round 0 starts with an entry: {other:?}"),
        };
        assert!(first[0][0].is_ok());
        let mut fix = Entry::transfer(
            old.id + 9,
            old.lines[1].account,
            old.lines[0].account,
            1,
            usd(),
        );
        fix.corrects = Some(old.id);
        let got = submit(&d, vec![fix.clone().into()]);
        assert!(got[0].is_ok(), "correcting a cold entry: {got:?}");
        let reuse = Command::Chain(Chain {
            id: 77_000_001,
            ops: vec![Operation::Entry(Box::new(Entry::transfer(
                old.id,
                2,
                3,
                1,
                usd(),
            )))],
        });
        let got = submit(&d, vec![reuse]);
        assert!(
            matches!(&got[0], Outcome::Rejected { error, .. } if error.code == ErrorCode::IdAlreadyUsed),
            "{got:?}"
        );
        let mut other = old.clone();
        other.lines[0].amount += 1;
        other.lines[1].amount += 1;
        let got = submit(&d, vec![other.into()]);
        assert!(
            matches!(&got[0], Outcome::Rejected { error, .. } if error.code == ErrorCode::IdReusedWithDifferentContent),
            "{got:?}"
        );
        assert_eq!(
            d.runtime().status(IdSpace::Entry, old.id),
            IdStatus::Committed {
                seq: first[0][0].seq().unwrap()
            }
        );
        d.take_snapshot().unwrap();
        for _ in 0..3 {
            // More after the snapshot: replayed at the restart.
            let r = first.len() as u128;
            first.push(submit(&d, round(r)));
        }
    }
    for restart in 0..2 {
        let d = open_cold(dir.path(), 2);
        for (r, outcomes) in first.iter().enumerate() {
            let want: Vec<Outcome> = outcomes.iter().map(as_retry).collect();
            assert_eq!(
                submit(&d, round(r as u128)),
                want,
                "round {r} after restart {restart}"
            );
        }
        let id = match &round(0)[0] {
            Command::Op(op) => op.id().unwrap().1,
            _ => unreachable!(),
        };
        assert!(matches!(
            d.runtime().status(IdSpace::Entry, id),
            IdStatus::Committed { .. }
        ));
    }
    audit_clean(dir.path());
}

#[test]
fn runs_not_yet_persisted_come_back_from_the_log_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Vec::new();
    {
        let d = open_cold(dir.path(), 1);
        set_up(&d);
        for r in 0..6 {
            first.push(submit(&d, round(r)));
        }
        d.take_snapshot().unwrap();
        for r in 6..14 {
            first.push(submit(&d, round(r)));
        }
        // Runs written after the snapshot, not persisted: a crash now
        // (the process stops without syncing them) leaves them unnamed.
        wait_covered(&d, d.runtime().next_seq() - 1 - WINDOW as u64);
        assert!(d.cold().unwrap().persisted() < d.cold().unwrap().covered());
    }
    let d = open_cold(dir.path(), 1);
    for (r, outcomes) in first.iter().enumerate() {
        let want: Vec<Outcome> = outcomes.iter().map(as_retry).collect();
        assert_eq!(submit(&d, round(r as u128)), want, "round {r}");
    }
    drop(d);
    audit_clean(dir.path());
}

#[test]
fn a_missing_or_damaged_cold_tier_is_refused_naming_where() {
    let dir = tempfile::tempdir().unwrap();
    {
        let d = open_cold(dir.path(), 1);
        set_up(&d);
        for r in 0..10 {
            submit(&d, round(r));
        }
        let snap = d.take_snapshot().unwrap().unwrap();
        assert!(snap.cold_through > 0);
    }
    let cold = dir.path().join("cold");
    let away = dir.path().join("cold-away");
    std::fs::rename(&cold, &away).unwrap();
    // Without it, the ledger would take old ids for new ones: refused.
    let e = Durable::open(dir.path(), cold_config(1))
        .err()
        .expect("refused");
    assert!(e.to_string().contains("cold_tier_missing"), "{e}");
    std::fs::rename(&away, &cold).unwrap();
    let run = std::fs::read_dir(&cold)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "run"))
        .unwrap();
    let mut bytes = std::fs::read(&run).unwrap();
    bytes[20] ^= 0x40;
    std::fs::write(&run, &bytes).unwrap();
    let e = Durable::open(dir.path(), cold_config(1))
        .err()
        .expect("refused");
    let text = e.to_string();
    assert!(
        text.contains("bad_cold_run") && text.contains(".run"),
        "{text}"
    );
    bytes[20] ^= 0x40;
    std::fs::write(&run, &bytes).unwrap();
    let d = open_cold(dir.path(), 1);
    assert!(matches!(submit(&d, round(0))[0], Outcome::Duplicate { .. }));
}
