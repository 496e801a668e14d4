//! `tallyd`'s log: `tracing` events on stderr, with a timestamp, a level and
//! the module they come from, as text for people or one JSON object per line
//! for a log system. stdout keeps only the contract line
//! `tallyd listening on ADDR`.
//!
//! Which events are shown: `--log-level` on the command line, else
//! `RUST_LOG`, else the configuration file's `log-level`, else `info`. Each is
//! a level (`error`, `warn`, `info`, `debug`, `trace`, `off`) or a list of
//! `target=level` directives, e.g. `info,tally_wal=debug`.

use std::str::FromStr;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-12-01T22:40:01.123456Z  INFO tallyd: message key=value`.
    Text,
    /// `{"timestamp":"…","level":"INFO","target":"tallyd","message":"…",…}`.
    Json,
}

/// The filter in force: `cli` when given on the command line, then
/// `RUST_LOG`, then `configured` (the file's or the default).
pub fn filter_spec(cli: Option<&str>, env: Option<String>, configured: &str) -> String {
    match (cli, env) {
        (Some(c), _) => c.to_string(),
        (None, Some(e)) if !e.trim().is_empty() => e,
        _ => configured.to_string(),
    }
}

/// Parses a filter (a level or `target=level` directives).
/// (A bare word is a level, never a target: `loud` is refused rather than
/// read as "everything from the target `loud`".)
pub fn parse_filter(spec: &str) -> Result<Targets, String> {
    let refuse = |why: String| {
        format!("log level {spec:?}: {why} (a level such as info or debug, or target=level directives such as info,tally_wal=debug)")
    };
    let parts: Vec<String> = spec
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.rsplit_once('=') {
            Some((target, level)) => format!("{}={}", target.trim(), level.trim()),
            None => p.to_string(),
        })
        .collect();
    if parts.is_empty() {
        return Err(refuse("it is empty".into()));
    }
    for part in &parts {
        let (target, level) = part.rsplit_once('=').unwrap_or(("", part));
        if part.contains('=') && target.is_empty() {
            return Err(refuse(format!("{part:?} names no target")));
        }
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(refuse(format!("{level:?} is not a level")));
        }
    }
    Targets::from_str(&parts.join(",")).map_err(|e| refuse(e.to_string()))
}

/// The levels a filter may name.
const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

/// Installs the subscriber for the whole process.
pub fn init(filter: Targets, format: LogFormat) -> Result<(), String> {
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(true);
    let registry = tracing_subscriber::registry().with(filter);
    let done = match format {
        LogFormat::Text => registry.with(layer).try_init(),
        LogFormat::Json => registry
            .with(layer.json().flatten_event(true).with_current_span(false))
            .try_init(),
    };
    done.map_err(|e| format!("installing the log: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_wins_then_rust_log_then_the_file() {
        let env = || Some("debug".to_string());
        assert_eq!(filter_spec(Some("warn"), env(), "info"), "warn");
        assert_eq!(filter_spec(None, env(), "info"), "debug");
        assert_eq!(filter_spec(None, Some(" ".into()), "error"), "error");
        assert_eq!(filter_spec(None, None, "error"), "error");
    }

    #[test]
    fn levels_and_directives_parse_and_nonsense_is_refused() {
        for ok in [
            "info",
            "off",
            "trace",
            "info,tally_wal=debug",
            "tallyd=warn",
        ] {
            assert!(parse_filter(ok).is_ok(), "{ok}");
        }
        let e = parse_filter("loud").unwrap_err();
        assert!(e.contains("\"loud\"") && e.contains("info"), "{e}");
    }
}
