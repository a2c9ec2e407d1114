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
/// holds its big buffers for less time. Weighted ([`Slots::take_n`]), it is a memory budget:
/// an item reserves what it may need at most and gives back what it did not use.
pub struct Slots {
    capacity: usize,
    free: Mutex<usize>,
    freed: std::sync::Condvar,
}

impl Slots {
    pub fn new(n: usize) -> Self {
        Slots {
            capacity: n.max(1),
            free: Mutex::new(n.max(1)),
            freed: std::sync::Condvar::new(),
        }
    }

    /// Waits for a free slot; it is given back when the guard drops.
    pub fn take(&self) -> Slot<'_> {
        self.take_n(1)
    }

    /// Waits until `n` units are free (all of them, for an `n` above the capacity, so that
    /// one oversized item still runs, alone) and takes them until the guard drops.
    pub fn take_n(&self, n: usize) -> Slot<'_> {
        let n = n.clamp(1, self.capacity);
        let mut free = lock(&self.free);
        while *free < n {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= n;
        Slot { slots: self, n }
    }
}

/// Units taken from [`Slots`], given back when dropped.
pub struct Slot<'a> {
    slots: &'a Slots,
    n: usize,
}

impl Slot<'_> {
    /// Gives back all but `keep` units (at least one stays held until the guard drops).
    pub fn shrink_to(&mut self, keep: usize) {
        let keep = keep.clamp(1, self.n);
        let back = self.n - keep;
        if back > 0 {
            self.n = keep;
            *lock(&self.slots.free) += back;
            self.slots.freed.notify_all();
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *lock(&self.slots.free) += self.n;
        self.slots.freed.notify_all();
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
    fn weighted_slots_give_back_what_is_not_used() {
        let budget = Slots::new(10);
        let mut a = budget.take_n(8);
        assert_eq!(*lock(&budget.free), 2);
        a.shrink_to(3);
        assert_eq!(*lock(&budget.free), 7);
        // More than the capacity waits for all of it, then runs alone.
        let waiter = std::thread::scope(|s| {
            let h = s.spawn(|| {
                let _all = budget.take_n(50);
                *lock(&budget.free)
            });
            std::thread::sleep(std::time::Duration::from_millis(20));
            drop(a);
            h.join().unwrap()
        });
        assert_eq!(waiter, 0);
        assert_eq!(*lock(&budget.free), 10);
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
