//! A small bounded worker pool: the tools parallelise over independent items (files, chunks)
//! with a fixed number of threads, so memory stays bounded by `jobs`, not by the data size.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::error::{Error, Result};

/// Runs `f` on every item with `jobs` threads and returns the results in item order. The
/// first error stops the others from taking new items and is returned.
pub fn map<T: Sync, R: Send>(
    jobs: usize,
    items: &[T],
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            s.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    match f(item) {
                        Ok(r) => lock(&results)[i] = Some(r),
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            lock(&first_error).get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = lock(&first_error).take() {
        return Err(e);
    }
    let results = std::mem::take(&mut *lock(&results));
    Ok(results.into_iter().flatten().collect())
}

/// A poisoned lock only means a worker panicked, which the scope re-raises anyway.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The default number of workers: one per CPU.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Workers for work that waits on a remote store: each request spends most of its time on a
/// round trip, not a CPU, so more requests in flight than cores keeps both busy.
pub fn default_jobs_for(location: &crate::settings::RepoLocation) -> usize {
    match location {
        crate::settings::RepoLocation::Dir(_) => default_jobs(),
        crate::settings::RepoLocation::S3 { .. } => default_jobs() * 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_stops_on_error() {
        let items: Vec<u32> = (0..100).collect();
        assert_eq!(
            map(4, &items, |i| Ok(i * 2)).unwrap(),
            items.iter().map(|i| i * 2).collect::<Vec<_>>()
        );
        let e = map(3, &items, |i| {
            if *i == 50 {
                Err(Error::Usage("boom".into()))
            } else {
                Ok(*i)
            }
        });
        assert_eq!(e.unwrap_err().to_string(), "boom");
        assert!(map(2, &Vec::<u32>::new(), |i| Ok(*i)).unwrap().is_empty());
    }
}
