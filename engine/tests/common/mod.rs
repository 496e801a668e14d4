#![allow(dead_code)]
pub mod cold;
pub mod model;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tally_engine::runtime::{Runtime, RuntimeConfig};
use tally_engine::CurrencyCode;

pub fn usd() -> CurrencyCode {
    CurrencyCode::parse("USD").unwrap()
}
pub fn eur() -> CurrencyCode {
    CurrencyCode::parse("EUR").unwrap()
}

/// A runtime configuration on a test-controlled clock, without the
/// background ticker, and that clock.
fn clocked(shards: usize) -> (RuntimeConfig, Arc<AtomicU64>) {
    let now = Arc::new(AtomicU64::new(0));
    let clock_now = now.clone();
    let config = RuntimeConfig {
        shards,
        clock: Arc::new(move || clock_now.load(Ordering::SeqCst)),
        tick_interval: None,
        ..RuntimeConfig::default()
    };
    (config, now)
}

/// A runtime on a test-controlled clock, without the background ticker.
pub fn runtime(shards: usize) -> (Runtime, Arc<AtomicU64>) {
    let (config, now) = clocked(shards);
    (Runtime::start(config).unwrap(), now)
}

/// [`runtime`] with a cold tier (see [`cold::cold_runtime`]).
pub fn cold_runtime(
    shards: usize,
    window: usize,
    publish_every: usize,
) -> (Runtime, Arc<AtomicU64>) {
    let (config, now) = clocked(shards);
    (cold::cold_runtime(config, window, publish_every).0, now)
}
