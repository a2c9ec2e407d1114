//! The throwaway cluster of a drill: its private directory, the PostgreSQL server started in
//! it with settings that keep the production configuration (restored with the backup) out
//! of the way, and the server log watched while it recovers.
//!
//! Both halves are guards. Dropping the [`Server`] stops PostgreSQL, dropping the
//! [`Scratch`] directory removes it, so a drill that fails half-way, or returns an error,
//! leaves nothing running and nothing behind (unless `--keep`). Declare the server after
//! the directory: locals drop in reverse order, so the server stops before its files go.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pitrkit::error::{Error, Result};
use pitrkit::runner::note;
use postgres::{Client, NoTls};

pub use super::scratch::{Owner, Scratch};

/// How long a fast shutdown may take before the server is stopped harder.
const FAST_SHUTDOWN: Duration = Duration::from_secs(60);

impl Scratch {
    /// Starts PostgreSQL on the restored data directory, with `port` naming the socket
    /// in this directory.
    pub fn start(&self, bindir: &Path, port: u16) -> Result<Server> {
        let data = self.data();
        // Debian keeps postgresql.conf in /etc, outside the data directory and so outside
        // the backup; PostgreSQL won't start without one. Our -c settings are enough.
        let conf = data.join("postgresql.conf");
        if !conf.exists() {
            fs::write(
                &conf,
                "# written by pitr-check drill: the backup had none\n",
            )
            .map_err(|e| Error::local_io(&conf, e))?;
            self.give(&conf)?;
        }
        let log_path = self.dir.join("postgres.log");
        let log = File::create(&log_path).map_err(|e| Error::local_io(&log_path, e))?;
        self.give(&log_path)?;
        let err_log = log.try_clone().map_err(|e| Error::local_io(&log_path, e))?;
        let postgres = bindir.join("postgres");
        let mut cmd = self.command(&postgres);
        cmd.arg("-D").arg(&data);
        for (name, value) in overrides(&self.dir, &data, port) {
            cmd.arg("-c").arg(format!("{name}={value}"));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .spawn()
            .map_err(|e| Error::local_io(&postgres, e))?;
        Ok(Server {
            child: Some(child),
            port,
            socket_dir: self.dir.clone(),
            data,
            log: LogWatch::new(log_path),
        })
    }
}

/// Settings given on the command line, which outrank postgresql.conf and
/// postgresql.auto.conf, so that the production configuration restored with the backup can't
/// reach outside the drill: listen elsewhere, archive into the repository, write the
/// production pid file, run recovery hooks, wait for a synchronous standby that will never
/// answer (pg_amcheck's CREATE EXTENSION would hang), or log somewhere we don't watch.
///
/// Durability settings (fsync, synchronous_commit) stay as they were: the drill's replay time
/// is what a real restore would take, which is the number a runbook's RTO needs.
fn overrides(dir: &Path, data: &Path, port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("data_directory", data.display().to_string()),
        ("port", port.to_string()),
        ("listen_addresses", String::new()),
        // A list setting: quoted, so a path with a comma or space stays one entry.
        (
            "unix_socket_directories",
            format!("\"{}\"", dir.display().to_string().replace('"', "\"\"")),
        ),
        ("unix_socket_group", String::new()),
        ("unix_socket_permissions", "0700".into()),
        ("hba_file", dir.join("pg_hba.conf").display().to_string()),
        (
            "ident_file",
            dir.join("pg_ident.conf").display().to_string(),
        ),
        ("ssl", "off".into()),
        ("archive_mode", "off".into()),
        ("external_pid_file", String::new()),
        ("recovery_end_command", String::new()),
        ("archive_cleanup_command", String::new()),
        ("synchronous_standby_names", String::new()),
        ("logging_collector", "off".into()),
        ("log_destination", "stderr".into()),
        // The log is read for FATAL and PANIC: untranslated.
        ("lc_messages", "C".into()),
    ]
}

/// Why a server did not get to run normally.
#[derive(Debug)]
pub enum NotPromoted {
    /// Recovery failed, stopped early, or took too long.
    Recovery(String),
    /// Recovery got far enough to accept connections, but not ours.
    Connect(String),
}

pub use pitrkit::pg::db::message as error_message;

/// The running throwaway server. Dropping it stops it.
pub struct Server {
    child: Option<Child>,
    port: u16,
    socket_dir: PathBuf,
    data: PathBuf,
    log: LogWatch,
}

