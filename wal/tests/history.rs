//! The history index is fed two ways: while running, from the log writer's
//! own batches as each group becomes durable; at start, from the records
//! recovery decodes. Both must give the same statements, lookups and
//! records, and both must agree with the ledger's balances. (Account 1,
//! unrestricted, pays the entries the lookups look for, so they all commit.)

mod common;

use common::*;
use std::path::Path;
use tally_engine::*;
use tally_wal::history::{FindKey, History, PageLimits};
use tally_wal::Durable;

/// Everything the history answers, in comparable form.
#[derive(Debug, PartialEq, Eq)]
struct Answers {
    next_seq: u64,
    /// Per account: (seq, debit, credit, balance) of every posting.
    statements: Vec<Vec<(u64, u128, u128, i128)>>,
    balances: Vec<i128>,
    /// (seq, outcome, code, original, command) of every record.
    records: Vec<(u64, u8, u16, u64, String)>,
    found: Vec<Vec<u64>>,
}

/// Opened with a memory tail of `tail` entries (0: all in memory).
fn open_with_tail(dir: &Path, tail: usize) -> Durable {
    let mut c = config(2, 64 << 10);
    c.history_tail = tail;
    // Small pages: statements are read in many pages.
    c.history = Some(PageLimits {
        max_items: 37,
        max_bytes: 16 << 10,
        record_overhead: 256,
    });
    Durable::open(dir, c).unwrap().0
}

fn statement(h: &History, account: u128) -> Vec<(u64, u128, u128, i128)> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let (page, next) = h.statement(account, from, 1_000).unwrap();
        out.extend(
            page.iter()
                .map(|p| (p.record.header.seq, p.debit, p.credit, p.balance)),
        );
        match next {
            Some(n) => from = n,
            None => return out,
        }
    }
}

fn answers(d: &Durable) -> Answers {
    let h = d.history().expect("asked for");
    let last = d.runtime().next_seq() - 1;
    assert!(
        h.wait_indexed(
            last,
            std::time::Instant::now() + std::time::Duration::from_secs(10)
        ),
        "indexed up to {last}"
    );
    let accounts: Vec<u128> = (1..2 + WALLETS).collect();
    let mut records = Vec::new();
    let mut from = 1;
    loop {
        let page = h.records(from, 1_000).unwrap();
        let Some(r) = page.last() else { break };
        from = r.header.seq + 1;
        records.extend(page.iter().map(|r| {
            let hd = &r.header;
            let cmd = format!("{:?}", r.command);
            (hd.seq, hd.outcome, hd.code, hd.original_seq, cmd)
        }));
    }
    let keys = [
        FindKey::Reference("rent".into()),
        FindKey::Reference("none".into()),
        FindKey::EntryUserData(7),
        FindKey::AccountUserData(3),
    ];
    let found = keys
        .iter()
        .map(|k| {
            let hits = h.find(k, 0, u64::MAX, 1_000).unwrap();
            hits.iter().map(|r| r.header.seq).collect()
        })
        .collect();
    Answers {
        next_seq: h.next_seq(),
        statements: accounts.iter().map(|&a| statement(h, a)).collect(),
        balances: accounts
            .iter()
            .map(|&a| h.balance_at(a, last).unwrap())
            .collect(),
        records,
        found,
    }
}

fn workload(d: &Durable) {
    let rt = d.runtime();
    rt.submit(setup()).unwrap().wait();
    for r in 0..12u128 {
        let mut batch: Vec<Command> = (0..150).map(|i| command(r, i)).collect();
        // Entries the lookups find, and a duplicate of an earlier command.
        let id = (r + 100) << 40;
        batch.push(
            Entry::transfer(id, 1, 3, 5, usd())
                .with_reference("rent")
                .into(),
        );
        let mut e = Entry::transfer(id + 1, 1, 4, 6, usd());
        e.user_data = 7;
        batch.push(e.into());
        batch.push(command(r, 3));
        // Refused before sequencing (a zero amount): never logged or indexed.
        batch.push(Entry::transfer(id + 2, 1, 3, 0, usd()).into());
        rt.submit(batch).unwrap().wait();
    }
}

#[test]
fn the_index_fed_by_the_writer_matches_the_one_recovery_builds() {
    fed_and_recovered(0);
}

/// The same with a tail of 50 entries: nearly everything is in runs on
/// storage, written while the workload runs and read back by every query.
#[test]
fn the_index_in_runs_answers_as_the_one_in_memory() {
    let in_runs = fed_and_recovered(50);
    let in_memory = fed_and_recovered(0);
    assert_eq!(in_runs, in_memory);
}

