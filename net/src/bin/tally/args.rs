//! Value parsers shared by the commands: each turns the text of one argument
//! into the value the command needs, or into a usage failure with the stable
//! code the CLI prints for it (clap hands the failure back to main, which
//! prints it as every other failure and exits 2).
//!
//! Amounts are the exception: their scale is the currency's, which only the
//! server knows, so they stay text until a command has fetched it (see
//! [`amount`]).

use crate::output::Failure;
use clap::builder::{EnumValueParser, PossibleValue, TypedValueParser};
use clap::ValueEnum;
use std::ffi::OsStr;
use std::time::Duration;
use tally_engine::amount::parse_amount;
use tally_engine::currency::CurrencyCode;
use tally_engine::event::EventState;
use tally_engine::id::parse_id;
use tally_engine::{AccountState, ErrorCode};

/// An id: decimal, `0x` hex or UUID; never 0.
pub fn id(text: &str) -> Result<u128, Failure> {
    parse_id(text).map_err(Failure::bad_input)
}

/// User data: an id, or `0` for none.
pub fn user_data(text: &str) -> Result<u128, Failure> {
    if text == "0" {
        Ok(0)
    } else {
        id(text)
    }
}

pub fn currency_code(text: &str) -> Result<CurrencyCode, Failure> {
    CurrencyCode::parse(text).map_err(Failure::bad_input)
}

/// An amount typed by the user, in the scale of its currency (which the
/// server told us): more digits than the scale allows is a usage error too.
pub fn amount(text: &str, scale: u8) -> Result<u128, Failure> {
    parse_amount(text, scale).map_err(Failure::bad_input)
}

/// Splits `ACCOUNT=VALUE`.
fn pair(text: &str) -> Result<(u128, &str), Failure> {
    let (a, v) = text.split_once('=').ok_or_else(|| {
        Failure::usage(
            ErrorCode::InvalidCommand,
            format!("expected ACCOUNT=VALUE, got {text:?}"),
        )
    })?;
    Ok((id(a)?, v))
}

/// `ACCOUNT=AMOUNT`: one line of an entry, its amount still text.
#[derive(Clone, Debug)]
pub struct LineArg {
    pub account: u128,
    pub amount: String,
}

pub fn line(text: &str) -> Result<LineArg, Failure> {
    let (account, amount) = pair(text)?;
    Ok(LineArg {
        account,
        amount: amount.to_string(),
    })
}

/// `ACCOUNT=VERSION`: refuse unless the account is at this version.
#[derive(Clone, Copy, Debug)]
pub struct VersionArg {
    pub account: u128,
    pub version: u64,
}

pub fn version(text: &str) -> Result<VersionArg, Failure> {
    let (account, v) = pair(text)?;
    let version = v.parse::<u64>().map_err(|_| {
        Failure::usage(
            ErrorCode::InvalidCommand,
            format!("version must be a number: {text}"),
        )
    })?;
    Ok(VersionArg { account, version })
}

/// A duration such as `30s`, `5m`, `50ms`, named by its flag in the message.
pub fn duration(flag: &str, text: &str) -> Result<Duration, Failure> {
    humantime::parse_duration(text)
        .map_err(|e| Failure::usage(ErrorCode::InvalidCommand, format!("--{flag} {text:?}: {e}")))
}

/// A duration in nanoseconds, saturating at `u64::MAX`.
pub fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

/// A lien's lifetime (`--expires-in`) in nanoseconds.
pub fn expiry(text: &str) -> Result<u64, Failure> {
    humantime::parse_duration(text)
        .map_err(|e| Failure::usage(ErrorCode::InvalidExpiry, format!("{text:?}: {e}")))?
        .as_nanos()
        .try_into()
        .map_err(|_| Failure::usage(ErrorCode::InvalidExpiry, text.to_string()))
}

/// The names `--policy` takes. `overdraft-limit=AMOUNT` stands for the
/// family of values with an amount; [`PolicyParser`] reads those.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PolicyName {
    #[value(alias = "no_overdraft")]
    NoOverdraft,
    Unrestricted,
    #[value(name = "overdraft-limit=AMOUNT")]
    OverdraftLimit,
}

/// A balance policy as typed; the limit stays text until the currency's
/// scale is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Policy {
    NoOverdraft,
    Unrestricted,
    OverdraftLimit(String),
}

/// Reads `--policy`: `overdraft-limit=AMOUNT` (or `overdraft_limit=`), else
/// one of [`PolicyName`], so that clap rejects anything else and lists them.
#[derive(Clone, Copy, Debug)]
pub struct PolicyParser;

