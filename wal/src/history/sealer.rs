//! The history's runs on storage: `history/` in the data directory.
//!
//! When the index's memory tail holds [`super::HistoryConfig::tail_entries`]
//! entries it is frozen (still answering queries) and the sealer thread
//! writes it as a run ([`super::run`]) together with the posted balance of
//! every account as of the run's last sequence (`balances-T.bin`), which
//! is what a restart continues from without reading the runs. Order of a
//! seal: the run (synced, then renamed), the directory synced, the balances
//! (synced, renamed; made from the previous balances file and the tail's
//! last postings), the directory synced, the previous balances file
//! removed. Recovery seals too, as it reads the log, each frozen tail once a
//! later record witnesses it durable.
//!
//! At open the newest balances file decides what the runs cover: runs
//! after it are the rest of an unfinished seal and are removed, the runs
//! before it must cover its sequences without a gap, and a damaged file is
//! reported with where it is. Everything here can be rebuilt from the log:
//! removing `history/` while the server is stopped makes the next start
//! index the whole log again.

use super::run::{self, Mark, Run};
use crate::blockfile::{crc_at_end, crc_ok, u64_at};
use crate::problem::{file_label, Problem};
use crate::storage::Storage;
use hashbrown::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The history's directory inside the data directory.
pub const HISTORY_DIR: &str = "history";
/// The thread that writes frozen tails as runs.
pub const SEAL_THREAD: &str = "tally-history-seal";

const BALANCES_MAGIC: &[u8; 8] = b"TALLYBAL";
const BALANCES_VERSION: u32 = 1;
const BALANCES_HEADER: usize = 32;
const BALANCE_BYTES: usize = 32;

fn balances_name(through: u64) -> String {
    format!("balances-{through:020}.bin")
}

fn parse_balances_name(name: &str) -> Option<u64> {
    name.strip_prefix("balances-")?
        .strip_suffix(".bin")?
        .parse()
        .ok()
}

/// What earlier runs left: the runs, the last sequence they cover, and
/// every account's posted balance as of it.
pub struct Sealed {
    pub runs: Vec<Arc<Run>>,
    pub through: u64,
    pub balances: HashMap<u128, i128>,
    /// The position marks of every run's sequences, in order; `None` when
    /// a run keeps none (version 1: the log is read from its start again
    /// to find them).
    pub marks: Option<Vec<Mark>>,
}

impl Sealed {
    /// The sequence the first run starts after.
    pub fn after(&self) -> u64 {
        self.runs.first().map_or(self.through, |r| r.after)
    }
}

fn unwritable(path: &Path, what: &str, e: io::Error) -> Problem {
    Problem::new("unwritable", file_label(path), 0, 0, format!("{what}: {e}"))
}

/// Opens `data_dir/history` (creating it): the runs and balances a previous
/// process sealed, or `None` when there are none.
pub fn open(store: &dyn Storage, data_dir: &Path) -> Result<Option<Sealed>, Problem> {
    let dir = data_dir.join(HISTORY_DIR);
    if !store.exists(&dir) {
        store
            .create_dir(&dir)
            .map_err(|e| unwritable(&dir, "creating it", e))?;
        return Ok(None);
    }
    let mut runs = Vec::new();
    let mut balances = Vec::new();
    for path in store
        .list(&dir)
        .map_err(|e| unwritable(&dir, "listing it", e))?
    {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.ends_with(".tmp") {
            store
                .remove(&path)
                .map_err(|e| unwritable(&path, "removing a leftover", e))?;
        } else if let Some(range) = run::parse_run_name(&name) {
            runs.push((range, path));
        } else if let Some(through) = parse_balances_name(&name) {
            balances.push((through, path));
        }
    }
    balances.sort();
    runs.sort();
    let Some((through, newest)) = balances.pop() else {
        // No seal finished: whatever run is here is the rest of one.
        for (_, path) in runs {
            store
                .remove(&path)
                .map_err(|e| unwritable(&path, "removing an unfinished run", e))?;
        }
        return Ok(None);
    };
    let table = read_balances(store, &newest, through)?;
    let mut kept = Vec::new();
    for ((after, to), path) in runs {
        if after >= through {
            store
                .remove(&path)
                .map_err(|e| unwritable(&path, "removing an unfinished run", e))?;
        } else {
            kept.push(((after, to), path));
        }
    }
    check_chain(&kept, through)
        .map_err(|m| Problem::new("bad_history_run", file_label(&newest), 0, through, m))?;
    let mut open = Vec::with_capacity(kept.len());
    let mut marks = Some(Vec::new());
    for ((after, to), path) in &kept {
        let mut r = Run::open(store, path)?;
        match (r.marks.take(), marks.as_mut()) {
            (Some(m), Some(all)) => {
                if all.last().is_some_and(|l: &Mark| {
                    m.first()
                        .is_some_and(|f| (f.segment, f.offset) <= (l.segment, l.offset))
                }) {
                    return Err(Problem::new(
                        "bad_history_run",
                        file_label(path),
                        56,
                        0,
                        "its first mark is not after the previous run's last",
                    ));
                }
                all.extend(m);
            }
            _ => marks = None,
        }
        if (r.after, r.through) != (*after, *to) {
            let msg = format!(
                "its header covers ({}, {}], its name ({after}, {to}]",
                r.after, r.through
            );
            return Err(Problem::new(
                "bad_history_run",
                file_label(path),
                24,
                0,
                msg,
            ));
        }
        open.push(Arc::new(r));
    }
    for (_, old) in balances {
        store
            .remove(&old)
            .map_err(|e| unwritable(&old, "removing old balances", e))?;
    }
    Ok(Some(Sealed {
        runs: open,
        through,
        balances: table,
        marks,
    }))
}

