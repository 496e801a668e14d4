//! `--pin`: the busy long-lived threads, each kept on a core, so that the
//! scheduler never moves a shard between cores (its caches stay warm) and
//! the threads that hand work to each other do not share a core more than
//! they must.
//!
//! The plan, over the cores this process may use (its affinity mask):
//! shard `i` on core `i` (modulo the cores); the log writer and its syncer
//! together on the next core (they mostly wait on the disk); the network
//! (tokio workers, or the main thread with `--runtime current-thread`) on
//! the cores left, or on the log's core when none are left. The threads
//! alive then are pinned once; a thread started later inherits the mask of
//! the thread that starts it (the segment preparer the log writer's core,
//! blocking-pool threads the network's: tokio names those `tokio-rt-worker`
//! too, so the ones alive at the time are pinned with the network), others
//! (snapshots) the process's whole mask.

use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet, Pid};

/// What a thread is, by its name (as `/proc` shows it: 15 bytes at most).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Shard(usize),
    Log,
    Network,
}

fn role(name: &str, main: bool) -> Option<Role> {
    if let Some(i) = name.strip_prefix("tally-shard-") {
        return i.parse().ok().map(Role::Shard);
    }
    match name {
        "tally-log" | "tally-log-sync" => Some(Role::Log),
        // tokio's workers ("tokio-rt-worker"; older tokio named them
        // "tokio-runtime-worker", cut to 15 bytes by the kernel).
        "tokio-rt-worker" | "tokio-runtime-w" => Some(Role::Network),
        // The main thread: the network with `--runtime current-thread`.
        _ if main => Some(Role::Network),
        _ => None,
    }
}

/// The cores for a role, given the usable cores and the shard count.
fn cores_for(role: Role, cores: &[usize], shards: usize) -> Vec<usize> {
    let n = cores.len();
    let log = cores[shards % n];
    match role {
        Role::Shard(i) => vec![cores[i % n]],
        Role::Log => vec![log],
        Role::Network => {
            let rest: Vec<usize> = cores.iter().copied().skip(shards + 1).collect();
            if rest.is_empty() {
                vec![log]
            } else {
                rest
            }
        }
    }
}

/// Pins this process's threads by the plan; returns one line per thread
/// pinned ("name (thread id): cores") and one per thread that could not be
/// (a thread that ended meanwhile, say), or why nothing could be.
pub fn pin_threads(shards: usize) -> Result<Vec<String>, String> {
    let main_tid = std::process::id();
    let mask = sched_getaffinity(None).map_err(|e| format!("reading the CPU mask: {e}"))?;
    let cores: Vec<usize> = (0..CpuSet::MAX_CPU).filter(|&c| mask.is_set(c)).collect();
    if cores.is_empty() {
        return Err("no usable core in the CPU mask".into());
    }
    let tasks =
        std::fs::read_dir("/proc/self/task").map_err(|e| format!("/proc/self/task: {e}"))?;
    let mut pinned = Vec::new();
    for task in tasks.flatten() {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(name) = std::fs::read_to_string(task.path().join("comm")) else {
            continue;
        };
        let name = name.trim_end();
        let Some(role) = role(name, tid == main_tid) else {
            continue;
        };
        let on = cores_for(role, &cores, shards);
        let mut set = CpuSet::new();
        for &c in &on {
            set.set(c);
        }
        let pinning = i32::try_from(tid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| "not a thread id".to_string())
            .and_then(|pid| sched_setaffinity(Some(pid), &set).map_err(|e| e.to_string()));
        pinned.push(match pinning {
            Ok(()) => format!("{name} (thread {tid}): cores {on:?}"),
            Err(e) => format!("{name} (thread {tid}): not pinned: {e}"),
        });
    }
    Ok(pinned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_spreads_shards_and_keeps_the_log_beside_them() {
        let two = [0, 1];
        assert_eq!(cores_for(Role::Shard(0), &two, 1), vec![0]);
        assert_eq!(cores_for(Role::Log, &two, 1), vec![1]);
        assert_eq!(
            cores_for(Role::Network, &two, 1),
            vec![1],
            "shares the log's"
        );
        let eight = [0, 1, 2, 3, 4, 5, 6, 7];
        assert_eq!(cores_for(Role::Shard(2), &eight, 4), vec![2]);
        assert_eq!(cores_for(Role::Log, &eight, 4), vec![4]);
        assert_eq!(cores_for(Role::Network, &eight, 4), vec![5, 6, 7]);
        // More shards than cores: they wrap.
        assert_eq!(cores_for(Role::Shard(3), &two, 4), vec![1]);
        assert_eq!(role("tally-shard-12", false), Some(Role::Shard(12)));
        assert_eq!(role("tokio-runtime-w", false), Some(Role::Network));
        assert_eq!(role("tokio-rt-worker", false), Some(Role::Network));
        assert_eq!(
            role("any-name", true),
            Some(Role::Network),
            "the main thread"
        );
        assert_eq!(role("tally-history", false), None);
    }

    #[test]
    fn pinning_this_process_pins_its_main_thread() {
        // Of the test binary's threads only the main one has a role (the
        // network's); the plan runs against the real mask and /proc.
        let pinned = pin_threads(1).unwrap();
        assert_eq!(pinned.len(), 1, "{pinned:?}");
        assert!(pinned[0].contains("cores"), "{pinned:?}");
    }
}
