//! `pitr-check drill`: the weekly restore drill a runbook prescribes, as one command.
//!
//! It restores a backup into a throwaway directory with bb-restore's library, starts
//! PostgreSQL on it (which replays the archive through wal-fetch, as a real restore would),
//! waits until the server has promoted at the target, checks what it holds (connections,
//! pg_amcheck, the caller's queries, row counts against the live cluster), then stops it and
//! removes the directory. The report is one JSON object on stdout.
//!
//! What is a finding and what is an error: anything the backup or the archive is to blame
//! for (a restore that fails, recovery that stops early, corruption, a wrong query result, a
//! missing row) is a failed check in the report, verdict CRITICAL (exit 2). A problem with
//! the drill's own inputs (a bad flag or target, an unreadable --sql file, no PostgreSQL
//! binaries, an unreachable --dbname) is an error, UNKNOWN (exit 3): that drill proved
//! nothing either way.

mod binaries;
mod checks;
mod rows;
mod scratch;
mod script;
mod server;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pitrkit::error::{Error, Result};
use pitrkit::io::measure::seconds;
use pitrkit::pg::target::{RecoveryTarget, TargetAction, TargetArgs};
use pitrkit::restore::{self, ArchiveMode, Existing, RestoreOptions, Signal};
use pitrkit::runner::{Verdict, note};
use pitrkit::settings::{RepoArgs, Settings, parse_duration};
use postgres::Client;
use serde::Serialize;

use crate::DrillArgs;
use binaries::pg_bindir;
use checks::{amcheck, run_script};
use rows::Baseline;
use script::Step;
use server::{NotPromoted, Owner, Scratch, Server, error_message};

/// The JSON report printed on stdout.
#[derive(Debug, Serialize)]
struct Report {
    /// The backup restored; null when none was.
    backup_id: Option<String>,
    /// Where recovery was asked to stop: `latest`, `time …`, `restore point '…'`…
    target: String,
    verdict: Verdict,
    checks: Vec<Check>,
    timings: Timings,
    bytes_restored: u64,
    /// The throwaway server's loopback port, once it was started.
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    /// Why the drill stopped before its last check.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Check {
    name: String,
    ok: bool,
    detail: String,
}

#[derive(Debug, Serialize)]
struct Timings {
    /// Choosing the backup and downloading it.
    restore_seconds: Option<f64>,
    /// Starting the server until it has promoted: replaying the archive.
    replay_seconds: Option<f64>,
    total_seconds: f64,
}

/// A check's result: `Ok(detail)` passed, `Err(detail)` failed.
type Outcome = std::result::Result<String, String>;

/// Why a drill ended early.
enum Stop {
    /// A check failed and the later ones can't run; it is in the report.
    Failed,
    /// The drill itself could not run: UNKNOWN.
    Error(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Error(e)
    }
}

impl Report {
    fn record(&mut self, name: impl Into<String>, outcome: Outcome) {
        let (ok, detail) = match outcome {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        self.checks.push(Check {
            name: name.into(),
            ok,
            detail,
        });
    }

    /// Records a failed check that ends the drill.
    fn fail(&mut self, name: &str, detail: String) -> Stop {
        self.error = Some(format!("{name}: {detail}"));
        self.record(name, Err(detail));
        Stop::Failed
    }

    fn first_failure(&self) -> Option<&Check> {
        self.checks.iter().find(|c| !c.ok)
    }

    /// One line for a human (or a cron mail) on stderr.
    fn summary(&self) -> String {
        match self.first_failure() {
            None => format!(
                "drill OK: backup {} ({:.1} MB) restored in {:.1} s and recovered to {} in {:.1} s; {} checks passed",
                self.backup_id.as_deref().unwrap_or("?"),
                self.bytes_restored as f64 / 1e6,
                self.timings.restore_seconds.unwrap_or_default(),
                self.target,
                self.timings.replay_seconds.unwrap_or_default(),
                self.checks.len()
            ),
            Some(c) => {
                let failed = self.checks.iter().filter(|c| !c.ok).count();
                let more = match failed {
                    1 => String::new(),
                    n => format!(" (and {} more failed checks)", n - 1),
                };
                format!("drill CRITICAL: {}: {}{more}", c.name, c.detail)
            }
        }
    }
}

/// The drill's options, checked before anything is restored.
struct Plan<'a> {
    args: &'a DrillArgs,
    owner: Option<Owner>,
    workdir: PathBuf,
    recovery_timeout: Duration,
    script: Vec<Step>,
    target: RecoveryTarget,
}

