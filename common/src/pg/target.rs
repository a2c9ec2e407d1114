//! Recovery targets as a user gives them, and as PostgreSQL must receive them.
//!
//! A target time without an explicit zone is taken as UTC, and is always written to
//! `recovery_target_time` with an explicit `+00` offset: PostgreSQL would otherwise read it
//! in the server's `TimeZone`, silently moving the target by hours — a classic PITR mistake.

use jiff::Timestamp;

use crate::error::{Error, Result};
use crate::pg::wal::Lsn;

/// Where recovery should stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// Replay everything the archive has (no recovery_target setting).
    Latest,
    Immediate,
    Time(Timestamp),
    Xid(u64),
    Lsn(Lsn),
    Name(String),
    /// `--target-time last-commit`: the newest commit the archive holds for the chosen
    /// backup, found in the WAL summaries and then targeted by its LSN (inclusive).
    LastCommit,
}

/// What the server does once it reaches the target (`recovery_target_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetAction {
    Promote,
    Pause,
    Shutdown,
}

impl std::fmt::Display for TargetAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TargetAction::Promote => "promote",
            TargetAction::Pause => "pause",
            TargetAction::Shutdown => "shutdown",
        })
    }
}

/// The recovery target flags, one group shared by bb-restore and `pitr-check drill`: at
/// most one of them; none means the end of the archive.
#[derive(clap::Args, Debug, Clone, Default)]
#[group(id = "target", multiple = false)]
pub struct TargetArgs {
    /// Recover to this moment, e.g. 2026-11-26T03:05:12Z or '2026-11-26 04:05:12+01', or
    /// `last-commit`: the newest commit the archive can reach
    #[arg(long, value_name = "TIME")]
    pub target_time: Option<String>,
    /// Recover to this transaction id
    #[arg(long, value_name = "XID")]
    pub target_xid: Option<u64>,
    /// Recover to this WAL location, e.g. 0/16B3748
    #[arg(long, value_name = "LSN")]
    pub target_lsn: Option<String>,
    /// Recover to a restore point made with pg_create_restore_point()
    #[arg(long, value_name = "NAME")]
    pub target_name: Option<String>,
    /// Stop as soon as the backup is consistent
    #[arg(long)]
    pub target_immediate: bool,
}

impl TargetArgs {
    /// The target these flags name (bad times and LSNs are usage errors).
    pub fn parse(&self) -> Result<RecoveryTarget> {
        Ok(if let Some(t) = &self.target_time {
            if t.trim() == "last-commit" {
                RecoveryTarget::LastCommit
            } else {
                RecoveryTarget::Time(parse_time(t)?)
            }
        } else if let Some(x) = self.target_xid {
            RecoveryTarget::Xid(x)
        } else if let Some(l) = &self.target_lsn {
            RecoveryTarget::Lsn(l.parse()?)
        } else if let Some(n) = &self.target_name {
            RecoveryTarget::Name(n.clone())
        } else if self.target_immediate {
            RecoveryTarget::Immediate
        } else {
            RecoveryTarget::Latest
        })
    }
}

/// `recovery_target_timeline`: the timeline recovery follows. Parsed when the command line
/// is read, so a bad value is refused before anything is downloaded or emptied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetTimeline {
    /// The newest timeline in the archive (PostgreSQL's default since 12).
    Latest,
    /// The timeline the backup was taken on.
    Current,
    /// This timeline id.
    Id(u32),
}

impl std::str::FromStr for TargetTimeline {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "latest" => Ok(TargetTimeline::Latest),
            "current" => Ok(TargetTimeline::Current),
            _ => match s.parse::<u32>() {
                Ok(t) if t >= 1 => Ok(TargetTimeline::Id(t)),
                _ => Err(Error::Usage(format!(
                    "bad target timeline '{s}': use latest, current or a timeline id (1 or more)"
                ))),
            },
        }
    }
}

impl std::fmt::Display for TargetTimeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetTimeline::Latest => f.write_str("latest"),
            TargetTimeline::Current => f.write_str("current"),
            TargetTimeline::Id(t) => write!(f, "{t}"),
        }
    }
}

