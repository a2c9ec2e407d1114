//! Helpers with no knowledge of PostgreSQL or repositories: buffers, the worker pool,
//! durable local files, and the seconds and rates the tools report.

pub mod buffer;
pub mod measure;
pub mod parallel;
