//! Which PostgreSQL server a drill starts: the one of the backup's major version.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pitrkit::error::{Error, Result};
use pitrkit::settings::{RepoArgs, Settings};

/// PostgreSQL's server binaries: `--pg-bin`, else the config file's `[pg_bin]` entry for
/// the backup's major version, else that major in Debian's and Ubuntu's layout, else
/// `pg_config`'s when it is the same major version (an older or newer server would refuse
/// the data directory, less clearly).
pub(super) fn pg_bindir(
    explicit: Option<&Path>,
    repo: &RepoArgs,
    backup_id: &str,
) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir.to_path_buf());
    }
    let settings = Settings::from_args(repo)?;
    let manifest = settings.open_repo()?.read_manifest(&backup_id.parse()?)?;
    let major = manifest.pg_version_num / 10000;
    if let Some(dir) = settings.pg_bin.get(&major) {
        if dir.join("postgres").is_file() {
            return Ok(dir.clone());
        }
        return Err(Error::Usage(format!(
            "backup {backup_id} needs PostgreSQL {major}: the config file's [pg_bin] entry {major} = {} has no postgres binary",
            dir.display()
        )));
    }
    let debian = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"));
    if debian.join("postgres").is_file() {
        return Ok(debian);
    }
    let found = match (pg_config("--bindir"), pg_config("--version")) {
        (Some(dir), Some(version)) => {
            let dir = PathBuf::from(dir);
            match pg_major(&version) {
                Some(m) if m == major && dir.join("postgres").is_file() => return Ok(dir),
                _ => format!("pg_config finds {version} in {}", dir.display()),
            }
        }
        _ => "pg_config is not on PATH".into(),
    };
    Err(Error::Usage(format!(
        "backup {backup_id} needs PostgreSQL {major}: {}/postgres is missing and {found}; \
         install PostgreSQL {major}, give --pg-bin DIR, or set {major} = \"DIR\" under [pg_bin] in the config file",
        debian.display()
    )))
}

fn pg_config(arg: &str) -> Option<String> {
    let out = Command::new("pg_config")
        .arg(arg)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `PostgreSQL 15.5 (Debian 15.5-1.pgdg120+1)` → 15.
fn pg_major(version: &str) -> Option<u32> {
    let digits: String = version
        .strip_prefix("PostgreSQL ")?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_version_of_pg_config() {
        assert_eq!(
            pg_major("PostgreSQL 15.5 (Debian 15.5-1.pgdg120+1)"),
            Some(15)
        );
        assert_eq!(pg_major("PostgreSQL 17beta1"), Some(17));
        assert_eq!(pg_major("postgres (PostgreSQL) 15.5"), None);
    }
}
