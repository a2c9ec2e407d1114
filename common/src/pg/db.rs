//! Talking to PostgreSQL: one connection helper and one way to report its errors, shared by
//! bb-push (backup functions) and pitr-check (archiver statistics, restore drills).

use postgres::{Client, NoTls};

use crate::error::{Error, Result};

/// Maps a driver error to [`Error::Database`], preferring the server's own message (the
/// driver's display adds only "db error:").
pub fn db_err(what: &str) -> impl Fn(postgres::Error) -> Error + '_ {
    move |e| Error::Database(format!("{what}: {}", message(&e)))
}

/// The server's message without the driver's wrapping, when there is one.
pub fn message(e: &postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

/// Connects without TLS: pitrkit talks to the cluster on its own host (a socket or loopback).
pub fn connect(conninfo: &str) -> Result<Client> {
    Client::connect(conninfo, NoTls).map_err(db_err("cannot connect"))
}
