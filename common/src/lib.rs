//! The shared library of the pitrkit tools: settings, storage backends, the repository
//! format, WAL knowledge, the object envelope, errors and the runner that owns exit codes.

pub mod archive;
pub mod args;
pub mod buffer;
pub mod chunk;
pub mod crypto;
pub mod datadir;
pub mod db;
pub mod error;
pub mod layout;
pub mod lock;
pub mod manifest;
pub mod measure;
pub mod object;
pub mod parallel;
pub mod postgres;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod runner;
pub mod settings;
pub mod storage;
pub mod target;
pub mod wal;

pub use error::{Error, Result};

#[cfg(test)]
mod proptests;
