//! Helpers with no knowledge of PostgreSQL or repositories: buffers, the worker pool,
//! durable local files, and the seconds and rates the tools report.

pub mod buffer;
pub mod local;
pub mod measure;
pub mod parallel;

/// A mutex's guard even when another thread panicked while holding it: the panic is
/// reported where that thread is joined, and the data (queues, sets of paths) stays usable.
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