fn fed_and_recovered(tail: usize) -> Answers {
    let dir = tempfile::tempdir().unwrap();
    let live = {
        let d = open_with_tail(dir.path(), tail);
        workload(&d);
        let a = answers(&d);
        // The history holds batches against the in-flight limit until it has
        // indexed them, then gives the reservations back.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while d.runtime().inflight() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(d.runtime().inflight(), 0, "every reservation is given back");
        // The index agrees with the ledger itself.
        for (i, account) in (1..2 + WALLETS).enumerate() {
            let view = d.runtime().account(account).expect("exists");
            assert_eq!(a.balances[i], view.account.balance(), "account {account}");
            let last = a.statements[i].last().map_or(0, |p| p.3);
            assert_eq!(last, view.account.balance(), "statement of {account}");
        }
        assert!(a.records.len() > 1_500);
        // Rejections and duplicates are in the records, not in statements.
        assert!(a
            .records
            .iter()
            .any(|r| r.1 != tally_wal::format::OUTCOME_COMMITTED));
        assert_eq!(a.found[0].len(), 12, "every \"rent\" entry");
        assert_eq!(a.found[1].len(), 0);
        assert_eq!(a.found[2].len(), 12, "every entry with user data 7");
        assert_eq!(a.found[3].len(), 1, "the account with user data 3");
        // Its memory is counted: every posting at least, and each structure
        // that holds something says so.
        let h = d.history().expect("asked for");
        let m = h.memory();
        let postings: usize = a.statements.iter().map(Vec::len).sum();
        if tail == 0 {
            assert!(m.postings >= postings * 24, "{m:?} for {postings} postings");
            assert!(m.references > 0 && m.user_data > 0 && m.marks > 0, "{m:?}");
            assert_eq!(h.runs(), 0);
        } else {
            wait_for_runs(h, postings * 24 / 4);
            let m = h.memory();
            // How many depends on how far behind the sealer fell.
            assert!(h.runs() >= 2, "{} runs", h.runs());
            assert!(m.runs > 0 && m.marks > 0, "{m:?}");
            assert!(
                m.postings + m.references + m.user_data < postings * 24 / 2,
                "most postings left memory: {m:?} for {postings} postings"
            );
        }
        d.shutdown();
        a
    };
    let reopened = open_with_tail(dir.path(), tail);
    let recovered = answers(&reopened);
    assert_eq!(live, recovered);
    let h = reopened.history().expect("asked for");
    let m = h.memory();
    let postings: usize = recovered.statements.iter().map(Vec::len).sum();
    if tail == 0 {
        assert!(m.postings >= postings * 24, "recovery counts too: {m:?}");
    } else {
        assert!(h.runs() >= 2, "the runs are used again: {}", h.runs());
        // Balances at every sequence agree with a fold of the statements.
        for (i, account) in (1..2 + WALLETS).enumerate() {
            let lines = &recovered.statements[i];
            let mut at = 0;
            for seq in 1..recovered.next_seq {
                while at < lines.len() && lines[at].0 <= seq {
                    at += 1;
                }
                let expected = at.checked_sub(1).map_or(0, |j| lines[j].3);
                assert_eq!(
                    h.balance_at(account, seq).unwrap(),
                    expected,
                    "{account} at {seq}"
                );
            }
        }
    }
    // And it keeps going from where recovery left off.
    reopened
        .runtime()
        .submit(vec![Entry::transfer(9 << 60, 1, 3, 1, usd())
            .with_reference("rent")
            .into()])
        .unwrap()
        .wait();
    let more = answers(&reopened);
    assert_eq!(more.found[0].len(), 13);
    assert_eq!(more.next_seq, recovered.next_seq + 1);
    recovered
}

