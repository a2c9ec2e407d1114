//! Command-line values the tools share, turned into types once.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// A file argument where `-` means the standard stream (stdin for an input, stdout for an
/// output), as Unix tools spell it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileArg {
    Std,
    File(PathBuf),
}

impl FileArg {
    /// The file, unless the argument is `-`.
    pub fn file(&self) -> Option<&Path> {
        match self {
            FileArg::Std => None,
            FileArg::File(p) => Some(p),
        }
    }

    /// For messages.
    pub fn display(&self, stream: &str) -> String {
        match self {
            FileArg::Std => stream.to_string(),
            FileArg::File(p) => p.display().to_string(),
        }
    }
}

impl From<&OsStr> for FileArg {
    fn from(s: &OsStr) -> Self {
        if s == "-" {
            FileArg::Std
        } else {
            FileArg::File(PathBuf::from(s))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dash_is_the_stream() {
        assert_eq!(FileArg::from(OsStr::new("-")), FileArg::Std);
        assert_eq!(
            FileArg::from(OsStr::new("pg_wal/x")).file(),
            Some(Path::new("pg_wal/x"))
        );
        assert_eq!(
            FileArg::from(OsStr::new("./-")).file(),
            Some(Path::new("./-"))
        );
    }
}