impl Server {
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// Waits until recovery has ended, and returns a connection as `user` to the promoted
    /// server. `Err` says why not: the first FATAL or PANIC line of the log (which, for a
    /// restore_command failure, follows wal-fetch's own message naming the object), an exit,
    /// the timeout, or a server that runs but refuses `user`.
    pub fn wait_promoted(
        &mut self,
        timeout: Duration,
        user: &str,
    ) -> std::result::Result<Client, NotPromoted> {
        let started = Instant::now();
        let mut db: Option<Client> = None;
        loop {
            let exited = match self.child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => Some(status.to_string()),
                Some(Err(e)) => Some(e.to_string()),
                _ => None,
            };
            // Read after the exit check, so the last lines before an exit are seen.
            if let Some(problem) = self.log.poll() {
                return Err(NotPromoted::Recovery(problem));
            }
            if let Some(status) = exited {
                return Err(NotPromoted::Recovery(format!(
                    "the server exited ({status}) during recovery; its last log line: {}",
                    self.log.last_line()
                )));
            }
            // Connect only once the postmaster says it accepts connections: attempts before
            // that would log "the database system is starting up" as FATAL.
            if db.is_none() && self.status().as_deref() == Some("ready") {
                db = Some(self.connect(user, "postgres").map_err(|e| {
                    NotPromoted::Connect(format!("as {user}: {}", error_message(&e)))
                })?);
            }
            if let Some(client) = db.as_mut() {
                let in_recovery: bool = client
                    .query_one("select pg_is_in_recovery()", &[])
                    .map_err(|e| NotPromoted::Recovery(error_message(&e)))?
                    .get(0);
                if !in_recovery {
                    // The lines saying where recovery stopped come just before.
                    let _ = self.log.poll();
                    return db.ok_or_else(|| NotPromoted::Recovery("no connection".into()));
                }
            }
            if started.elapsed() > timeout {
                return Err(NotPromoted::Recovery(format!(
                    "recovery did not end within {} (--recovery-timeout); its last log line: {}",
                    humantime::format_duration(timeout),
                    self.log.last_line()
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The postmaster's state from `postmaster.pid`, which is what `pg_ctl -w` watches:
    /// "starting", "ready" (accepting connections, also during hot standby), "standby"
    /// (recovering with hot_standby off: no connections until promoted), "stopping".
    fn status(&self) -> Option<String> {
        let pid = self.child.as_ref()?.id().to_string();
        let text = fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        let lines: Vec<&str> = text.lines().collect();
        (lines.first().map(|l| l.trim()) == Some(pid.as_str()))
            .then(|| lines.get(7).map(|s| s.trim().to_string()))
            .flatten()
    }

    /// The log lines that say where recovery stopped, for the report.
    pub fn recovery_lines(&self) -> String {
        self.log.recovery.join("; ")
    }

    /// A connection over the socket in the throwaway directory.
    pub fn connect(
        &self,
        user: &str,
        dbname: &str,
    ) -> std::result::Result<Client, postgres::Error> {
        postgres::Config::new()
            .host_path(&self.socket_dir)
            .port(self.port)
            .user(user)
            .dbname(dbname)
            .application_name("pitr-check drill")
            .connect_timeout(Duration::from_secs(30))
            .connect(NoTls)
    }

    /// Fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let Ok(pid) = i32::try_from(child.id()) else {
            let _ = child.kill();
            let _ = child.wait();
            return;
        };
        for (signal, patience) in [
            (Signal::SIGINT, FAST_SHUTDOWN),
            (Signal::SIGQUIT, Duration::from_secs(10)),
        ] {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            let _ = kill(Pid::from_raw(pid), signal);
            let started = Instant::now();
            while started.elapsed() < patience {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        note(format!(
            "the drill's server (pid {pid}) ignored shutdown requests: killing it"
        ));
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Follows the server log as it grows.
struct LogWatch {
    path: PathBuf,
    offset: u64,
    partial: String,
    last: String,
    /// The latest line from a pitrkit tool (wal-fetch writes its errors to the log).
    tool: Option<String>,
    /// Lines that say where recovery stopped.
    recovery: Vec<String>,
}

impl LogWatch {
    fn new(path: PathBuf) -> Self {
        LogWatch {
            path,
            offset: 0,
            partial: String::new(),
            last: String::new(),
            tool: None,
            recovery: Vec::new(),
        }
    }

    fn last_line(&self) -> String {
        if self.last.is_empty() {
            "(none)".into()
        } else {
            message(&self.last).to_string()
        }
    }

    /// Reads what was appended; returns the first FATAL or PANIC among it, with the
    /// preceding tool message when there is one.
    fn poll(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        let mut f = File::open(&self.path).ok()?;
        f.seek(SeekFrom::Start(self.offset)).ok()?;
        f.read_to_end(&mut buf).ok()?;
        self.offset += buf.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        let end = self.partial.rfind('\n')?;
        let complete: String = self.partial.drain(..=end).collect();
        for line in complete.lines() {
            if let Some(problem) = self.line(line) {
                return Some(problem);
            }
        }
        None
    }

    fn line(&mut self, line: &str) -> Option<String> {
        if line.trim().is_empty() {
            return None;
        }
        self.last = line.to_string();
        if let Some(sev) = ["FATAL:  ", "PANIC:  "].iter().find(|s| line.contains(*s)) {
            let at = line.find(sev).unwrap_or(0);
            let quoted = line[at..].replacen("  ", " ", 1);
            return Some(match &self.tool {
                Some(tool) => format!("{quoted} (after: {tool})"),
                None => quoted,
            });
        }
        if ["wal-fetch: ", "wal-push: "]
            .iter()
            .any(|t| line.starts_with(t))
        {
            self.tool = Some(line.to_string());
        }
        if [
            "recovery stopping",
            "last completed transaction",
            "recovery has paused",
        ]
        .iter()
        .any(|m| line.contains(m))
        {
            self.recovery.push(
                message(line)
                    .trim_start_matches("LOG:")
                    .trim_start()
                    .to_string(),
            );
        }
        None
    }
}

/// A log line without its prefix (time, pid): from its severity on.
fn message(line: &str) -> &str {
    ["LOG:  ", "FATAL:  ", "PANIC:  ", "ERROR:  ", "WARNING:  "]
        .iter()
        .filter_map(|s| line.find(s))
        .min()
        .map_or(line, |at| &line[at..])
}

/// A loopback port nothing listens on now. (Another process could take it before the
/// server binds it; the server's log then says so.)
pub fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::local_io("127.0.0.1:0", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(lines: &[&str]) -> (LogWatch, Option<String>) {
        let mut w = LogWatch::new(PathBuf::new());
        let found = lines.iter().find_map(|l| w.line(l));
        (w, found)
    }

    #[test]
    fn the_first_fatal_line_is_quoted_with_what_wal_fetch_said() {
        let (_, found) = watch(&[
            "2026-01-01 00:00:00.000 UTC [10] LOG:  starting archive recovery",
            "wal-fetch: corrupt object wal/00000001/000000010000000000000003.zst: sha256 mismatch",
            "2026-01-01 00:00:01.000 UTC [10] FATAL:  could not restore file \"000000010000000000000003\" from archive: child process exited with exit code 135",
            "2026-01-01 00:00:01.000 UTC [9] LOG:  startup process (PID 10) exited with exit code 1",
        ]);
        assert_eq!(
            found.unwrap(),
            "FATAL: could not restore file \"000000010000000000000003\" from archive: child \
             process exited with exit code 135 (after: wal-fetch: corrupt object \
             wal/00000001/000000010000000000000003.zst: sha256 mismatch)"
        );
    }

    #[test]
    fn where_recovery_stopped_is_remembered() {
        let (w, found) = watch(&[
            "2026-01-01 00:00:00.000 UTC [10] LOG:  recovery stopping at restore point \"x\", time 2026-01-01 00:00:00+00",
            "2026-01-01 00:00:00.000 UTC [10] LOG:  last completed transaction was at log time 2026-01-01 00:00:00+00",
            "2026-01-01 00:00:00.000 UTC [9] LOG:  database system is ready to accept connections",
        ]);
        assert_eq!(found, None);
        assert_eq!(
            w.recovery,
            vec![
                "recovery stopping at restore point \"x\", time 2026-01-01 00:00:00+00",
                "last completed transaction was at log time 2026-01-01 00:00:00+00"
            ]
        );
        assert_eq!(
            w.last_line(),
            "LOG:  database system is ready to accept connections"
        );
    }

    #[test]
    fn socket_directory_is_one_quoted_list_entry() {
        let o = overrides(Path::new("/tmp/a b,c"), Path::new("/tmp/a b,c/data"), 5433);
        let dirs = o
            .iter()
            .find(|(k, _)| *k == "unix_socket_directories")
            .unwrap();
        assert_eq!(dirs.1, "\"/tmp/a b,c\"");
    }
}