/// Waits until the sealer has written what was frozen.
fn wait_for_runs(h: &History, bytes: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while h.memory().postings > bytes && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// With the early segments archived behind a snapshot, the index restarts
/// after the snapshot from its balances: statements still end at the
/// ledger's balances, and what was archived is not served.
#[test]
fn after_archiving_the_index_starts_from_the_snapshot() {
    after_archiving(0);
}

/// The same with the history in runs that the archived segments leave
/// behind or still join.
#[test]
fn after_archiving_the_runs_still_join_the_log() {
    after_archiving(50);
}

fn after_archiving(tail: usize) {
    let dir = tempfile::tempdir().unwrap();
    {
        let d = open_with_tail(dir.path(), tail);
        workload(&d);
        d.take_snapshot().unwrap().expect("a snapshot");
        let removed = d.archive(None).unwrap();
        assert!(
            !removed.is_empty(),
            "small segments: some are wholly before the snapshot"
        );
        d.runtime()
            .submit(vec![Entry::transfer(7 << 60, 1, 3, 11, usd())
                .with_reference("rent")
                .into()])
            .unwrap()
            .wait();
        d.shutdown();
    }
    let d = open_with_tail(dir.path(), tail);
    let h = d.history().expect("asked for").clone();
    let first = h.first_seq();
    assert!(first > 1, "the index starts after the snapshot");
    let last = d.runtime().next_seq() - 1;
    for account in 1..2 + WALLETS {
        let view = d.runtime().account(account).expect("exists");
        assert_eq!(
            h.balance_at(account, last).unwrap(),
            view.account.balance(),
            "account {account}"
        );
        let lines = statement(&h, account);
        assert!(lines.iter().all(|l| l.0 >= first));
        if let Some(l) = lines.last() {
            assert_eq!(l.3, view.account.balance(), "statement of {account}");
        }
    }
    // The entry written after the snapshot is found; older ones were archived.
    let found = h
        .find(&FindKey::Reference("rent".into()), 0, u64::MAX, 1_000)
        .unwrap();
    assert_eq!(found.len(), 1);
}

/// Files under `history/` whose names start with `prefix`.
fn history_files(dir: &Path, prefix: &str) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir.join("history"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    out.sort();
    out
}

/// Runs the workload with a 50-entry tail and waits for its runs; what the
/// history answered.
fn sealed_workload(dir: &Path) -> Answers {
    let d = open_with_tail(dir, 50);
    workload(&d);
    let a = answers(&d);
    wait_for_runs(d.history().unwrap(), 8 << 10);
    d.shutdown();
    a
}

/// Damage in a run is reported with its file and offset, by the query that
/// reads it and by the next open; a damaged balances file stops the open;
/// removing `history/` makes the next start index the log again, with the
/// same answers.
#[test]
fn a_damaged_run_is_reported_and_history_can_be_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let before = sealed_workload(dir.path());
    let runs = history_files(dir.path(), "hist-");
    let balances = history_files(dir.path(), "balances-");
    assert!(runs.len() >= 2, "{runs:?}");
    assert_eq!(
        balances.len(),
        1,
        "older balances are removed: {balances:?}"
    );
    // A flipped byte inside the first block of the first run.
    let victim = runs[0].clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[64 + 100] ^= 0x40;
    std::fs::write(&victim, &bytes).unwrap();
    {
        let d = open_with_tail(dir.path(), 50);
        let h = d.history().unwrap();
        let err = (2..2 + WALLETS)
            .find_map(|a| h.statement(a, 0, 1_000).err())
            .expect("a statement reads the damaged block");
        assert_eq!(err.kind, "bad_history_run");
        assert!(err.file.contains("hist-"), "{err}");
        assert_eq!(err.offset, 64, "the block's offset: {err}");
        d.shutdown();
    }
    // A damaged balances file: the open is refused, naming it.
    let mut b = std::fs::read(&balances[0]).unwrap();
    let at = b.len() / 2;
    b[at] ^= 1;
    std::fs::write(&balances[0], &b).unwrap();
    let mut c = config(2, 64 << 10);
    c.history = Some(PageLimits::default());
    c.history_tail = 50;
    match Durable::open(dir.path(), c) {
        Err(tally_wal::OpenError::Corrupt(p)) => {
            assert_eq!(p.kind, "bad_history_run");
            assert!(p.file.contains("balances-"), "{p}");
        }
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("opened with damaged balances"),
    }
    std::fs::remove_dir_all(dir.path().join("history")).unwrap();
    let d = open_with_tail(dir.path(), 50);
    assert_eq!(answers(&d), before, "rebuilt from the log");
}

/// A run written without its balances (a crash inside a seal) is removed
/// at open and its sequences are indexed from the log again; without any
/// balances file every run is such a leftover.
#[test]
fn an_unfinished_seal_is_indexed_again() {
    let dir = tempfile::tempdir().unwrap();
    let before = sealed_workload(dir.path());
    let runs = history_files(dir.path(), "hist-");
    let newest = runs.last().unwrap().clone();
    let name = newest.file_name().unwrap().to_string_lossy().into_owned();
    let through: u64 = name
        .trim_end_matches(".run")
        .rsplit('-')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // The rest of a seal after the newest balances: a run renamed into
    // place whose balances never were.
    let leftover = dir
        .path()
        .join("history")
        .join(format!("hist-{through:020}-{:020}.run", through + 40));
    std::fs::copy(&newest, &leftover).unwrap();
    {
        let d = open_with_tail(dir.path(), 50);
        assert!(!leftover.exists(), "the unfinished run is removed");
        assert!(newest.exists(), "the finished ones stay");
        assert_eq!(answers(&d), before);
        d.shutdown();
    }
    for b in history_files(dir.path(), "balances-") {
        std::fs::remove_file(b).unwrap();
    }
    let d = open_with_tail(dir.path(), 50);
    assert!(!newest.exists(), "without balances every run is a leftover");
    assert_eq!(answers(&d), before);
}

