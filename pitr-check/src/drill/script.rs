//! The `--sql` file of `pitr-check drill`: queries to run on the restored cluster, some with
//! the result the runbook expects of them.
//!
//! The format is a small subset of what psql reads, so a file can be tried by hand with
//! `psql -f` first:
//!
//! ```text
//! -- Lines starting with `--` are comments, except `-- expect:` lines.
//! -- expect: 10500
//! select count(*) from customers;
//!
//! -- A value in single quotes is exact text: spaces kept, '' is empty, 'NULL' is the word.
//! -- expect: NULL
//! select max(deleted_at) from customers;
//!
//! \c billing
//! -- No expectation: the statement must just succeed.
//! select * from invoices
//!  where id = 1;
//! ```
//!
//! - `\c DBNAME` (or `\connect DBNAME`): the queries after it run in that database; the
//!   first ones run in `postgres`.
//! - `-- expect: VALUE`: the next query's first row's first column, as PostgreSQL prints it
//!   as text, must equal VALUE (surrounding spaces trimmed). `NULL` means SQL NULL.
//! - A query starts on a line that is none of the above and ends at the first line that
//!   ends with `;`. It is sent as it is, so it may span lines and hold `--` comments.
//!
//! Mistakes in the file (a query without `;`, an expectation with no query after it, another
//! backslash command) are reported before anything is restored: they are the caller's, not
//! the backup's.

use std::path::Path;

use pitrkit::error::{Error, Result};

/// One thing the script asks for, with the line it starts on (checks are named by it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `\c DBNAME`: the following queries run in this database.
    Connect { line: usize, dbname: String },
    /// A statement, and what its first value must be when the script says.
    Query {
        line: usize,
        sql: String,
        expect: Option<Value>,
    },
}

/// The first column of a query's first row, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Text(String),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Text(t) => write!(f, "'{t}'"),
        }
    }
}

/// Reads a script; `path` names the file in messages.
pub fn parse(path: &Path, text: &str) -> Result<Vec<Step>> {
    let at =
        |line: usize, why: &str| Error::invalid_input(format!("{}:{line}", path.display()), why);
    let mut steps = Vec::new();
    // A statement being read: its first line and its text so far.
    let mut pending: Option<(usize, String)> = None;
    // An `-- expect:` line waiting for its statement.
    let mut expect: Option<(usize, Value)> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let t = raw.trim();
        if let Some((line, mut sql)) = pending.take() {
            sql.push('\n');
            sql.push_str(raw);
            pending = Some((line, sql));
        } else if let Some(v) = expectation(t) {
            if let Some((first, _)) = expect {
                return Err(at(
                    n,
                    &format!("a second expectation for the query after line {first}"),
                ));
            }
            expect = Some((n, v));
            continue;
        } else if t.is_empty() || t.starts_with("--") {
            continue;
        } else if let Some(cmd) = t.strip_prefix('\\') {
            if let Some((line, _)) = expect {
                return Err(at(line, "-- expect: is not followed by a query"));
            }
            let dbname = connect_target(cmd)
                .ok_or_else(|| at(n, "the only backslash command understood is \\c DBNAME"))?;
            steps.push(Step::Connect { line: n, dbname });
            continue;
        } else {
            pending = Some((n, raw.to_string()));
        }
        // A statement ends with the first line that ends with ';'.
        if t.ends_with(';')
            && let Some((line, sql)) = pending.take()
        {
            steps.push(query(line, sql, expect.take()));
        }
    }
    if let Some((line, _)) = pending {
        return Err(at(
            line,
            "the query starting here does not end with ';' at the end of a line",
        ));
    }
    if let Some((line, _)) = expect {
        return Err(at(line, "-- expect: is not followed by a query"));
    }
    Ok(steps)
}

fn query(line: usize, sql: String, expect: Option<(usize, Value)>) -> Step {
    Step::Query {
        line,
        sql: sql.trim().to_string(),
        expect: expect.map(|(_, v)| v),
    }
}

/// The value of an `-- expect:` line.
fn expectation(line: &str) -> Option<Value> {
    let v = line
        .strip_prefix("--")?
        .trim_start()
        .strip_prefix("expect:")?
        .trim();
    Some(if v == "NULL" {
        Value::Null
    } else if let Some(q) = v.strip_prefix('\'').and_then(|q| q.strip_suffix('\'')) {
        Value::Text(q.to_string())
    } else {
        Value::Text(v.to_string())
    })
}

/// The database of `c DBNAME` / `connect DBNAME` (the backslash already stripped); a name in
/// double quotes may hold spaces, as in psql.
fn connect_target(cmd: &str) -> Option<String> {
    let (name, rest) = cmd.split_once(char::is_whitespace)?;
    if name != "c" && name != "connect" {
        return None;
    }
    let db = rest.trim();
    let db = db
        .strip_prefix('"')
        .and_then(|d| d.strip_suffix('"'))
        .unwrap_or(db);
    (!db.is_empty()).then(|| db.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Vec<Step>> {
        parse(Path::new("checks.sql"), text)
    }

    fn q(line: usize, sql: &str, expect: Option<Value>) -> Step {
        Step::Query {
            line,
            sql: sql.into(),
            expect,
        }
    }

    #[test]
    fn queries_expectations_and_databases() {
        let steps = p("-- a comment\n\
                       -- expect: 10500\n\
                       select count(*) from t;\n\
                       \n\
                       --expect: NULL\n\
                       select null;\n\
                       -- expect: '  x '\n\
                       select '  x ';\n\
                       -- expect: 'NULL'\n\
                       select 'NULL';\n\
                       \\c \"my db\"\n\
                       select *\n  from t -- why\n  where i = 1;\n\
                       \\connect postgres\n\
                       -- expect:\n\
                       select '';\n")
        .unwrap();
        assert_eq!(
            steps,
            vec![
                q(
                    3,
                    "select count(*) from t;",
                    Some(Value::Text("10500".into()))
                ),
                q(6, "select null;", Some(Value::Null)),
                q(8, "select '  x ';", Some(Value::Text("  x ".into()))),
                q(10, "select 'NULL';", Some(Value::Text("NULL".into()))),
                Step::Connect {
                    line: 11,
                    dbname: "my db".into()
                },
                q(12, "select *\n  from t -- why\n  where i = 1;", None),
                Step::Connect {
                    line: 15,
                    dbname: "postgres".into()
                },
                q(17, "select '';", Some(Value::Text(String::new()))),
            ]
        );
    }

    #[test]
    fn mistakes_name_their_line() {
        let err = |text: &str| p(text).unwrap_err().to_string();
        assert!(
            err("select 1\n").starts_with("checks.sql:1: "),
            "{}",
            err("select 1\n")
        );
        assert!(
            err("-- expect: 1\n\\c x\nselect 1;\n")
                .contains("checks.sql:1: -- expect: is not followed")
        );
        assert!(err("select 1;\n-- expect: 1\n").contains("checks.sql:2:"));
        assert!(err("-- expect: 1\n-- expect: 2\nselect 1;\n").contains("checks.sql:2: a second"));
        assert!(err("\\d t\n").contains("\\c DBNAME"));
        assert!(err("\\c\n").contains("checks.sql:1:"));
    }
}
