//! # tally-bench
//!
//! Workloads ([`workload`]), the report ([`report`]) and its plot ([`plot`]);
//! the drivers for each target are in the `tally-bench` binary.

#![forbid(unsafe_code)]

pub mod plot;
pub mod report;
pub mod workload;