/// Reindexing a long log (`history/` removed) writes the runs as recovery
/// reads the log, each once a later record witnesses it durable: at most
/// `MAX_FROZEN` tails wait in memory when recovery ends, not one per run
/// (with each its own copy of every balance, as before).
#[test]
fn reindexing_a_long_log_writes_its_runs_as_recovery_goes() {
    use tally_wal::durable::{recover_indexed, HistoryStart};
    use tally_wal::history::{sealer, MAX_FROZEN};
    let dir = tempfile::tempdir().unwrap();
    let before = sealed_workload(dir.path());
    let live = history_files(dir.path(), "hist-").len();
    std::fs::remove_dir_all(dir.path().join("history")).unwrap();
    let start = HistoryStart {
        store: tally_wal::storage::real(),
        sealed: sealer::open(&tally_wal::storage::RealDisk, dir.path()).unwrap(),
        tail_entries: 50,
    };
    assert!(start.sealed.is_none());
    let (_, _, _, builder) = recover_indexed(
        &tally_wal::storage::RealDisk,
        dir.path(),
        2,
        Some(start),
        None,
    )
    .unwrap();
    let builder = builder.expect("asked for");
    assert!(
        builder.frozen() <= MAX_FROZEN,
        "{} frozen",
        builder.frozen()
    );
    let written = history_files(dir.path(), "hist-").len();
    assert!(
        written >= 2 && written + MAX_FROZEN + 1 >= live,
        "{written} runs written while recovering, {live} by the live server"
    );
    assert_eq!(history_files(dir.path(), "balances-").len(), 1);
    drop(builder);
    // What it wrote is what the next start resumes from.
    let d = open_with_tail(dir.path(), 50);
    assert_eq!(answers(&d), before);
}

/// A restart behind a snapshot and the history's runs reads only the log
/// after them, not the whole log (its cost follows the state, not the
/// log's length), and still answers every query over the whole history:
/// statements, every record (found by the position marks the runs keep)
/// and the lookups. Then the first record is damaged: the restart does
/// not read it; the background scrub, a full scan and the query that
/// reads it report it.
#[test]
fn a_restart_behind_a_snapshot_and_runs_reads_only_the_log_after_them() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let d = open_with_tail(dir.path(), 50);
        workload(&d);
        let a = answers(&d);
        let postings: usize = a.statements.iter().map(Vec::len).sum();
        wait_for_runs(d.history().unwrap(), postings * 24 / 4);
        d.take_snapshot().unwrap().expect("a snapshot");
        d.shutdown();
        a
    };
    let segments = tally_wal::scan::segment_files(&tally_wal::storage::RealDisk, dir.path())
        .unwrap()
        .len();
    assert!(segments >= 4, "small segments: {segments}");
    let mut c = config(2, 64 << 10);
    c.history_tail = 50;
    c.history = Some(PageLimits {
        max_items: 37,
        max_bytes: 16 << 10,
        record_overhead: 256,
    });
    let (d, recovery) = Durable::open(dir.path(), c).unwrap();
    assert!(
        recovery.segments <= 2 && recovery.records < 1_000,
        "read {} of {segments} segments, {} records",
        recovery.segments,
        recovery.records
    );
    assert_eq!(answers(&d), before, "the whole history still answers");
    d.shutdown();
    // The first segment's first record damaged: the restart does not read
    // it (the audit does, and a query that reads it reports where).
    let first =
        &tally_wal::scan::segment_files(&tally_wal::storage::RealDisk, dir.path()).unwrap()[0].1;
    let mut bytes = std::fs::read(first).unwrap();
    bytes[4096 + 200] ^= 0x55;
    std::fs::write(first, &bytes).unwrap();
    assert!(
        tally_wal::scan::scan(&tally_wal::storage::RealDisk, dir.path(), None, |_| Ok(())).is_err(),
        "a full scan finds the damage"
    );
    let mut d = open_with_tail(dir.path(), 50);
    d.wait_for_scrub();
    let found = d.scrub_problem().expect("the scrub reports the damage");
    assert!(found.file.contains("segment-"), "{found}");
    let err = d
        .history()
        .unwrap()
        .records(1, 10)
        .expect_err("the damaged record is reported, not served");
    assert!(err.file.contains("segment-"), "{err}");
    assert_eq!(err.offset, 4096, "{err}");
    d.shutdown();
}