impl TypedValueParser for PolicyParser {
    type Value = Policy;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<Policy, clap::Error> {
        if let Some(limit) = value.to_str().and_then(|t| {
            t.strip_prefix("overdraft-limit=")
                .or_else(|| t.strip_prefix("overdraft_limit="))
        }) {
            return Ok(Policy::OverdraftLimit(limit.to_string()));
        }
        Ok(
            match EnumValueParser::<PolicyName>::new().parse_ref(cmd, arg, value)? {
                PolicyName::NoOverdraft => Policy::NoOverdraft,
                PolicyName::Unrestricted => Policy::Unrestricted,
                // Only the literal "overdraft-limit=AMOUNT" names this, and
                // the prefix above takes it: "AMOUNT" is then a bad amount.
                PolicyName::OverdraftLimit => Policy::OverdraftLimit("AMOUNT".into()),
            },
        )
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            PolicyName::value_variants()
                .iter()
                .filter_map(ValueEnum::to_possible_value),
        ))
    }
}

/// An account's state, for `account state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    Active,
    Frozen,
    Closed,
}

impl From<StateArg> for AccountState {
    fn from(s: StateArg) -> AccountState {
        match s {
            StateArg::Active => AccountState::Active,
            StateArg::Frozen => AccountState::Frozen,
            StateArg::Closed => AccountState::Closed,
        }
    }
}

/// An event's state, for `event list --state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EventStateArg {
    Created,
    Running,
    Compensating,
    Completed,
    Compensated,
    Failed,
    #[value(name = "timed_out")]
    TimedOut,
}

impl From<EventStateArg> for EventState {
    fn from(s: EventStateArg) -> EventState {
        match s {
            EventStateArg::Created => EventState::Created,
            EventStateArg::Running => EventState::Running,
            EventStateArg::Compensating => EventState::Compensating,
            EventStateArg::Completed => EventState::Completed,
            EventStateArg::Compensated => EventState::Compensated,
            EventStateArg::Failed => EventState::Failed,
            EventStateArg::TimedOut => EventState::TimedOut,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_are_the_engines() {
        for s in StateArg::value_variants() {
            let name = s.to_possible_value().map(|v| v.get_name().to_string());
            assert_eq!(name.as_deref(), Some(AccountState::from(*s).name()));
        }
        for s in EventStateArg::value_variants() {
            let name = s.to_possible_value().map(|v| v.get_name().to_string());
            assert_eq!(name.as_deref(), Some(EventState::from(*s).name()));
        }
        assert_eq!(EventStateArg::value_variants().len(), EventState::ALL.len());
    }

    #[test]
    fn user_data_zero_is_none_and_other_ids_parse() {
        assert_eq!(user_data("0").ok(), Some(0));
        assert_eq!(user_data("0x10").ok(), Some(16));
        assert_eq!(
            user_data("x").err().map(|f| f.code),
            Some("invalid_id".into())
        );
    }

    #[test]
    fn pairs_name_what_is_wrong() {
        let l = line("0x2=1.50").ok();
        assert_eq!(l.map(|l| (l.account, l.amount)), Some((2, "1.50".into())));
        assert_eq!(
            line("2:1").err().map(|f| f.code),
            Some("invalid_command".into())
        );
        assert_eq!(
            version("2=x").err().map(|f| f.message),
            Some("version must be a number: 2=x".into())
        );
        assert_eq!(
            version("2=7").ok().map(|v| (v.account, v.version)),
            Some((2, 7))
        );
    }

    #[derive(clap::Parser)]
    struct P {
        #[arg(long, value_parser = PolicyParser)]
        policy: Policy,
    }

    fn policy(v: &str) -> Result<Policy, clap::error::ErrorKind> {
        <P as clap::Parser>::try_parse_from(["p", "--policy", v])
            .map(|p| p.policy)
            .map_err(|e| e.kind())
    }

    #[test]
    fn policies_by_name_or_with_a_limit() {
        assert_eq!(policy("no-overdraft"), Ok(Policy::NoOverdraft));
        assert_eq!(policy("no_overdraft"), Ok(Policy::NoOverdraft));
        assert_eq!(policy("unrestricted"), Ok(Policy::Unrestricted));
        assert_eq!(
            policy("overdraft-limit=5.00"),
            Ok(Policy::OverdraftLimit("5.00".into()))
        );
        assert_eq!(
            policy("overdraft_limit=1"),
            Ok(Policy::OverdraftLimit("1".into()))
        );
        assert_eq!(
            policy("overdraft"),
            Err(clap::error::ErrorKind::InvalidValue)
        );
    }
}
