//! What is wrong with a log, and exactly where.

use serde::Serialize;
use std::fmt;
use std::path::Path;

/// How problems name a file: its name within the data directory.
pub fn file_label(path: &Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A problem found in a data directory: its kind (stable snake_case), the
/// file, the byte offset in it, the sequence number concerned (0 if none).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub kind: &'static str,
    pub file: String,
    pub offset: u64,
    pub sequence: u64,
    pub message: String,
}

impl Problem {
    pub fn new(
        kind: &'static str,
        file: impl Into<String>,
        offset: u64,
        sequence: u64,
        message: impl Into<String>,
    ) -> Problem {
        Problem {
            kind,
            file: file.into(),
            offset,
            sequence,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} at byte {}", self.kind, self.file, self.offset)?;
        if self.sequence != 0 {
            write!(f, " (sequence {})", self.sequence)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for Problem {}
