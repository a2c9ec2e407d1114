//! Where a repository lives, from the URL a user gives: a directory, `file:///path`, or
//! `s3://bucket[/prefix]`, checked before anything is opened.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// Where the repository lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoLocation {
    Dir(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl RepoLocation {
    /// Workers for work that waits on this store: an S3 request spends most of its time
    /// on a round trip, not a CPU, so more requests in flight than cores keeps both busy.
    pub fn default_jobs(&self) -> usize {
        match self {
            RepoLocation::Dir(_) => crate::io::parallel::default_jobs(),
            RepoLocation::S3 { .. } => crate::io::parallel::default_jobs() * 4,
        }
    }

    pub fn parse(url: &str) -> Result<Self> {
        let bad = |why: &str| Error::Usage(format!("bad repository URL '{url}': {why}"));
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let valid = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-'
                })
                && !bucket.starts_with(['.', '-'])
                && !bucket.ends_with(['.', '-']);
            if !valid {
                return Err(bad(
                    "the bucket name must be 3-63 lowercase letters, digits, dots or hyphens",
                ));
            }
            let prefix = prefix.trim_matches('/').to_string();
            if prefix
                .split('/')
                .any(|c| c == "." || c == ".." || (c.is_empty() && !prefix.is_empty()))
            {
                return Err(bad("the prefix must not contain empty, '.' or '..' parts"));
            }
            return Ok(RepoLocation::S3 {
                bucket: bucket.to_string(),
                prefix,
            });
        }
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(bad(
                    "a file:// URL needs an absolute path, as in file:///var/lib/pitr",
                ));
            }
            return Ok(RepoLocation::Dir(PathBuf::from(path)));
        }
        if url.contains("://") {
            return Err(bad(
                "supported forms are a directory, file:///path and s3://bucket[/prefix]",
            ));
        }
        if url.is_empty() {
            return Err(bad("empty"));
        }
        Ok(RepoLocation::Dir(PathBuf::from(url)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            RepoLocation::parse("/var/pitr").unwrap(),
            RepoLocation::Dir("/var/pitr".into())
        );
        assert_eq!(
            RepoLocation::parse("file:///var/pitr").unwrap(),
            RepoLocation::Dir("/var/pitr".into())
        );
        assert_eq!(
            RepoLocation::parse("s3://my-bucket/db/main/").unwrap(),
            RepoLocation::S3 {
                bucket: "my-bucket".into(),
                prefix: "db/main".into()
            }
        );
        for bad in [
            "s3://B",
            "s3://ab",
            "ftp://x/y",
            "file://rel",
            "",
            "s3://bucket/a//b",
            "s3://bucket/../x",
        ] {
            let e = RepoLocation::parse(bad).unwrap_err();
            assert_eq!(e.code(), crate::error::EXIT_USAGE, "{bad}");
        }
    }
}