/// The runs, in order, must follow one another and end at `through`.
fn check_chain(runs: &[((u64, u64), PathBuf)], through: u64) -> Result<(), String> {
    let Some(((_, last), _)) = runs.last() else {
        return Err(format!(
            "balances as of sequence {through} but no run: the runs were removed"
        ));
    };
    for w in runs.windows(2) {
        let ((_, to), _) = &w[0];
        let ((after, _), path) = &w[1];
        if after != to {
            return Err(format!(
                "the runs leave a gap or overlap: one ends at sequence {to}, {} starts after {after}",
                file_label(path)
            ));
        }
    }
    if *last != through {
        return Err(format!(
            "the runs end at sequence {last}, the balances are as of {through}"
        ));
    }
    Ok(())
}

/// Removes everything in `data_dir/history` (the runs no longer join the
/// log: its segments were archived past them).
pub fn discard(store: &dyn Storage, data_dir: &Path) -> Result<(), Problem> {
    let dir = data_dir.join(HISTORY_DIR);
    let mut paths = store
        .list(&dir)
        .map_err(|e| unwritable(&dir, "listing it", e))?;
    // Balances first: a discard cut short then leaves runs without
    // balances (removed at the next open), never balances without runs.
    paths.sort_by_key(|p| {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        !name.is_some_and(|n| n.starts_with("balances-"))
    });
    for path in paths {
        store
            .remove(&path)
            .map_err(|e| unwritable(&path, "removing it", e))?;
    }
    Ok(())
}

