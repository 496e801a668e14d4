//! The storage choice issue 15 asks for, measured on this machine: group
//! commit's pattern (append a group's bytes at the end of a segment, make
//! them durable, repeat) with three ways of writing and the two kinds of
//! segment the log can have:
//!
//! - `pwrite + fdatasync` on a fallocated segment (what the log does);
//! - `pwrite + fdatasync` on a pre-written segment (zeros written over it
//!   first, so no sync has to convert unwritten extents);
//! - `O_DIRECT` aligned writes + `fdatasync` on a pre-written segment: the
//!   group's bytes from the start of its first 4 KiB page (the page the last
//!   group ended in is written again, as an `O_DIRECT` log must), from a
//!   4 KiB-aligned buffer;
//! - `O_DIRECT | O_DSYNC`: the same, the write itself durable (no separate
//!   sync call).
//!
//! Each group's latency is from the write's start to its durability; each
//! line gives p50, p99 and max over the groups, and the bytes per second.
//! Groups of 1 KiB (a few single transfers), 16 KiB, 256 KiB and 1 MiB (a
//! batched group); at most 64 MiB written per line.
//! Run: `cargo bench -p tally-wal --bench storage`

use rustix::fs::{Mode, OFlags};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Instant;

const PAGE: usize = 4096;
const SEGMENT: u64 = 96 << 20;
const PER_LINE: usize = 64 << 20;

#[derive(Clone, Copy, PartialEq)]
enum Method {
    Pwrite,
    Direct,
    DirectDsync,
}

fn percentile(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// A buffer of `len` bytes starting at a 4 KiB boundary (`O_DIRECT` wants
/// the memory aligned too), found inside a larger allocation.
struct Aligned {
    buf: Vec<u8>,
    at: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let buf = vec![0u8; len + PAGE];
        let at = (PAGE - buf.as_ptr() as usize % PAGE) % PAGE;
        Aligned { buf, at, len }
    }

    fn bytes(&mut self) -> &mut [u8] {
        &mut self.buf[self.at..self.at + self.len]
    }
}

/// Makes the segment: blocks allocated, and zeros written over them and
/// synced when `prewrite`.
fn segment(path: &Path, prewrite: bool) {
    let f = std::fs::File::create(path).expect("create");
    rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, SEGMENT).expect("fallocate");
    if prewrite {
        let zeros = vec![0u8; 1 << 20];
        for i in 0..SEGMENT / (1 << 20) {
            rustix::io::pwrite(&f, &zeros, i * (1 << 20)).expect("zeros");
        }
    }
    rustix::fs::fdatasync(&f).expect("sync");
}

/// Appends `groups` groups of `size` bytes and makes each durable; the
/// latency of each in µs.
fn run(path: &Path, method: Method, size: usize, groups: usize) -> Vec<u64> {
    let mut flags = OFlags::RDWR;
    if method != Method::Pwrite {
        flags |= OFlags::DIRECT;
    }
    if method == Method::DirectDsync {
        flags |= OFlags::DSYNC;
    }
    let fd = rustix::fs::open(path, flags, Mode::empty()).expect("open");
    // The largest write: the group and the page it starts in.
    let mut buf = Aligned::new(size + 2 * PAGE);
    let mut end = PAGE; // after a segment header's page
    let mut lat = Vec::with_capacity(groups);
    for g in 0..groups {
        let t = Instant::now();
        match method {
            Method::Pwrite => {
                let bytes = &mut buf.bytes()[..size];
                bytes.fill(g as u8 | 1);
                write_all(fd.as_fd(), bytes, end as u64);
                rustix::fs::fdatasync(&fd).expect("sync");
            }
            Method::Direct | Method::DirectDsync => {
                // From the page the last group ended in, to the next page
                // boundary after this one (zeros after it, as the log's
                // padding would be).
                let from = end / PAGE * PAGE;
                let to = (end + size).div_ceil(PAGE) * PAGE;
                let bytes = &mut buf.bytes()[..to - from];
                bytes[end - from..end - from + size].fill(g as u8 | 1);
                write_all(fd.as_fd(), bytes, from as u64);
                if method == Method::Direct {
                    rustix::fs::fdatasync(&fd).expect("sync");
                }
            }
        }
        lat.push(t.elapsed().as_micros() as u64);
        end += size;
    }
    lat
}

fn write_all(fd: std::os::fd::BorrowedFd<'_>, mut bytes: &[u8], mut at: u64) {
    while !bytes.is_empty() {
        let n = rustix::io::pwrite(fd, bytes, at).expect("write");
        bytes = &bytes[n..];
        at += n as u64;
    }
}

fn main() {
    let dir = tempfile::tempdir_in(".").unwrap_or_else(|_| tempfile::tempdir().expect("tempdir"));
    let lines = [
        ("pwrite + fdatasync, fallocated", Method::Pwrite, false),
        ("pwrite + fdatasync, pre-written", Method::Pwrite, true),
        ("O_DIRECT + fdatasync, pre-written", Method::Direct, true),
        ("O_DIRECT | O_DSYNC, pre-written", Method::DirectDsync, true),
    ];
    for size in [1 << 10, 16 << 10, 256 << 10, 1 << 20] {
        for (k, (name, method, prewrite)) in lines.iter().enumerate() {
            let path = dir.path().join(format!("seg-{size}-{k}"));
            segment(&path, *prewrite);
            let groups = (PER_LINE / size).min(2_000);
            let t = Instant::now();
            let mut lat = match std::panic::catch_unwind(|| run(&path, *method, size, groups)) {
                Ok(l) => l,
                Err(_) => {
                    println!("{size:>8} B groups, {name}: not supported here");
                    continue;
                }
            };
            let secs = t.elapsed().as_secs_f64();
            println!(
                "{:>8} B groups, {name}: p50 {} us, p99 {} us, max {} us, {:.1} MB/s ({groups} groups)",
                size,
                percentile(&mut lat, 0.5),
                percentile(&mut lat, 0.99),
                lat.iter().max().copied().unwrap_or(0),
                (size * groups) as f64 / secs / 1e6
            );
            let _ = std::fs::remove_file(&path);
        }
    }
}
