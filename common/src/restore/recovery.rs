//! The recovery settings a restore leaves in the data directory: `restore_command` through
//! wal-fetch with the same repository, the target, and the files PostgreSQL reads at start.

use std::fs;
use std::path::{Path, PathBuf};

use super::layout::Layout;
use super::{ArchiveMode, RestoreOptions, Signal};
use crate::error::{Error, Result};
use crate::pg::target::{RecoveryTarget, conf_quote};
use crate::repo::manifest::BackupManifest;
use crate::runner::note;
use crate::settings::Settings;

/// The settings that make PostgreSQL recover through wal-fetch from the same repository.
pub(super) fn recovery_settings(
    opts: &RestoreOptions,
    target: &RecoveryTarget,
    settings: &Settings,
    lock: Option<&str>,
) -> Result<Vec<(&'static str, String)>> {
    // wal-fetch beside the running tool (bb-restore, pitr-check), else from PATH.
    let exe = std::env::current_exe().map_err(|e| Error::local_io("the running program", e))?;
    let beside = exe
        .parent()
        .map(|d| d.join("wal-fetch"))
        .filter(|p| p.exists());
    let wal_fetch = beside
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "wal-fetch".into());
    // The repository as wal-fetch must be told it.
    let mut repo_args = String::new();
    if let Some(cfg) = &settings.config_path {
        let cfg = fs::canonicalize(cfg).unwrap_or_else(|_| cfg.clone());
        repo_args.push_str(&format!(
            " --config {}",
            shell_quote(&cfg.display().to_string())
        ));
    }
    let repo_url = match &settings.location {
        crate::settings::RepoLocation::Dir(p) => fs::canonicalize(p)
            .unwrap_or_else(|_| p.clone())
            .display()
            .to_string(),
        crate::settings::RepoLocation::S3 { .. } => settings.repo_url.clone(),
    };
    // Every non-secret store setting bb-restore itself used, so the server's recovery talks
    // to the same store even when they came from flags or the environment (flags beat the
    // config file, so these never contradict it). Secrets stay in the config file.
    if let crate::settings::RepoLocation::S3 { .. } = &settings.location {
        if let Some(endpoint) = &settings.s3_endpoint {
            repo_args.push_str(&format!(
                " --s3-endpoint {}",
                shell_quote(endpoint.as_str())
            ));
        }
        repo_args.push_str(&format!(
            " --s3-region {}",
            shell_quote(&settings.s3_region)
        ));
        if let Some(path) = settings.s3_path_style {
            repo_args.push_str(if path {
                " --s3-url-style path"
            } else {
                " --s3-url-style virtual"
            });
        }
    }
    repo_args.push_str(&format!(" --repo {}", shell_quote(&repo_url)));
    if settings.s3_credentials.is_some() && settings.config_path.is_none() {
        note(
            "S3 credentials came from the environment: the server needs them too (its environment, or a --config file)",
        );
    }
    // Prefetched segments recovery did not use (past the target) go when recovery ends, and
    // so does the lock that kept the WAL in the repository.
    let wal_fetch = shell_quote(&wal_fetch);
    let cleanup = match lock {
        Some(key) => format!(
            "{wal_fetch} --prefetch-cleanup --release-lock {}{repo_args}",
            shell_quote(key)
        ),
        None => format!("{wal_fetch} --prefetch-cleanup"),
    };
    // Recovery to consistency ends at the first missing segment, as it should: the WAL
    // after a backup kept on its own (retention's keep marks) is gone on purpose.
    let holes = if matches!(target, RecoveryTarget::Immediate) {
        " --no-hole-check"
    } else {
        ""
    };
    let restore = format!("{wal_fetch}{holes}{repo_args} %f %p");
    let mut out = vec![
        ("restore_command", restore),
        ("recovery_end_command", cleanup),
    ];
    if opts.archive_mode == ArchiveMode::Off {
        out.push(("archive_mode", "off".into()));
    }
    out.extend(target.settings());
    if !matches!(target, RecoveryTarget::Latest) {
        out.push(("recovery_target_action", opts.target_action.to_string()));
        if opts.target_exclusive && !matches!(opts.target, RecoveryTarget::LastCommit) {
            out.push(("recovery_target_inclusive", "off".into()));
        }
    }
    if let Some(t) = opts.target_timeline {
        out.push(("recovery_target_timeline", t.to_string()));
    }
    Ok(out)
}

fn shell_quote(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-:+=@".contains(&b))
    {
        s.to_string()
    } else {
        format!(
            "\"{}\"",
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('$', "\\$")
                .replace('`', "\\`")
        )
    }
}

const MANAGED: [&str; 12] = [
    "recovery_end_command",
    "archive_mode",
    "restore_command",
    "recovery_target",
    "recovery_target_time",
    "recovery_target_xid",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_action",
    "recovery_target_inclusive",
    "recovery_target_timeline",
    "archive_cleanup_command",
];

/// backup_label, tablespace_map (rebuilt from where this restore put each tablespace, never
/// the manifest's), postgresql.auto.conf and the signal file, in that order, in the data
/// directory.
pub(super) fn write_recovery(
    layout: &Layout,
    m: &BackupManifest,
    settings: &[(&str, String)],
    signal: Signal,
) -> Result<()> {
    layout.write_file("backup_label", m.backup_label.as_bytes())?;
    match layout.tablespace_map() {
        Some(map) => layout.write_file("tablespace_map", map.as_bytes())?,
        None => layout.remove_file("tablespace_map")?,
    }
    let old = layout.read_to_string("postgresql.auto.conf");
    let mut text: String = old
        .lines()
        .filter(|l| {
            !MANAGED.iter().any(|k| {
                l.trim_start().starts_with(k)
                    && l.trim_start()[k.len()..].trim_start().starts_with('=')
            })
        })
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str(&format!(
        "# written by bb-restore from backup {}\n",
        m.backup_id
    ));
    for (k, v) in settings {
        text.push_str(&format!("{k} = {}\n", conf_quote(v)));
    }
    layout.write_file("postgresql.auto.conf", text.as_bytes())?;
    let (signal, other) = match signal {
        Signal::Standby => ("standby.signal", "recovery.signal"),
        Signal::Recovery => ("recovery.signal", "standby.signal"),
    };
    layout.remove_file(other)?;
    layout.write_file(signal, b"")?;
    layout.sync_dir(0, ".")
}

/// Run as root, the restored files belong to whoever owns the data directory's parent (the
/// `postgres` user in a standard layout): PostgreSQL refuses a data directory it doesn't
/// own, and needs to own its tablespaces and WAL directory too.
pub(super) fn chown_like_parent(dir: &Path, layout: &Layout) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if !crate::io::local::running_as_root() {
        return Ok(());
    }
    let parent = fs::canonicalize(dir)
        .ok()
        .and_then(|d| d.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    let meta = fs::metadata(&parent).map_err(|e| Error::local_io(&parent, e))?;
    if meta.uid() == 0 {
        return Ok(());
    }
    layout.chown(meta.uid(), meta.gid())
}
