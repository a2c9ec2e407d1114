//! The one place that turns a tool's result into messages and an exit status.
//!
//! Tools return `Result<()>`; only this module prints errors and calls `exit`, so every
//! exit status comes from the table in `error.rs`.

use std::io::ErrorKind;
use std::path::Path;
use std::sync::OnceLock;

use crate::error::{EXIT_NOT_FOUND, EXIT_OK, Error, RESTORE_COMMAND_OFFSET, Result};

static TOOL: OnceLock<&'static str> = OnceLock::new();

/// How a tool's failures map to exit statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The table as it is.
    Standard,
    /// Called as PostgreSQL's `restore_command`: see [`RESTORE_COMMAND_OFFSET`].
    RestoreCommand,
}

/// Prints a diagnostic line on stderr as `tool: message`.
pub fn note(message: impl std::fmt::Display) {
    eprintln!("{}: {message}", TOOL.get().copied().unwrap_or("pitrkit"));
}

/// Parses the command line, runs the tool and exits with the documented status.
pub fn main<C: clap::Parser>(
    tool: &'static str,
    role: Role,
    run: impl FnOnce(C) -> Result<()>,
) -> ! {
    on_panic(move |e| exit_code(role, Err(e), Path::new("standby.signal")));
    let result = parse::<C>(tool).and_then(|c| {
        fault();
        run(c)
    });
    std::process::exit(exit_code(role, result, Path::new("standby.signal")))
}

/// A panic anywhere — any thread, debug or release build (which aborts) — is a bug: it
/// ends the process with the documented internal-error status (10; 138 as
/// `restore_command`; UNKNOWN for a check) and a one-line message, instead of the 101 or
/// SIGABRT the runtime would give.
fn on_panic(code: impl Fn(Error) -> i32 + Send + Sync + 'static) {
    std::panic::set_hook(Box::new(move |info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        std::process::exit(code(Error::internal(format!("panic: {what}{at}"))));
    }));
}

/// The `PITRKIT_FAULT` test hook, read once (fault points sit on per-object paths).
/// Nothing else reads it.
fn fault_setting() -> Option<&'static str> {
    static FAULT: OnceLock<Option<String>> = OnceLock::new();
    FAULT
        .get_or_init(|| std::env::var("PITRKIT_FAULT").ok())
        .as_deref()
}

/// `PITRKIT_FAULT=panic` makes a tool panic once its command line is parsed: how the tests
/// prove what a bug looks like from outside.
fn fault() {
    if fault_setting() == Some("panic") {
        panic!("PITRKIT_FAULT=panic");
    }
}

/// `PITRKIT_FAULT=die-<point>` kills the process at a named point (SIGABRT, no cleanup, as
/// kill -9 or a power loss would leave it): how the tests prove that the next run repairs
/// what a crash there leaves. `PITRKIT_FAULT=stop-<point>` stops it there (SIGSTOP) until
/// the test sends SIGCONT, to run something else at exactly that moment.
pub fn fault_point(point: &str) {
    let Some(v) = fault_setting() else {
        return;
    };
    fire(v, point);
}

/// [`fault_point`] for an operation on `path`: `PITRKIT_FAULT=die-<point>@<text>` fires only
/// where `path` contains `<text>`, so a test can kill one write among concurrent ones (the
/// segment's, not its summary's); without `@` it fires for every path.
pub fn fault_point_on(point: &str, path: &Path) {
    let Some(v) = fault_setting() else {
        return;
    };
    match v.split_once('@') {
        Some((v, text)) if path.to_string_lossy().contains(text) => fire(v, point),
        Some(_) => {}
        None => fire(v, point),
    }
}

fn fire(v: &str, point: &str) {
    if v.strip_prefix("die-") == Some(point) {
        std::process::abort();
    }
    if v.strip_prefix("stop-") == Some(point) {
        let _ = std::process::Command::new("kill")
            .args(["-STOP", &std::process::id().to_string()])
            .status();
    }
}

/// A monitoring check's finding, in the Nagios plugin convention that Icinga, Sensu and
/// most cron wrappers also read: 0 OK, 1 WARNING, 2 CRITICAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok = 0,
    Warning = 1,
    Critical = 2,
}

/// Exit status of a check that could not reach a verdict (bad flag, unreachable store):
/// Nagios' UNKNOWN. The message names the problem and its code in the error table.
pub const EXIT_UNKNOWN: i32 = 3;

/// Like [`main`] for a check: a verdict is the exit status, and any error is UNKNOWN.
pub fn main_check<C: clap::Parser>(
    tool: &'static str,
    run: impl FnOnce(C) -> Result<Verdict>,
) -> ! {
    on_panic(|e| {
        note(format!("UNKNOWN: {e} (error {})", e.code()));
        EXIT_UNKNOWN
    });
    match parse::<C>(tool).and_then(|c| {
        fault();
        run(c)
    }) {
        Ok(v) => std::process::exit(v as i32),
        Err(Error::LocalIo { source, .. }) if source.kind() == ErrorKind::BrokenPipe => {
            std::process::exit(EXIT_OK)
        }
        Err(e) => {
            note(format!("UNKNOWN: {e} (error {})", e.code()));
            std::process::exit(EXIT_UNKNOWN)
        }
    }
}

