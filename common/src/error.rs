//! Typed errors shared by every tool, and the exit-code table they map to.
//!
//! The table is part of the user interface: `archive_command` and `restore_command` decide
//! what PostgreSQL does next from the exit status alone, and monitoring scripts do the same.
//! Every code is documented in README.md; `tests/tests/integration/exit_codes.rs` holds a test per row.

use std::io;
use std::path::{Path, PathBuf};

/// Exit status of a successful run.
pub const EXIT_OK: i32 = 0;
/// The repository positively answered that the requested object does not exist.
pub const EXIT_NOT_FOUND: i32 = 1;
/// Bad command line, URL or configuration file.
pub const EXIT_USAGE: i32 = 2;
/// The input file was refused: not WAL, truncated, or its header contradicts its name.
pub const EXIT_INVALID_INPUT: i32 = 3;
/// Wrong repository: another cluster's, not a pitrkit repository, or other content already
/// stored under the name.
pub const EXIT_CONFLICT: i32 = 4;
/// The store could not be reached or kept failing after the bounded retries.
pub const EXIT_UNAVAILABLE: i32 = 5;
/// The store refused the request: credentials, permissions, or the bucket does not exist.
pub const EXIT_DENIED: i32 = 6;
/// A stored object failed verification (checksum, length or envelope).
pub const EXIT_CORRUPT: i32 = 7;
/// A local file could not be read or written.
pub const EXIT_LOCAL_IO: i32 = 8;

/// PostgreSQL could not be reached or refused what a tool asked of it (bb-push's backup
/// functions, pitr-check's queries).
pub const EXIT_DATABASE: i32 = 9;

/// Something that cannot happen did: a worker thread panicked, or our own data could not be
/// serialised. A bug to report, never a verdict on the user's input or repository.
pub const EXIT_INTERNAL: i32 = 10;

/// `restore_command` adds this to every failure except "not found": PostgreSQL treats an
/// exit status of 1..=125 as "no more WAL in the archive" and would end recovery early and
/// promote at the wrong point, while a status above 125 makes the startup process stop.
/// (128 + 15 = 143 would read as SIGTERM, a shutdown request; no code here reaches it.)
pub const RESTORE_COMMAND_OFFSET: i32 = 128;

/// Every error a pitrkit tool can report. Each variant has one exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),

    #[error("{path}: {reason}")]
    InvalidInput { path: String, reason: String },

    #[error("{0}")]
    Conflict(String),

    #[error("{key}: not found in the repository")]
    NotFound { key: String },

    #[error("repository unreachable: {0}")]
    Unavailable(String),

    #[error("repository refused access: {0}")]
    Denied(String),

    #[error("corrupt object {key}: {reason}")]
    Corrupt { key: String, reason: String },

    #[error("{}: {source}", path.display())]
    LocalIo { path: PathBuf, source: io::Error },

    #[error("PostgreSQL: {0}")]
    Database(String),

    #[error("internal error (a bug in pitrkit, please report it): {0}")]
    Internal(String),
}

impl Error {
    /// The documented exit status for this error.
    pub fn code(&self) -> i32 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            Error::InvalidInput { .. } => EXIT_INVALID_INPUT,
            Error::Conflict(_) => EXIT_CONFLICT,
            Error::NotFound { .. } => EXIT_NOT_FOUND,
            Error::Unavailable(_) => EXIT_UNAVAILABLE,
            Error::Denied(_) => EXIT_DENIED,
            Error::Corrupt { .. } => EXIT_CORRUPT,
            Error::LocalIo { .. } => EXIT_LOCAL_IO,
            Error::Database(_) => EXIT_DATABASE,
            Error::Internal(_) => EXIT_INTERNAL,
        }
    }

    /// Whether trying again later can help (a store outage) or not (bad input, corruption).
    pub fn is_temporary(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }

    pub fn local_io(path: impl AsRef<Path>, source: io::Error) -> Self {
        Error::LocalIo {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub fn invalid_input(path: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            path: path.to_string(),
            reason: reason.into(),
        }
    }

    /// For failures that are bugs: serialising our own structures, a panicked thread.
    pub fn internal(what: impl std::fmt::Display) -> Self {
        Error::Internal(what.to_string())
    }

    pub fn corrupt(key: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_restore_offsets_avoid_sigterm() {
        let all = [
            Error::Usage(String::new()),
            Error::invalid_input("x", ""),
            Error::Conflict(String::new()),
            Error::NotFound { key: String::new() },
            Error::Unavailable(String::new()),
            Error::Denied(String::new()),
            Error::corrupt("x", ""),
            Error::local_io("x", io::Error::other("x")),
            Error::Database(String::new()),
            Error::Internal(String::new()),
        ];
        let mut codes: Vec<i32> = all.iter().map(Error::code).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes, vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        for c in codes.iter().filter(|c| **c != EXIT_NOT_FOUND) {
            let r = c + RESTORE_COMMAND_OFFSET;
            assert!(r > 125 && r != 143 && r < 256, "{r}");
        }
    }
}
