//! Whatever the bytes, reading a log reports a problem or succeeds: it never
//! panics. Random damage (flipped bytes, overwritten runs, truncation) to a
//! real log, scanned and audited. CI runs 256 cases; more with
//! `PROPTEST_CASES=N cargo test --release -p tally-wal --test fuzz`.

mod common;

use common::*;
use proptest::prelude::*;
use std::path::PathBuf;
use std::sync::OnceLock;
use tally_engine::Command;

/// A data directory and the bytes of its files.
type Pristine = (tempfile::TempDir, Vec<(PathBuf, Vec<u8>)>);

/// One log built once.
fn pristine() -> &'static Pristine {
    static LOG: OnceLock<Pristine> = OnceLock::new();
    LOG.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let d = open(dir.path(), 2);
        d.runtime().submit(setup()).unwrap().wait();
        for r in 0..4u128 {
            let batch: Vec<Command> = (0..40u128).map(|i| command(r, i)).collect();
            d.runtime().submit(batch).unwrap().wait();
        }
        d.take_snapshot().unwrap();
        d.shutdown();
        let files = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "wal" || e == "snap"))
            .map(|p| {
                let bytes = std::fs::read(&p).unwrap();
                (p, bytes)
            })
            .collect();
        (dir, files)
    })
}

#[derive(Debug, Clone)]
enum Damage {
    Flip {
        file: usize,
        at: usize,
        mask: u8,
    },
    Overwrite {
        file: usize,
        at: usize,
        len: usize,
        byte: u8,
    },
    Truncate {
        file: usize,
        to: usize,
    },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        4 => (any::<usize>(), 0usize..200_000, 1u8..=255).prop_map(|(file, at, mask)| Damage::Flip { file, at, mask }),
        2 => (any::<usize>(), 0usize..200_000, 1usize..300, any::<u8>()).prop_map(|(file, at, len, byte)| Damage::Overwrite { file, at, len, byte }),
        1 => (any::<usize>(), 0usize..200_000).prop_map(|(file, to)| Damage::Truncate { file, to }),
    ]
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn damaged_logs_never_panic(damages in prop::collection::vec(damage(), 1..4)) {
        let (_, files) = pristine();
        let dir = tempfile::tempdir().unwrap();
        let mut copies: Vec<(PathBuf, Vec<u8>)> =
            files.iter().map(|(p, b)| (dir.path().join(p.file_name().unwrap()), b.clone())).collect();
        for d in &damages {
            match *d {
                Damage::Flip { file, at, mask } => {
                    let b = &mut copies[file % files.len()].1;
                    let n = b.len();
                    b[at % n] ^= mask;
                }
                Damage::Overwrite { file, at, len, byte } => {
                    let b = &mut copies[file % files.len()].1;
                    let n = b.len();
                    let start = at % n;
                    let end = (start + len).min(n);
                    b[start..end].fill(byte);
                }
                Damage::Truncate { file, to } => {
                    let b = &mut copies[file % files.len()].1;
                    let n = b.len();
                    b.truncate(to % n);
                }
            }
        }
        for (p, b) in &copies {
            std::fs::write(p, b).unwrap();
        }
        // Neither the scanner, nor recovery, nor the audit may panic.
        let _ = tally_wal::scan::scan(&tally_wal::storage::RealDisk, dir.path(), None, |_| Ok(()));
        let _ = tally_wal::recover(&tally_wal::storage::RealDisk, dir.path(), 2);
        let report = tally_wal::audit::audit(dir.path(), Some(3));
        prop_assert!(report.is_ok());
    }
}