impl<'a> Plan<'a> {
    fn new(args: &'a DrillArgs) -> Result<Self> {
        let script = match &args.sql {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::local_io(path, e))?;
                script::parse(path, &text)?
            }
            None => Vec::new(),
        };
        if let Some(dir) = &args.pg_bin
            && !dir.join("postgres").is_file()
        {
            return Err(Error::Usage(format!(
                "--pg-bin {}: no postgres binary there",
                dir.display()
            )));
        }
        Ok(Plan {
            target: args.target.parse()?,
            args,
            owner: Owner::for_server(&args.run_as)?,
            workdir: args.workdir.clone().unwrap_or_else(std::env::temp_dir),
            recovery_timeout: parse_duration("--recovery-timeout", &args.recovery_timeout)?,
            script,
        })
    }

    /// The target as the report names it.
    fn target(&self) -> String {
        self.target.to_string()
    }
}

/// Runs one drill and prints its report: OK when every check passed, CRITICAL otherwise;
/// an error (UNKNOWN) prints no report.
pub fn run(args: &DrillArgs, repo: &RepoArgs) -> Result<Verdict> {
    let plan = Plan::new(args)?;
    let started = Instant::now();
    let mut report = Report {
        backup_id: None,
        target: plan.target(),
        verdict: Verdict::Critical,
        checks: Vec::new(),
        timings: Timings {
            restore_seconds: None,
            replay_seconds: None,
            total_seconds: 0.0,
        },
        bytes_restored: 0,
        port: None,
        error: None,
    };
    match drill(&plan, repo, &mut report) {
        Ok(()) | Err(Stop::Failed) => {}
        Err(Stop::Error(e)) => return Err(e),
    }
    report.timings.total_seconds = seconds(started.elapsed());
    report.verdict = if report.first_failure().is_none() && report.error.is_none() {
        Verdict::Ok
    } else {
        Verdict::Critical
    };
    let json = serde_json::to_string(&report)
        .map_err(|e| Error::Usage(format!("cannot write the report: {e}")))?;
    writeln!(std::io::stdout().lock(), "{json}").map_err(|e| Error::local_io("stdout", e))?;
    note(report.summary());
    Ok(report.verdict)
}

/// The drill, step by step. The guards (`scratch`, then `server`) stop the server and
/// remove the directory however this returns.
fn drill(plan: &Plan, repo: &RepoArgs, report: &mut Report) -> Result<(), Stop> {
    let user = plan.args.db_user.as_str();
    let scratch = Scratch::create(&plan.workdir, plan.owner.clone(), plan.args.keep)?;
    let baseline = match &plan.args.dbname {
        Some(conninfo) => Some(baseline(conninfo, plan.recovery_timeout, report)?),
        None => None,
    };
    let summary = restore(plan, repo, &scratch, baseline.as_ref(), report)?;
    // Dropped after the server has stopped, whatever happens from here on.
    let _lock = summary.restore_lock.clone().map(|key| Release {
        repo: repo.clone(),
        key,
    });
    let bindir = pg_bindir(plan.args.pg_bin.as_deref(), repo, &summary.backup_id)?;

    let (server, db) = start(&scratch, &bindir, plan, report)?;
    let amcheck = amcheck(&scratch, &bindir, &server, user)?;
    report.record("amcheck", amcheck);
    run_script(&plan.script, &server, user, db, report);
    if let Some(base) = &baseline {
        let outcome = server
            .connect(user, &base.dbname)
            .map_err(|e| format!("database {}: {}", base.dbname, error_message(&e)))
            .and_then(|mut db| rows::compare(base, &mut db));
        report.record("row_counts", outcome);
    }
    Ok(())
}

