//! Figures as the tools report them in their JSON summaries, rounded the same way
//! everywhere so that they read well and compare across tools and runs.

use std::time::Duration;

/// `x` rounded to `decimals` places.
pub fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

/// A duration in seconds, to the millisecond.
pub fn seconds(d: Duration) -> f64 {
    round(d.as_secs_f64(), 3)
}

/// Throughput in MB/s (10^6 bytes), to one decimal; a zero duration counts as 1 ns.
pub fn mb_per_s(bytes: u64, seconds: f64) -> f64 {
    round(bytes as f64 / 1e6 / seconds.max(1e-9), 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_as_reported() {
        assert_eq!(round(1.23456, 4), 1.2346);
        assert_eq!(seconds(Duration::from_micros(1_234_567)), 1.235);
        assert_eq!(mb_per_s(25_000_000, 2.0), 12.5);
        assert!(mb_per_s(1, 0.0) > 0.0);
    }
}