/// How messages and reports name a target: `time …`, `restore point '…'`, `latest`…
impl std::fmt::Display for RecoveryTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecoveryTarget::Time(t) => write!(f, "time {t}"),
            RecoveryTarget::Xid(x) => write!(f, "xid {x}"),
            RecoveryTarget::Lsn(l) => write!(f, "lsn {l}"),
            RecoveryTarget::Name(n) => write!(f, "restore point '{n}'"),
            RecoveryTarget::Immediate => f.write_str("immediate"),
            RecoveryTarget::Latest => f.write_str("latest"),
            RecoveryTarget::LastCommit => f.write_str("the last commit"),
        }
    }
}

/// Parses a target time: RFC 3339 or PostgreSQL's `2026-11-26 03:05:12.5+01`; no zone
/// means UTC.
pub fn parse_time(s: &str) -> Result<Timestamp> {
    let t = s.trim();
    if let Ok(ts) = t.parse::<Timestamp>() {
        return Ok(ts);
    }
    if let Ok(dt) = t.parse::<jiff::civil::DateTime>()
        && let Ok(z) = dt.to_zoned(jiff::tz::TimeZone::UTC)
    {
        return Ok(z.timestamp());
    }
    Err(Error::Usage(format!(
        "cannot read target time '{s}': use e.g. 2026-11-26T03:05:12Z, '2026-11-26 04:05:12+01:00', \
         or '2026-11-26 03:05:12' (taken as UTC)"
    )))
}

/// The form written to `recovery_target_time`: UTC with an explicit offset, microseconds.
pub fn pg_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S%.6f+00").to_string()
}

impl RecoveryTarget {
    /// The `postgresql.auto.conf` lines that select this target.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        match self {
            RecoveryTarget::Latest => vec![],
            RecoveryTarget::Immediate => vec![("recovery_target", "immediate".into())],
            RecoveryTarget::Time(t) => vec![("recovery_target_time", pg_time(*t))],
            RecoveryTarget::Xid(x) => vec![("recovery_target_xid", x.to_string())],
            RecoveryTarget::Lsn(l) => vec![("recovery_target_lsn", l.to_string())],
            RecoveryTarget::Name(n) => vec![("recovery_target_name", n.clone())],
            // Resolved to an LSN by the restore before settings are written; unresolved, it
            // means the archive's end.
            RecoveryTarget::LastCommit => vec![],
        }
    }
}

/// Quotes a value for postgresql.conf: single quotes, with embedded quotes doubled.
pub fn conf_quote(v: &str) -> String {
    // PostgreSQL's configuration parser (guc-file.l, DeescapeQuotedString) turns `\\` into
    // `\` and `\n`, `\t`… into control characters: a backslash must be doubled to survive.
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_values_survive_postgresqls_parser() {
        assert_eq!(conf_quote("a'b"), "'a''b'");
        assert_eq!(conf_quote("C:\\x\\n"), "'C:\\\\x\\\\n'");
    }

    #[test]
    fn target_timelines() {
        assert_eq!(
            "latest".parse::<TargetTimeline>().unwrap(),
            TargetTimeline::Latest
        );
        assert_eq!(
            "current".parse::<TargetTimeline>().unwrap(),
            TargetTimeline::Current
        );
        assert_eq!(
            "3".parse::<TargetTimeline>().unwrap(),
            TargetTimeline::Id(3)
        );
        assert_eq!(TargetTimeline::Id(3).to_string(), "3");
        for bad in ["bogus", "0", "-1", ""] {
            let e = bad.parse::<TargetTimeline>().unwrap_err();
            assert_eq!(e.code(), crate::error::EXIT_USAGE, "{bad}");
        }
    }

    #[test]
    fn times_carry_an_explicit_offset() {
        let t = parse_time("2026-11-26 03:05:12").unwrap();
        assert_eq!(pg_time(t), "2026-11-26 03:05:12.000000+00");
        let t = parse_time("2026-11-26T04:05:12.25+01:00").unwrap();
        assert_eq!(pg_time(t), "2026-11-26 03:05:12.250000+00");
        let t = parse_time("2026-11-26T03:05:12Z").unwrap();
        assert_eq!(pg_time(t), "2026-11-26 03:05:12.000000+00");
        for bad in ["yesterday", "2026-13-01 00:00:00", "", "03:05"] {
            assert_eq!(
                parse_time(bad).unwrap_err().code(),
                crate::error::EXIT_USAGE,
                "{bad}"
            );
        }
        assert_eq!(conf_quote("it's"), "'it''s'");
    }
}
