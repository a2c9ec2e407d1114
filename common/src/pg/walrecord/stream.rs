//! A segment summarized as it streams past (wal-push reads each segment once, to compress
//! it): feed the bytes in pieces of any size, then finish.
//!
//! This first version keeps the bytes and summarizes them at the end; memory grows with
//! the segment (16 MiB by default, up to 1 GiB).

use super::{SegmentSummary, summarize};
use crate::error::Result;

/// Summarizes one segment fed in pieces.
#[derive(Default)]
pub struct Summarizer {
    bytes: Vec<u8>,
}

impl Summarizer {
    pub fn new() -> Self {
        Summarizer::default()
    }

    /// The next bytes of the segment, in order.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    /// The summary of everything fed, as [`summarize`] gives it for the whole segment.
    pub fn finish(self, display: &str) -> Result<SegmentSummary> {
        summarize(display, &self.bytes)
    }
}
