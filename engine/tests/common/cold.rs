//! A cold tier for tests: a map fed by a journal thread from each batch's id
//! records once the batch is "durable", publishing its watermark only every
//! few batches (so that shards also answer from retained generations), and
//! answering lookups only for records at or before the watermark it
//! published (as a real cold tier, whose newest records are not yet in a
//! run, would).

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use tally_engine::idindex::{ColdAnswers, IdRecord};
use tally_engine::runtime::{Batch, ColdIds, Journal, Runtime, RuntimeConfig};
use tally_engine::IdSpace;

/// The records by (space, id), and the watermark published.
type Records = (BTreeMap<(u8, u128), IdRecord>, u64);

#[derive(Default)]
pub struct ColdMap {
    state: Mutex<Records>,
}

impl ColdIds for ColdMap {
    fn covered(&self) -> u64 {
        self.state.lock().1
    }
    fn lookup(&self, keys: &[(IdSpace, u128)]) -> Result<ColdAnswers, tally_engine::Error> {
        let state = self.state.lock();
        let found = keys
            .iter()
            .filter_map(|&(space, id)| {
                let r = state.0.get(&(space.tag(), id))?;
                (r.seq <= state.1).then_some((space.tag(), id, *r))
            })
            .collect();
        Ok(ColdAnswers::new(state.1, found))
    }
}

struct Feeder {
    tx: crossbeam_channel::Sender<Arc<Batch>>,
}

impl Journal for Feeder {
    fn append(&self, batch: Arc<Batch>) {
        let _ = self.tx.send(batch);
    }
}

/// A runtime whose shards keep `window` id records per namespace in memory
/// and the rest in a [`ColdMap`] that publishes its watermark every
/// `publish_every` batches.
pub fn cold_runtime(
    config: RuntimeConfig,
    window: usize,
    publish_every: usize,
) -> (Runtime, Arc<ColdMap>) {
    let cold = Arc::new(ColdMap::default());
    let (tx, rx) = crossbeam_channel::unbounded::<Arc<Batch>>();
    let feeder_cold = cold.clone();
    std::thread::spawn(move || {
        let mut n = 0usize;
        let mut last = 0u64;
        for batch in rx {
            batch.wait_executed();
            let mut state = feeder_cold.state.lock();
            for (space, id, r) in batch.take_id_records() {
                let first = state.0.entry((space, id)).or_insert(r);
                assert_eq!(
                    first.seq.min(r.seq),
                    first.seq,
                    "an id's first record is kept"
                );
            }
            if let Some(seq) = batch.routes().iter().flatten().map(|r| r.seq).max() {
                last = seq;
            }
            n += 1;
            if n % publish_every.max(1) == 0 {
                state.1 = last;
            }
            drop(state);
            batch.mark_durable();
        }
    });
    let config = RuntimeConfig {
        journal: Some(Arc::new(Feeder { tx })),
        cold: Some((cold.clone(), window)),
        ..config
    };
    (Runtime::start(config).unwrap(), cold)
}