fn read_balances(
    store: &dyn Storage,
    path: &Path,
    through: u64,
) -> Result<HashMap<u128, i128>, Problem> {
    let bad = |offset: u64, msg: String| {
        Problem::new("bad_history_run", file_label(path), offset, through, msg)
    };
    let bytes = crate::storage::read_all(store, path).map_err(|e| bad(0, e.to_string()))?;
    if bytes.len() < BALANCES_HEADER + 4 || &bytes[..8] != BALANCES_MAGIC {
        return Err(bad(0, "not a balances file (magic or size)".into()));
    }
    if !crc_ok(&bytes) {
        return Err(bad(0, "the checksum is wrong".into()));
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let count = u64_at(&bytes, 16);
    let at = u64_at(&bytes, 24);
    let expected = (count as usize)
        .checked_mul(BALANCE_BYTES)
        .and_then(|n| n.checked_add(BALANCES_HEADER + 4));
    if version != BALANCES_VERSION || at != through || expected != Some(bytes.len()) {
        return Err(bad(
            8,
            format!("version {version}, {count} balances as of sequence {at}: does not match its name or its {} bytes", bytes.len()),
        ));
    }
    let mut table = HashMap::with_capacity(count as usize);
    for c in bytes[BALANCES_HEADER..bytes.len() - 4].chunks_exact(BALANCE_BYTES) {
        let mut a = [0u8; 16];
        a.copy_from_slice(&c[..16]);
        let mut b = [0u8; 16];
        b.copy_from_slice(&c[16..]);
        table.insert(u128::from_le_bytes(a), i128::from_le_bytes(b));
    }
    Ok(table)
}

/// Writes the balances as of `through` (synced, renamed).
fn write_balances(
    store: &dyn Storage,
    dir: &Path,
    through: u64,
    balances: &HashMap<u128, i128>,
) -> io::Result<PathBuf> {
    let mut sorted: Vec<(&u128, &i128)> = balances.iter().collect();
    sorted.sort_unstable();
    let mut bytes = Vec::with_capacity(BALANCES_HEADER + sorted.len() * BALANCE_BYTES + 4);
    bytes.extend_from_slice(BALANCES_MAGIC);
    bytes.extend_from_slice(&BALANCES_VERSION.to_le_bytes());
    bytes.extend_from_slice(&[0; 4]);
    bytes.extend_from_slice(&(sorted.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&through.to_le_bytes());
    for (a, b) in sorted {
        bytes.extend_from_slice(&a.to_le_bytes());
        bytes.extend_from_slice(&b.to_le_bytes());
    }
    bytes.extend_from_slice(&[0; 4]);
    crc_at_end(&mut bytes);
    let path = dir.join(balances_name(through));
    let tmp = dir.join(format!("{}.tmp", balances_name(through)));
    let written = (|| {
        if store.exists(&tmp) {
            store.remove(&tmp)?;
        }
        let f = store.create_new(&tmp)?;
        f.write_all_at(&bytes, 0)?;
        f.sync_data()?;
        drop(f);
        store.rename(&tmp, &path)
    })();
    if written.is_err() {
        let _ = store.remove(&tmp);
    }
    written.map(|()| path)
}

/// Every account's balance at the end of `frozen`: the previous run's
/// balances file (the opening balances before the first run) with the
/// tail's last postings over it.
fn balances_at_end(
    store: &dyn Storage,
    dir: &Path,
    frozen: &super::Frozen,
    previous: Option<u64>,
    opening: &HashMap<u128, i128>,
) -> io::Result<HashMap<u128, i128>> {
    let mut balances = match previous {
        Some(t) => read_balances(store, &dir.join(balances_name(t)), t)
            .map_err(|p| io::Error::other(p.to_string()))?,
        None => opening.clone(),
    };
    for (&account, list) in &frozen.tail.postings {
        if let Some(p) = list.last() {
            balances.insert(account, p.balance());
        }
    }
    Ok(balances)
}

/// Seals one frozen tail: its run, the directory, then the balances as of
/// its end and the directory again; the previous balances file goes last.
/// (The run's name is durable before the balances that name it: a power
/// loss can never keep the balances without the run.)
pub fn seal(
    store: &dyn Storage,
    data_dir: &Path,
    frozen: &super::Frozen,
    previous: Option<u64>,
    opening: &HashMap<u128, i128>,
) -> io::Result<Run> {
    let dir = data_dir.join(HISTORY_DIR);
    let balances = balances_at_end(store, &dir, frozen, previous, opening)?;
    let run = Run::write(
        store,
        &dir,
        frozen.tail.entries(),
        frozen.tail.postings.len(),
        (frozen.tail.after, frozen.through),
        &frozen.marks,
    )?;
    let mut named = None;
    let written = store
        .sync_dir(&dir)
        .and_then(|()| write_balances(store, &dir, frozen.through, &balances))
        .and_then(|path| {
            named = Some(path);
            store.sync_dir(&dir)
        });
    if let Err(e) = written {
        // What was written is the rest of an unfinished seal: it goes, the
        // balances first (balances without their run refuse the start).
        // When the balances cannot be removed the run stays with them: the
        // two agree, and balances without their run would refuse the start.
        let balances_gone = named.is_none_or(|path| match store.remove(&path) {
            Ok(()) => true,
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        });
        if balances_gone {
            let _ = store.remove(&run.path);
        }
        return Err(e);
    }
    if let Some(old) = previous {
        // Best effort: a leftover is removed at the next open.
        let _ = store.remove(&dir.join(balances_name(old)));
    }
    Ok(run)
}
