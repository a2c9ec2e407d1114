//! A progress line on stderr while a pass copies, only when stderr is a terminal (cron
//! and services get the JSON line on stdout and nothing else).

use std::time::Instant;

/// A progress line on stderr while objects are copied, when stderr is a terminal.
pub struct Progress {
    total: usize,
    shown: Option<std::sync::Mutex<(Instant, usize, u64)>>,
}

impl Progress {
    pub fn new(total: usize) -> Self {
        use std::io::IsTerminal;
        let shown = (total > 0 && std::io::stderr().is_terminal())
            .then(|| std::sync::Mutex::new((Instant::now(), 0, 0)));
        Progress { total, shown }
    }

    pub fn step(&self, bytes: u64) {
        let Some(m) = &self.shown else { return };
        let mut s = pitrkit::io::lock(m);
        s.1 += 1;
        s.2 += bytes;
        if s.0.elapsed().as_millis() >= 500 || s.1 == self.total {
            s.0 = Instant::now();
            eprint!(
                "\rpitr-copy: {}/{} objects, {:.1} MB",
                s.1,
                self.total,
                s.2 as f64 / 1e6
            );
        }
    }

    pub fn done(&self) {
        if self.shown.is_some() {
            eprintln!();
        }
    }
}
