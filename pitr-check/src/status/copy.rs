//! `status --compare SOURCE`: this repository is a copy (pitr-copy) of SOURCE; how far
//! behind is it, against warning and critical limits.

use pitrkit::repo::lag::{Lag, lag};
use pitrkit::settings::process_env;

use super::*;

/// The copy's lag, as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    /// The repository this one copies.
    pub source: String,
    #[serde(flatten)]
    pub lag: Lag,
}

/// Compares the repository of `inv` with the source `args` names, and adds the finding its
/// lag calls for.
pub fn compare(args: &StatusArgs, inv: &Inventory, report: &mut StatusReport) -> Result<()> {
    let Some(url) = &args.compare else {
        return Ok(());
    };
    let warn = parse_duration("--max-copy-lag", &args.max_copy_lag)?;
    let crit = parse_duration("--max-copy-lag-critical", &args.max_copy_lag_critical)?;
    let source = Settings::resolve(
        &RepoArgs {
            repo: Some(url.clone()),
            config: args.compare_config.clone(),
            ..RepoArgs::default()
        },
        &process_env(),
    )?
    .open_repo()?;
    let root = source.require_root()?;
    if root.system_identifier != inv.root.system_identifier {
        report.flag(
            Severity::Critical,
            format!(
                "{} archives system {}, not this repository's {}: it is not this copy's source",
                source.location(),
                root.system_identifier,
                inv.root.system_identifier
            ),
        );
    }
    let lag = lag(&source, &inv.repo, root.wal_segment_size)?;
    if let Some(behind) = lag.seconds_behind.filter(|s| *s > 0.0) {
        let limit = [(crit, Severity::Critical), (warn, Severity::Warning)]
            .into_iter()
            .find(|(d, _)| behind > d.as_secs_f64());
        if let Some((d, severity)) = limit {
            report.flag(
                severity,
                format!(
                    "the copy lacks {} WAL files of {}, the oldest stored there {} ago (limit \
                     {}): is pitr-copy running?",
                    lag.wal_behind,
                    source.location(),
                    human_secs(behind),
                    humantime::format_duration(d)
                ),
            );
        }
    }
    report.copy = Some(CopyReport {
        source: source.location(),
        lag,
    });
    Ok(())
}
