//! `--max-rate`: a bound on the bytes written per second, shared by every worker, so a copy
//! to another region does not take a link the archiver needs.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use pitrkit::error::{Error, Result};

/// Bytes per second, from `50MB/s`, `200M`, `1G`, `800k` or a bare number of bytes.
pub fn parse(s: &str) -> Result<u64> {
    let bad = || {
        Error::Usage(format!(
            "bad --max-rate '{s}': use bytes per second, e.g. 50MB/s, 200M, 1G"
        ))
    };
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    let t = t.strip_suffix(['B', 'b']).unwrap_or(t);
    let (num, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" => 1,
        "k" => 1_000,
        "m" => 1_000_000,
        "g" => 1_000_000_000,
        "ki" => 1 << 10,
        "mi" => 1 << 20,
        "gi" => 1 << 30,
        _ => return Err(bad()),
    };
    let n: f64 = num.trim().parse().map_err(|_| bad())?;
    let bytes = n * mult as f64;
    if !(bytes.is_finite() && bytes >= 1.0) {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// A running average held under a limit: after `n` more bytes, a caller waits until the
/// total since the start could have moved at `bytes_per_second`.
pub struct Rate {
    bytes_per_second: u64,
    state: Mutex<(Instant, u64)>,
}

impl Rate {
    pub fn new(bytes_per_second: u64) -> Self {
        Rate {
            bytes_per_second: bytes_per_second.max(1),
            state: Mutex::new((Instant::now(), 0)),
        }
    }

    pub fn take(&self, n: usize) {
        let due = {
            let mut s = pitrkit::io::lock(&self.state);
            s.1 = s.1.saturating_add(n as u64);
            let at = Duration::from_secs_f64(s.1 as f64 / self.bytes_per_second as f64);
            (s.0 + at).saturating_duration_since(Instant::now())
        };
        if !due.is_zero() {
            std::thread::sleep(due);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_as_people_write_them() {
        assert_eq!(parse("50MB/s").unwrap(), 50_000_000);
        assert_eq!(parse("200M").unwrap(), 200_000_000);
        assert_eq!(parse("1G").unwrap(), 1_000_000_000);
        assert_eq!(parse("1.5MiB/s").unwrap(), 1_572_864);
        assert_eq!(parse("800k").unwrap(), 800_000);
        assert_eq!(parse("4096").unwrap(), 4096);
        for bad in ["", "fast", "-5M", "0", "5X", "NaN"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_rate_holds_the_average() {
        let r = Rate::new(10_000_000);
        let t = Instant::now();
        for _ in 0..4 {
            r.take(500_000);
        }
        // 2 MB at 10 MB/s: about 0.2 s.
        assert!(
            t.elapsed() >= Duration::from_millis(190),
            "{:?}",
            t.elapsed()
        );
    }
}
