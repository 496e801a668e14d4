//! # tally-bench
//!
//! Workloads ([`workload`]), drivers for each target (in-process engine,
//! durable engine, a `tallyd` over QUIC), and the report ([`report`]).

pub mod report;
pub mod workload;