fn parse<C: clap::Parser>(tool: &'static str) -> Result<C> {
    let _ = TOOL.set(tool);
    match C::try_parse() {
        Ok(cli) => Ok(cli),
        Err(e) if !e.use_stderr() => {
            // --help and --version: not errors.
            let _ = e.print();
            std::process::exit(EXIT_OK);
        }
        Err(e) => Err(usage_error(&e)),
    }
}

/// One line out of clap's multi-line error, as the style asks of every message.
fn usage_error(e: &clap::Error) -> Error {
    let text = e.to_string();
    let first = text
        .lines()
        .next()
        .unwrap_or("bad command line")
        .trim_start_matches("error: ")
        .to_string();
    Error::Usage(format!("{first} (see --help)"))
}

/// Prints the outcome and picks the exit status. `standby_signal` is checked relative to the
/// working directory, which PostgreSQL sets to the data directory.
fn exit_code(role: Role, result: Result<()>, standby_signal: &Path) -> i32 {
    let err = match result {
        Ok(()) => return EXIT_OK,
        // Whoever reads our stdout went away (`wal-fetch NAME - | head`): not a failure.
        Err(Error::LocalIo { source, .. }) if source.kind() == ErrorKind::BrokenPipe => {
            return EXIT_OK;
        }
        Err(e) => e,
    };
    note(&err);
    match role {
        Role::Standard => err.code(),
        Role::RestoreCommand if err.code() == EXIT_NOT_FOUND => EXIT_NOT_FOUND,
        Role::RestoreCommand if standby_signal.exists() => {
            // A standby must keep polling the archive through an outage rather than stop;
            // exit 1 makes PostgreSQL try streaming and then this command again.
            note(format!(
                "ERROR (exit {} on a recovery, reported as 1 because standby.signal is present so the standby retries)",
                err.code() + RESTORE_COMMAND_OFFSET
            ));
            EXIT_NOT_FOUND
        }
        Role::RestoreCommand => err.code() + RESTORE_COMMAND_OFFSET,
    }
}

/// Starts this program again, with `extra` before this call's own arguments, as a helper
/// that outlives the call: detached from the call's output (PostgreSQL, or whoever runs the
/// call, must not wait for it) and in a process group of its own, so that the signals
/// PostgreSQL sends its child's group at shutdown don't kill it halfway: it watches the
/// postmaster and exits by itself. It is not waited for; init reaps it when it ends.
pub fn spawn_helper(extra: &[&std::ffi::OsStr]) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    std::process::Command::new(exe)
        .process_group(0)
        // Buffers of 256 KiB or more each their own mapping, returned when freed: glibc
        // otherwise raises its mmap threshold to the largest buffer freed so far (a 4 MiB
        // compression piece, a segment), after which such buffers come from per-thread
        // heaps that keep their peak, and a helper with eight workers holds ~100 MiB for
        // 40 MiB of live data (measured: the archiver's VmHWM, --jobs 8, 103 → 27 MiB).
        .env("MALLOC_MMAP_THRESHOLD_", "262144")
        .args(extra)
        .args(std::env::args_os().skip(1))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(drop)
}

/// How much lower than its caller's a helper that feeds a single PostgreSQL process runs.
const HELPER_NICENESS: i32 = 10;

/// Lowers this helper's CPU priority, so that when the cores are all busy PostgreSQL's own
/// process wins them. Recovery replays in one process (the startup process) while the
/// prefetcher decompresses and hashes with two threads per download: at equal priority,
/// eight such threads on two cores leave the startup process a fifth of a core, and recovery
/// waits on the very helper meant to hide the store. Best effort: a failure is harmless.
pub fn yield_cpu_to_postgres() {
    let _ = rustix::process::nice(HELPER_NICENESS);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_command_statuses() {
        let d = tempfile::tempdir().unwrap();
        let signal = d.path().join("standby.signal");
        let nf = || Err(Error::NotFound { key: "k".into() });
        let down = || Err(Error::Unavailable("x".into()));
        assert_eq!(exit_code(Role::RestoreCommand, Ok(()), &signal), 0);
        assert_eq!(exit_code(Role::RestoreCommand, nf(), &signal), 1);
        assert_eq!(exit_code(Role::RestoreCommand, down(), &signal), 133);
        assert_eq!(
            exit_code(Role::RestoreCommand, Err(Error::Usage("x".into())), &signal),
            130
        );
        assert_eq!(exit_code(Role::Standard, down(), &signal), 5);
        std::fs::write(&signal, "").unwrap();
        assert_eq!(exit_code(Role::RestoreCommand, down(), &signal), 1);
        assert_eq!(exit_code(Role::RestoreCommand, nf(), &signal), 1);
    }
}
