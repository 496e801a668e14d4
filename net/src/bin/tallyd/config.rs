//! The configuration file (`tallyd --config FILE.toml`) and
//! `--print-config`.
//!
//! Every flag has a key: the flag's long name without the dashes
//! (`data-dir = "/var/lib/tally"`, `shards = 2`, `dev-certs = true`,
//! `settlement-account = ["USD=9000"]`). Flags given on the command line
//! override the file, key by key; a repeatable flag given on the command
//! line replaces the file's whole list. An unknown key, a value of the wrong
//! kind or a value the flag refuses is an error naming the file and the key.
//!
//! The file is read by turning its keys into the flags they stand for,
//! placed before the command line's, and parsing the lot with the same
//! parser: a key can never mean something its flag does not.

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};
use std::ffi::OsString;
use std::path::Path;

/// The largest configuration file read (bytes).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Flags that are not settings, so have no key.
const NOT_KEYS: &[&str] = &["config", "print-config", "help", "version"];

/// The flags a file's keys stand for: `--key value` pairs (or `--key` for a
/// switch), for the keys the command line did not set.
pub fn file_args(cmd: &Command, given: &ArgMatches, path: &Path) -> Result<Vec<OsString>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(format!(
            "{}: {} bytes, more than the {MAX_CONFIG_BYTES} a configuration file may have",
            path.display(),
            meta.len()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    args_from_toml(cmd, given, &text).map_err(|e| format!("{}: {e}", path.display()))
}

/// [`file_args`] on the file's text.
pub fn args_from_toml(
    cmd: &Command,
    given: &ArgMatches,
    text: &str,
) -> Result<Vec<OsString>, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let mut out = Vec::new();
    for (key, value) in &table {
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && !NOT_KEYS.contains(&key.as_str()))
            .ok_or_else(|| {
                format!(
                    "unknown key {key:?} (the keys are the flags' long names: {})",
                    keys(cmd).join(", ")
                )
            })?;
        let id = arg.get_id().as_str();
        if given.value_source(id) == Some(ValueSource::CommandLine) {
            continue;
        }
        let flag = format!("--{key}");
        let mut one = Vec::new();
        match (arg.get_action(), value) {
            (ArgAction::SetTrue, toml::Value::Boolean(b)) => {
                if *b {
                    one.push(OsString::from(&flag));
                }
            }
            (ArgAction::SetTrue, _) => return Err(format!("key {key:?}: wants true or false")),
            // `--key=value`, one argument: a value starting with `-` stays a
            // value.
            (ArgAction::Append, toml::Value::Array(items)) => {
                for item in items {
                    one.push(OsString::from(format!("{flag}={}", scalar(key, item)?)));
                }
            }
            (_, v) => one.push(OsString::from(format!("{flag}={}", scalar(key, v)?))),
        }
        check_alone(cmd, key, &one)?;
        out.extend(one);
    }
    Ok(out)
}

/// A key's value as a flag's text: a string or an integer.
fn scalar(key: &str, v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Boolean(_) => Err(format!(
            "key {key:?}: not a switch; wants a string or an integer"
        )),
        other => Err(format!(
            "key {key:?}: wants a string or an integer, not a {}",
            other.type_str()
        )),
    }
}

/// Parses one key's flags alone, so that a value the flag refuses is
/// reported against the key rather than as if it had been typed.
fn check_alone(cmd: &Command, key: &str, args: &[OsString]) -> Result<(), String> {
    use clap::error::ErrorKind;
    let argv = std::iter::once(OsString::from("tallyd")).chain(args.iter().cloned());
    match cmd.clone().try_get_matches_from(argv) {
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::InvalidValue
                    | ErrorKind::ValueValidation
                    | ErrorKind::WrongNumberOfValues
            ) =>
        {
            let why = e.to_string();
            let why = why
                .lines()
                .next()
                .unwrap_or("")
                .trim_start_matches("error: ");
            Err(format!("key {key:?}: {why}"))
        }
        _ => Ok(()),
    }
}

/// The keys a file may have.
pub fn keys(cmd: &Command) -> Vec<&str> {
    cmd.get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| !NOT_KEYS.contains(l))
        .collect()
}