/// Starts the server on the restored directory and waits until it has promoted; records
/// the `connect` and `recovery` checks.
fn start(
    scratch: &Scratch,
    bindir: &Path,
    plan: &Plan,
    report: &mut Report,
) -> Result<(Server, Client), Stop> {
    let user = plan.args.db_user.as_str();
    let port = server::free_port()?;
    report.port = Some(port);
    let started = Instant::now();
    let mut server = scratch.start(bindir, port)?;
    let promoted = server.wait_promoted(plan.recovery_timeout, user);
    let replay = seconds(started.elapsed());
    report.timings.replay_seconds = Some(replay);
    let db = match promoted {
        Ok(db) => db,
        Err(NotPromoted::Recovery(why)) => return Err(report.fail("recovery", why)),
        Err(NotPromoted::Connect(why)) => return Err(report.fail("connect", why)),
    };
    // Trust authentication is safe only on the private socket: prove TCP is closed.
    let tcp = std::net::TcpStream::connect_timeout(
        &(std::net::Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_secs(2),
    );
    report.record(
        "connect",
        match tcp {
            Err(_) => Ok(format!(
                "accepts connections as {user} on its private socket in {} only (port {port}: \
                 a TCP connection to 127.0.0.1 is refused)",
                server.socket_dir().display()
            )),
            Ok(_) => Err(format!(
                "the drill's server accepts TCP connections on 127.0.0.1:{port}, where any \
                 local user would be trusted"
            )),
        },
    );
    let mut detail = format!("promoted after {replay:.1} s");
    let lines = server.recovery_lines();
    if !lines.is_empty() {
        detail.push_str(": ");
        detail.push_str(&lines);
    }
    report.record("recovery", Ok(detail));
    Ok((server, db))
}

/// With --dbname: counts the live database's rows at a fresh restore point and waits until
/// the archive holds it; the restore then targets that point.
fn baseline(conninfo: &str, limit: Duration, report: &mut Report) -> Result<Baseline, Stop> {
    let name = format!(
        "pitrkit-drill-{}-{}",
        jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ"),
        std::process::id()
    );
    let (base, mut live) = rows::take(conninfo, &name)?;
    report.target = format!("restore point '{name}'");
    match rows::wait_archived(&mut live, &base.segment, limit)? {
        Ok(detail) => report.record("archive", Ok(detail)),
        Err(why) => return Err(report.fail("archive", why)),
    }
    Ok(base)
}

/// Restores into the scratch directory. A restore that fails is the drill's main finding;
/// only a usage error (a target no backup can reach, an unparsable one) is the caller's.
fn restore(
    plan: &Plan,
    repo: &RepoArgs,
    scratch: &Scratch,
    baseline: Option<&Baseline>,
    report: &mut Report,
) -> Result<restore::Summary, Stop> {
    let a = plan.args;
    let started = Instant::now();
    let result = (|| {
        let opts = RestoreOptions {
            pgdata: scratch.data(),
            target: TargetArgs {
                target_name: baseline
                    .map(|b| b.restore_point.clone())
                    .or_else(|| a.target.target_name.clone()),
                ..a.target.clone()
            }
            .parse()?,
            target_exclusive: false,
            target_action: TargetAction::Promote,
            target_timeline: None,
            backup: a.backup.as_deref().map(str::parse).transpose()?,
            // The drill's cluster must never archive into the repository (a new timeline
            // there would change what later restores follow).
            archive_mode: ArchiveMode::Off,
            signal: Signal::Recovery,
            existing: Existing::Refuse,
            // Never into the live cluster's tablespaces, on the database host.
            tablespace_mapping: Vec::new(),
            tablespace_mapping_all: Some(scratch.tablespaces()),
            waldir: None,
            // Retention keeps what the drill replays while it may still be replaying.
            hold: plan.recovery_timeout + Duration::from_secs(600),
            jobs: a.jobs,
        };
        restore::restore(&Settings::from_args(repo)?, &opts)
    })();
    report.timings.restore_seconds = Some(seconds(started.elapsed()));
    match result {
        Ok(s) => {
            report.backup_id = Some(s.backup_id.clone());
            report.bytes_restored = s.bytes;
            report.record(
                "restore",
                Ok(format!(
                    "backup {}: {} files, {} bytes in {:.1} s",
                    s.backup_id, s.files, s.bytes, s.seconds
                )),
            );
            Ok(s)
        }
        Err(e @ Error::Usage(_)) => Err(Stop::Error(e)),
        Err(e) => Err(report.fail("restore", e.to_string())),
    }
}

/// Releases the drill's restore lock when the drill ends (normally the drill server's
/// recovery_end_command already has; a drill whose recovery failed leaves it otherwise).
struct Release {
    repo: RepoArgs,
    key: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        let released = Settings::from_args(&self.repo)
            .and_then(|s| s.open_repo())
            .and_then(|r| pitrkit::repo::lock::release_restore(&r, &self.key));
        if let Err(e) = released {
            note(format!(
                "the drill's restore lock {} stays until it expires: {e}",
                self.key
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_the_first_failure() {
        let mut r = Report {
            backup_id: Some("20260101T000000Z".into()),
            target: "latest".into(),
            verdict: Verdict::Critical,
            checks: Vec::new(),
            timings: Timings {
                restore_seconds: Some(1.0),
                replay_seconds: Some(2.0),
                total_seconds: 3.0,
            },
            bytes_restored: 25_000_000,
            port: None,
            error: None,
        };
        r.record("restore", Ok("fine".into()));
        assert!(
            r.summary()
                .starts_with("drill OK: backup 20260101T000000Z (25.0 MB)"),
            "{}",
            r.summary()
        );
        r.record("sql:3", Err("select 1: expected '2', got '1'".into()));
        r.record("sql:5", Err("x".into()));
        assert_eq!(
            r.summary(),
            "drill CRITICAL: sql:3: select 1: expected '2', got '1' (and 1 more failed checks)"
        );
    }
}
