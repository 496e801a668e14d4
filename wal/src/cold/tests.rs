use super::*;
use crate::storage::sim::SimDisk;
use crate::storage::Storage;
use tally_engine::runtime::ColdIds;

fn rec(seq: u64) -> IdRecord {
    IdRecord::new(seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) << 16, seq, None)
}

fn wait_covered(c: &ColdStore, seq: u64) {
    for _ in 0..2_000 {
        if c.covered() >= seq {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    panic!("the cold tier never covered {seq} (at {})", c.covered());
}

fn open(disk: &Arc<SimDisk>, run_records: usize) -> Result<ColdStore, Problem> {
    ColdStore::open(disk.clone(), Path::new("/d"), ColdConfig { run_records })
}

fn disk() -> Arc<SimDisk> {
    let d = Arc::new(SimDisk::new(7, Default::default()));
    d.create_dir(Path::new("/d")).unwrap();
    d
}

/// Ids 1..=n, each decided at its own sequence, fed one batch per sequence.
fn fill(c: &ColdStore, ids: std::ops::RangeInclusive<u64>) {
    for seq in ids {
        c.feed([(0u8, u128::from(seq) * 1_000_003, rec(seq))], seq);
    }
}

#[test]
fn every_record_is_found_across_runs_and_merges_and_new_ids_are_not() {
    let d = disk();
    let c = open(&d, 100).unwrap();
    fill(&c, 1..=2_050);
    c.seal();
    wait_covered(&c, 2_050);
    // Merges run on their own thread.
    for _ in 0..2_000 {
        if c.runs() < 8 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(c.runs() < 8, "merged to O(log n) runs: {}", c.runs());
    assert!(c.stats().merges.load(Ordering::Relaxed) > 0);
    for seq in 1..=2_050u64 {
        let got = c.get(IdSpace::Entry, u128::from(seq) * 1_000_003).unwrap();
        assert_eq!(got, Some(rec(seq)), "id of seq {seq}");
        assert_eq!(
            c.get(IdSpace::Lien, u128::from(seq) * 1_000_003).unwrap(),
            None
        );
        assert_eq!(
            c.get(IdSpace::Entry, u128::from(seq) * 1_000_003 + 1)
                .unwrap(),
            None
        );
    }
    let keys: Vec<_> = (1..=50u128)
        .map(|k| (IdSpace::Entry, k * 1_000_003))
        .collect();
    let answers = c.lookup(&keys).unwrap();
    assert_eq!(answers.covered, 2_050);
    assert_eq!(answers.len(), 50);
    // Reads only for the keys the filters let through.
    let before = c.stats().reads.load(Ordering::Relaxed);
    let new: Vec<_> = (1..=1_000u128)
        .map(|k| (IdSpace::Entry, k * 1_000_003 + 7))
        .collect();
    assert!(c.lookup(&new).unwrap().is_empty());
    let reads = c.stats().reads.load(Ordering::Relaxed) - before;
    assert!(
        reads < 200,
        "{reads} block reads for 1,000 new ids over {} runs",
        c.runs()
    );
}

#[test]
fn the_earliest_record_of_a_key_wins() {
    let d = disk();
    let c = open(&d, 2).unwrap();
    c.feed([(0u8, 5u128, rec(1)), (0, 6, rec(2))], 2);
    c.feed([(0u8, 5u128, rec(3)), (0, 7, rec(4))], 4);
    c.seal();
    wait_covered(&c, 4);
    assert_eq!(c.get(IdSpace::Entry, 5).unwrap(), Some(rec(1)));
}

#[test]
fn persisted_runs_survive_a_crash_and_unpersisted_ones_are_dropped() {
    let d = disk();
    {
        let c = open(&d, 100).unwrap();
        fill(&c, 1..=1_000);
        c.seal();
        wait_covered(&c, 1_000);
        assert_eq!(c.persist().unwrap(), 1_000);
        fill(&c, 1_001..=1_500);
        c.seal();
        wait_covered(&c, 1_500);
        c.shutdown();
    }
    d.crash();
    let c = open(&d, 100).unwrap();
    assert_eq!(c.covered(), 1_000, "only what the manifest names");
    for seq in [1u64, 500, 1_000] {
        assert_eq!(
            c.get(IdSpace::Entry, u128::from(seq) * 1_000_003).unwrap(),
            Some(rec(seq))
        );
    }
    assert_eq!(c.get(IdSpace::Entry, 1_200 * 1_000_003).unwrap(), None);
    // Fed again from the log, it goes on.
    fill(&c, 1_001..=1_500);
    c.seal();
    wait_covered(&c, 1_500);
    assert_eq!(
        c.get(IdSpace::Entry, 1_200 * 1_000_003).unwrap(),
        Some(rec(1_200))
    );
    assert_eq!(c.persist().unwrap(), 1_500);
    drop(c);
    // A merge may have finished after the manifest was written: its run is
    // not named, and the open removes it; the runs it replaced are named
    // and stay. Either way what is left is exactly what the manifest names.
    let c = open(&d, 100).unwrap();
    let names: Vec<_> = d
        .list(&Path::new("/d").join(COLD_DIR))
        .unwrap()
        .into_iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let runs = names.iter().filter(|n| n.ends_with(".run")).count();
    assert_eq!(
        runs,
        c.runs(),
        "only the runs the manifest names: {names:?}"
    );
    for seq in [1u64, 700, 1_200, 1_500] {
        assert_eq!(
            c.get(IdSpace::Entry, u128::from(seq) * 1_000_003).unwrap(),
            Some(rec(seq))
        );
    }
}

#[test]
fn a_damaged_run_is_reported_with_its_file_and_a_damaged_block_refuses_the_lookup() {
    let d = disk();
    {
        let c = open(&d, 10_000).unwrap();
        fill(&c, 1..=1_000);
        c.seal();
        wait_covered(&c, 1_000);
        c.persist().unwrap();
    }
    let dir = Path::new("/d").join(COLD_DIR);
    let run = d
        .list(&dir)
        .unwrap()
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".run"))
        .unwrap();
    // A bit in the first block: opening works (blocks are checked when
    // read); the lookup that reads it is refused with the file named.
    d.flip_bit(&run, (run::HEADER + 100) as u64, 3).unwrap();
    let c = open(&d, 10_000).unwrap();
    let keys: Vec<_> = (1..=5u128)
        .map(|k| (IdSpace::Entry, k * 1_000_003))
        .collect();
    let e = c.lookup(&keys).unwrap_err();
    assert_eq!(e.code, ErrorCode::ColdTierUnreadable);
    let text = e.to_string();
    assert!(text.contains("ids-") && text.contains("checksum"), "{text}");
    drop(c);
    // A damaged header: the open is refused, naming the file.
    d.flip_bit(&run, 20, 1).unwrap();
    let p = open(&d, 10_000).err().unwrap();
    assert_eq!(p.kind, "bad_cold_run");
    assert!(p.file.contains("ids-"), "{p}");
    // A damaged manifest too.
    d.flip_bit(&dir.join(MANIFEST), 8, 0).unwrap();
    let p = open(&d, 10_000).err().unwrap();
    assert!(p.file.contains("MANIFEST"), "{p}");
}

#[test]
fn a_run_that_cannot_be_written_keeps_its_records_and_the_watermark_before_them() {
    let d = disk();
    let c = open(&d, 100).unwrap();
    fill(&c, 1..=100);
    c.seal();
    wait_covered(&c, 100);
    // Every write fails: the run of 101..=200 is not written.
    d.set_rates(crate::storage::sim::FaultRates {
        write_eio: 1_000_000,
        ..Default::default()
    });
    fill(&c, 101..=200);
    c.seal();
    // The failed seal is done when a persist behind it answers.
    assert!(c.persist().is_err() || c.covered() == 100);
    assert_eq!(
        c.covered(),
        100,
        "the watermark stays before the lost records"
    );
    d.set_rates(Default::default());
    fill(&c, 201..=300);
    c.seal();
    wait_covered(&c, 300);
    for seq in [101u64, 150, 200, 250, 300] {
        assert_eq!(
            c.get(IdSpace::Entry, u128::from(seq) * 1_000_003).unwrap(),
            Some(rec(seq)),
            "seq {seq}: written with the next run"
        );
    }
    assert_eq!(c.persist().unwrap(), 300);
    drop(c);
    let c = open(&d, 100).unwrap();
    assert_eq!(c.covered(), 300);
    assert_eq!(
        c.get(IdSpace::Entry, 150 * 1_000_003).unwrap(),
        Some(rec(150))
    );
}

#[test]
fn lookups_after_a_watermark_see_only_what_came_after_it() {
    let d = disk();
    let c = open(&d, 10).unwrap();
    fill(&c, 1..=10);
    c.seal();
    wait_covered(&c, 10);
    fill(&c, 11..=20);
    c.seal();
    wait_covered(&c, 20);
    let keys = [
        (IdSpace::Entry, 5 * 1_000_003),
        (IdSpace::Entry, 15 * 1_000_003),
    ];
    let all = c.lookup(&keys).unwrap();
    assert_eq!(all.len(), 2);
    // Whatever the runs after merging, what came after 10 is found.
    let newer = c.lookup_after(&keys, 10).unwrap();
    assert!(newer.get(0, 15 * 1_000_003).is_some());
    assert_eq!(newer.covered, 20);
}