/// The effective configuration as a file `--config` reads back: every key,
/// with its value from the command line, the file or the default; a
/// setting with no value is a comment.
pub fn print(cmd: &Command, m: &ArgMatches) -> String {
    let mut table = toml::Table::new();
    let mut unset = Vec::new();
    for arg in cmd.get_arguments() {
        let Some(key) = arg.get_long().filter(|l| !NOT_KEYS.contains(l)) else {
            continue;
        };
        let id = arg.get_id().as_str();
        let raw: Vec<String> = m
            .get_raw(id)
            .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let value = match arg.get_action() {
            ArgAction::SetTrue => Some(toml::Value::Boolean(m.get_flag(id))),
            ArgAction::Append => Some(toml::Value::Array(
                raw.into_iter().map(toml::Value::String).collect(),
            )),
            _ => raw.into_iter().next().map(typed),
        };
        match value {
            Some(v) => {
                table.insert(key.to_string(), v);
            }
            None => unset.push(key),
        }
    }
    let mut out =
        String::from("# tallyd's effective configuration (tallyd --config FILE reads it back)\n");
    out.push_str(&table.to_string());
    for key in unset {
        out.push_str(&format!("# {key}: not set\n"));
    }
    out
}

/// A flag's text as TOML: an integer when it is one, else a string.
fn typed(text: String) -> toml::Value {
    match text.parse::<i64>() {
        Ok(i) if i >= 0 && i.to_string() == text => toml::Value::Integer(i),
        _ => toml::Value::String(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// What `tallyd ARGV` with `file` as its configuration would run with.
    fn effective(file: &str, argv: &[&str]) -> Result<String, String> {
        let cmd = crate::Args::command();
        let argv: Vec<OsString> = std::iter::once("tallyd")
            .chain(argv.iter().copied())
            .map(OsString::from)
            .collect();
        let given = cmd
            .clone()
            .ignore_errors(true)
            .try_get_matches_from(&argv)
            .unwrap();
        let mut full = vec![OsString::from("tallyd")];
        full.extend(args_from_toml(&cmd, &given, file)?);
        full.extend(argv.into_iter().skip(1));
        let m = cmd
            .clone()
            .try_get_matches_from(full)
            .map_err(|e| e.to_string())?;
        Ok(print(&cmd, &m))
    }

    #[test]
    fn flags_override_the_file_key_by_key() {
        let file = "shards = 3\nlisten = \"127.0.0.1:7411\"\nsettlement-account = [\"USD=1\", \"EUR=2\"]\ndev-certs = true\n";
        let out = effective(file, &["--shards", "2", "--settlement-account", "GBP=3"]).unwrap();
        assert!(out.contains("shards = 2\n"), "{out}");
        assert!(out.contains("listen = \"127.0.0.1:7411\"\n"), "{out}");
        assert!(
            out.contains("settlement-account = [\"GBP=3\"]\n"),
            "a list is replaced whole: {out}"
        );
        assert!(out.contains("dev-certs = true\n"), "{out}");
        assert!(
            out.contains("snapshot-every = 60\n"),
            "defaults are printed: {out}"
        );
        assert!(out.contains("# ca: not set\n"), "{out}");
    }

    #[test]
    fn the_printed_configuration_reads_back_to_itself() {
        let file = "shards = 4\nmetrics = \"off\"\nfx-account = [\"USD=7\"]\nverify-every = \"5m\"\ndata-dir = \"-odd dir=x\"\n";
        let once = effective(file, &["--durability", "none"]).unwrap();
        let twice = effective(&once, &[]).unwrap();
        assert_eq!(once, twice);
        assert!(once.contains("durability = \"none\"") && once.contains("verify-every = \"5m\""));
    }

    #[test]
    fn every_flag_has_a_key_and_bad_files_name_the_key() {
        let cmd = crate::Args::command();
        let keys = keys(&cmd);
        for a in cmd.get_arguments() {
            if let Some(l) = a.get_long().filter(|l| !NOT_KEYS.contains(l)) {
                assert!(keys.contains(&l), "{l}");
            }
        }
        for (file, needle) in [
            ("shard = 1", "unknown key \"shard\""),
            ("config = \"x.toml\"", "unknown key \"config\""),
            ("shards = \"many\"", "key \"shards\": invalid value"),
            (
                "shards = 1.5",
                "key \"shards\": wants a string or an integer, not a float",
            ),
            (
                "dev-certs = \"yes\"",
                "key \"dev-certs\": wants true or false",
            ),
            ("listen = true", "key \"listen\": not a switch"),
            ("durability = \"maybe\"", "key \"durability\""),
            ("[server]\nshards = 1", "unknown key \"server\""),
            ("shards = ", "TOML parse error"),
            ("shards = -1", "key \"shards\": invalid value '-1'"),
        ] {
            let e = effective(file, &[]).unwrap_err();
            assert!(e.contains(needle), "{file}: {e}");
        }
    }
}
