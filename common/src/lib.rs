//! The shared library of the pitrkit tools. From the bottom (docs/ARCHITECTURE.md says who
//! may use whom): `error`, `io`, `storage`, `pg`, `repo`, `restore`, then `args`,
//! `settings` and `runner`, the edge every tool's `main` goes through.

pub mod args;
pub mod error;
pub mod io;
pub mod pg;
pub mod repo;
pub mod restore;
pub mod runner;
pub mod settings;
pub mod storage;

pub use error::{Error, Result};

#[cfg(test)]
mod proptests;
