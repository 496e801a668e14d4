//! `--memory-budget` and what it decides: how many id records each shard
//! keeps in memory before older ones go to the cold tier, and how many
//! entries the history index keeps in memory before it writes them to
//! storage.

/// The share of the budget given to the id records in memory.
const ID_SHARE_DIVISOR: u64 = 4;
/// Bytes an id record takes in memory (72–77 measured with `IdTable`).
pub const BYTES_PER_HOT_ID: u64 = 80;
/// The fewest and most records per window the budget may choose.
pub const MIN_HOT_IDS: u64 = 1_024;
pub const MAX_HOT_IDS: u64 = 1 << 26;

/// Parses `512MiB`, `4GiB`, `1.5GiB` is refused (whole numbers only),
/// `2000000000` (bytes), `64KiB`, and the SI forms `500MB`, `4GB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        format!("{text:?} is not a size: a whole number with a unit such as 512MiB or 4GiB")
    })?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "TiB" | "T" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
            ))
        }
    };
    n.checked_mul(scale)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("{text:?} is not a usable size"))
}

/// Id records per window per shard for a budget: a quarter of it for the
/// ids in memory, which hold up to two windows per shard.
pub fn hot_ids(budget: u64, shards: usize) -> usize {
    let per = budget / ID_SHARE_DIVISOR / (shards.max(1) as u64 * 2 * BYTES_PER_HOT_ID);
    per.clamp(MIN_HOT_IDS, MAX_HOT_IDS) as usize
}

/// The share of the budget given to the history's entries in memory.
const HISTORY_SHARE_DIVISOR: u64 = 4;
/// Bytes a history entry takes in memory, list slack included (24 to 48).
pub const BYTES_PER_HISTORY_ENTRY: u64 = 40;
/// Tails in memory at once at most: the one growing and those frozen.
const TAILS_IN_MEMORY: u64 = 1 + tally_wal::history::MAX_FROZEN as u64;
/// The fewest and most entries per tail the budget may choose.
pub const MIN_HISTORY_TAIL: u64 = 4_096;
pub const MAX_HISTORY_TAIL: u64 = 1 << 24;

/// History entries per tail for a budget: a quarter of it for the tails.
pub fn history_tail(budget: u64) -> usize {
    let per = budget / HISTORY_SHARE_DIVISOR / (TAILS_IN_MEMORY * BYTES_PER_HISTORY_ENTRY);
    per.clamp(MIN_HISTORY_TAIL, MAX_HISTORY_TAIL) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_their_units() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("1234"), Ok(1234));
        for bad in [
            "",
            "GiB",
            "1.5GiB",
            "-1GiB",
            "0",
            "4 parsecs",
            "99999999999TiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_window_follows_the_budget() {
        assert_eq!(hot_ids(4 << 30, 1), (1 << 30) / 160);
        assert_eq!(hot_ids(4 << 30, 2), (1 << 30) / 320);
        assert_eq!(hot_ids(64 << 10, 1), MIN_HOT_IDS as usize);
        assert_eq!(hot_ids(u64::MAX, 1), MAX_HOT_IDS as usize);
    }

    #[test]
    fn the_history_tail_follows_the_budget() {
        assert_eq!(history_tail(1 << 30), (1 << 30) / 4 / 120);
        assert_eq!(history_tail(64 << 10), MIN_HISTORY_TAIL as usize);
        assert_eq!(history_tail(u64::MAX), MAX_HISTORY_TAIL as usize);
    }
}
