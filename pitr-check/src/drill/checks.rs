//! What a drill checks inside the restored server: pg_amcheck, and the runbook's queries.

use std::path::Path;
use std::process::Stdio;

use pitrkit::error::{Error, Result};
use postgres::{Client, SimpleQueryMessage};

use super::script::{Step, Value};
use super::server::{Scratch, Server, error_message};
use super::{Outcome, Report};

/// pg_amcheck over every database: heap and B-tree structure, and that every heap tuple is
/// in its indexes. `--install-missing` creates the amcheck extension where it is missing,
/// which is harmless in a throwaway cluster.
pub(super) fn amcheck(
    scratch: &Scratch,
    bindir: &Path,
    server: &Server,
    user: &str,
) -> Result<Outcome> {
    let exe = bindir.join("pg_amcheck");
    if !exe.is_file() {
        return Ok(Ok("pg_amcheck not installed".into()));
    }
    let out = scratch
        .command(&exe)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LC_ALL", "C")
        .arg("-h")
        .arg(server.socket_dir())
        .args(["-p", &server.port().to_string(), "-U", user])
        .args(["--all", "--install-missing", "--heapallindexed"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::local_io(&exe, e))?;
    if out.status.success() {
        return Ok(Ok(
            "pg_amcheck --all --heapallindexed found no corruption".into()
        ));
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(6)
        .collect();
    Ok(Err(format!(
        "pg_amcheck {}: {}",
        out.status,
        lines.join(" | ")
    )))
}

/// Runs the --sql script: each query is a check named `sql:LINE`. A `\c` that fails is a
/// failed check too, and the queries after it fail as not run.
pub(super) fn run_script(
    steps: &[Step],
    server: &Server,
    user: &str,
    first: Client,
    report: &mut Report,
) {
    // The connection the next query runs on, or why there is none.
    let mut db: std::result::Result<Client, String> = Ok(first);
    for step in steps {
        match step {
            Step::Connect { line, dbname } => {
                db = server.connect(user, dbname).map_err(|e| {
                    format!(
                        "cannot connect to database {dbname} (line {line}): {}",
                        error_message(&e)
                    )
                });
                if let Err(why) = &db {
                    report.record(format!("sql:{line}"), Err(why.clone()));
                }
            }
            Step::Query { line, sql, expect } => {
                let outcome = match &mut db {
                    Ok(client) => query(client, sql, expect.as_ref()),
                    Err(why) => Err(format!("{}: not run: {why}", one_line(sql))),
                };
                report.record(format!("sql:{line}"), outcome);
            }
        }
    }
}

/// Runs one query through the simple protocol, which returns every value as PostgreSQL's
/// text, the form a runbook writes its expectation in.
fn query(db: &mut Client, sql: &str, expect: Option<&Value>) -> Outcome {
    let shown = one_line(sql);
    let messages = db
        .simple_query(sql)
        .map_err(|e| format!("{shown}: {}", error_message(&e)))?;
    let got = messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .and_then(|r| r.try_get(0).ok())
        .map(|v| v.map_or(Value::Null, |t| Value::Text(t.to_string())));
    match (expect, got) {
        (None, Some(g)) => Ok(format!("{shown} → {g}")),
        (None, None) => Ok(format!("{shown} → ok")),
        (Some(e), Some(g)) if *e == g => Ok(format!("{shown} → {g} as expected")),
        (Some(e), Some(g)) => Err(format!("{shown}: expected {e}, got {g}")),
        (Some(e), None) => Err(format!("{shown}: expected {e}, got no rows")),
    }
}

/// A query as a report shows it: on one line, at most 80 characters.
fn one_line(sql: &str) -> String {
    let flat = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(80) {
        Some((at, _)) => format!("{}…", &flat[..at]),
        None => flat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_shown_on_one_short_line() {
        assert_eq!(
            one_line("select *\n  from t\n where i = 1;"),
            "select * from t where i = 1;"
        );
        let long = format!("select '{}';", "é".repeat(100));
        let shown = one_line(&long);
        assert_eq!(shown.chars().count(), 81);
        assert!(shown.ends_with('…'));
    }
}
