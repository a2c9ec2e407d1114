//! PostgreSQL's own formats and rules: WAL names and page headers, the supported majors,
//! recovery targets and `postgresql.conf` quoting, the data directory a manifest describes,
//! and the client connection.

pub mod datadir;
pub mod db;
pub mod major;
pub mod postmaster;
pub mod target;
pub mod wal;
pub mod walrecord;
