//! What a command produces, a report or a failure, and how each is printed.

use serde_json::Value;
use std::fmt;
use tally_engine::ErrorCode;
use tally_net::client::ClientError;
use tally_net::json;

/// Whose fault a failure is, which decides the exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Something the user typed is wrong, found here without asking the
    /// server (or with only what the server told us, such as a scale).
    Usage,
    /// The server refused the request, or could not be reached.
    Refused,
}

/// A failure to report: whose fault, a stable code and a message.
#[derive(Clone, Debug)]
pub struct Failure {
    pub kind: Kind,
    pub code: String,
    pub message: String,
}

impl Failure {
    /// A bad value on the command line.
    pub fn usage(code: ErrorCode, message: impl Into<String>) -> Failure {
        Failure {
            kind: Kind::Usage,
            code: code.as_str().into(),
            message: message.into(),
        }
    }

    /// The server's answer (or its absence) stops the command.
    pub fn refused(code: ErrorCode, message: impl Into<String>) -> Failure {
        Failure {
            kind: Kind::Refused,
            code: code.as_str().into(),
            message: message.into(),
        }
    }

    /// An engine error raised by parsing what the user typed.
    pub fn bad_input(e: tally_engine::Error) -> Failure {
        Failure::usage(e.code, e.message())
    }

    /// An engine error the server answered with (a rejection).
    pub fn rejection(e: tally_engine::Error) -> Failure {
        Failure::refused(e.code, e.message())
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure {
            kind: Kind::Refused,
            code: e.code.as_str().into(),
            message: e.message,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// So that a value parser can hand a failure to clap and main can take it back.
impl std::error::Error for Failure {}

/// What the command found, beyond its output: only `verify` can find errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    ErrorsFound,
}

/// A command's output: JSON for `--json`, text otherwise, and its verdict.
pub struct Report {
    pub value: Value,
    pub text: String,
    pub verdict: Verdict,
}

impl Report {
    pub fn new(value: Value, text: String) -> Report {
        Report {
            value,
            text,
            verdict: Verdict::Ok,
        }
    }
}

pub type Out = Result<Report, Failure>;

/// Prints a report: its JSON (unless null) or its text (unless empty).
pub fn print_report(r: &Report, as_json: bool) {
    if as_json {
        if !r.value.is_null() {
            println!("{}", r.value);
        }
    } else if !r.text.is_empty() {
        println!("{}", r.text);
    }
}

/// Prints a failure: `error: CODE: message` on stderr, and with `--json` the
/// JSON error on stdout.
pub fn print_failure(f: &Failure, as_json: bool) {
    eprintln!("error: {}: {}", f.code, f.message);
    if as_json {
        println!("{}", json::error(&f.code, &f.message));
    }
}
