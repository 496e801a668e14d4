//! # tally-bench
//!
//! Workloads ([`workload`]), the report ([`report`]) and its plot ([`plot`]),
//! memory and throughput over time ([`sample`]), the retry check ([`retry`]),
//! the server's stage breakdown ([`stages`]);
//! the drivers for each target are in the `tally-bench` binary.

#![forbid(unsafe_code)]

pub mod plot;
pub mod report;
pub mod retry;
pub mod sample;
pub mod stages;
pub mod workload;
