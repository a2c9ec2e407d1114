//! Every integration test in one binary (one link instead of ten), a module per concern:
//!
//! - `wal_archive`: PostgreSQL archiving through wal-push and recovering through wal-fetch;
//! - `exit_codes`: every documented exit status, and stores that misbehave (the proxy);
//! - `pitr`: base backups and point-in-time recovery, layouts (tablespaces, pg_wal elsewhere);
//! - `check`: pitr-check status and verify; `drill`: restore drills;
//! - `copy`: pitr-copy, a verified second copy in another store;
//! - `retention`: expire, keep marks, locks against backups, restores and drills;
//! - `encryption`: encryption at rest; `hostile`: a repository nobody should have to trust;
//! - `ahead_and_prefetch`: the look-ahead archiver and the prefetcher stay correct;
//! - `versions`: one end-to-end test per supported PostgreSQL major;
//! - `walrecord`: the WAL record reader against what each major writes (and pg_waldump),
//!   records across segment boundaries, a timeline switch (`walrecord_help`: its helpers);
//! - `reach`: exact recovery windows from the WAL summaries, targets checked before a restore.

mod ahead_and_prefetch;
mod check;
mod copy;
mod drill;
mod encryption;
mod exit_codes;
mod hostile;
mod pitr;
mod reach;
mod retention;
mod versions;
mod wal_archive;
mod walrecord;
mod walrecord_help;
