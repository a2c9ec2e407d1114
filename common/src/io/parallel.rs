//! A small bounded worker pool: the tools parallelise over independent items (files, chunks)
//! with a fixed number of threads, so memory stays bounded by `jobs`, not by the data size.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::error::{Error, Result};
use crate::io::lock;

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

/// A counting semaphore: at most `n` holders at once. Lets more items be in flight than
/// there are cores (their round trips overlap) while only as many as there are cores do the
/// CPU-bound part, so each finishes its compression sooner, starts its upload sooner, and
/// holds its big buffers for less time.
pub struct Slots {
    free: Mutex<usize>,
    freed: std::sync::Condvar,
}

impl Slots {
    pub fn new(n: usize) -> Self {
        Slots {
            free: Mutex::new(n.max(1)),
            freed: std::sync::Condvar::new(),
        }
    }

    /// Waits for a free slot; it is given back when the guard drops.
    pub fn take(&self) -> Slot<'_> {
        let mut free = lock(&self.free);
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Slot(self)
    }
}

/// One taken slot of [`Slots`].
pub struct Slot<'a>(&'a Slots);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *lock(&self.0.free) += 1;
        self.0.freed.notify_one();
    }
}

/// The default number of workers: one per CPU.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_bound_the_holders() {
        let slots = Slots::new(2);
        let holding = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let items: Vec<u32> = (0..40).collect();
        map(8, &items, |_| {
            let _slot = slots.take();
            let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(2));
            holding.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        })
        .unwrap();
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }

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
