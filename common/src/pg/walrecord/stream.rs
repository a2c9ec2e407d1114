//! A segment summarized as it streams past (wal-push reads each segment once, to compress
//! it): feed the bytes in pieces of any size, then finish. Memory stays bounded by a page
//! header and a few records' first
//! [`MAX_OPEN_RECORD`](super::MAX_OPEN_RECORD) bytes (`reader`), whatever the
//! segment size; [`summarize`](super::summarize) is this fed the whole segment at once.

use super::reader::{Reader, Stop};
use super::{
    Event, InvalidReason, MAX_XIDS_HELD, OpenHead, OpenTail, PrepareSummary,
    SUMMARY_FORMAT_VERSION, SegmentSummary, TxnSummary, WalEnd, hex, xid_ranges,
};
use crate::error::{Error, Result};
use crate::pg::wal::{self, LONG_PAGE_HEADER_SIZE, Lsn, SegmentHeader};

/// Summarizes one segment fed in pieces.
pub struct Summarizer {
    state: State,
    /// How many bytes were fed, the segment's and any past its end.
    fed: u64,
}

enum State {
    /// Fewer than the long page header's bytes so far.
    Start(Vec<u8>),
    /// A first page that is not a supported major's long header: its bytes, for the error
    /// `finish` reports (which names the segment).
    Refused(Vec<u8>),
    Reading(Box<Reading>),
}

struct Reading {
    summary: SegmentSummary,
    reader: Reader,
    /// The xids of the transaction ends so far (`None` once past [`MAX_XIDS_HELD`]).
    xids: Option<Vec<u32>>,
}

impl Default for Summarizer {
    fn default() -> Self {
        Summarizer {
            state: State::Start(Vec::with_capacity(LONG_PAGE_HEADER_SIZE)),
            fed: 0,
        }
    }
}

impl Summarizer {
    pub fn new() -> Self {
        Summarizer::default()
    }

    /// The next bytes of the segment, in order.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.feed_with(bytes, &mut |_| {});
    }

    /// [`Summarizer::feed`], handing every event decoded from these bytes to `on_event`
    /// as well, in WAL order.
    pub fn feed_with(&mut self, mut bytes: &[u8], on_event: &mut dyn FnMut(&Event)) {
        let at = self.fed;
        self.fed = self.fed.saturating_add(bytes.len() as u64);
        if let State::Start(first) = &mut self.state {
            let k = (LONG_PAGE_HEADER_SIZE - first.len()).min(bytes.len());
            first.extend_from_slice(&bytes[..k]);
            bytes = &bytes[k..];
            let Ok(long) = <[u8; LONG_PAGE_HEADER_SIZE]>::try_from(&first[..]) else {
                return;
            };
            self.state = match wal::read_long_header("", &long) {
                Ok(h) => State::Reading(Box::new(Reading {
                    summary: summary(&h),
                    reader: Reader::new(&h, &long),
                    xids: Some(Vec::new()),
                })),
                Err(_) => State::Refused(long.to_vec()),
            };
        }
        let State::Reading(r) = &mut self.state else {
            return;
        };
        // Only the segment's own bytes: what a longer file holds past it is not read.
        let done = (at as usize).max(LONG_PAGE_HEADER_SIZE);
        let room = (r.summary.segment_size as usize).saturating_sub(done);
        let summary = &mut r.summary;
        let xids = &mut r.xids;
        r.reader.feed(bytes.get(..room).unwrap_or(bytes), &mut |e| {
            summary.add(&e);
            if let (Event::Commit(t) | Event::Abort(t), Some(held)) = (&e, xids.as_mut()) {
                if held.len() < MAX_XIDS_HELD {
                    held.push(t.xid);
                } else {
                    *xids = None;
                }
            }
            on_event(&e);
        });
    }

    /// How many bytes the walk holds now (tests check it stays bounded).
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        match &self.state {
            State::Start(b) | State::Refused(b) => b.capacity(),
            State::Reading(r) => r.reader.held(),
        }
    }

    /// The summary of everything fed, as [`summarize`](super::summarize) gives it for
    /// the whole segment: only a first page that is not a supported major's long header
    /// is an error.
    pub fn finish(self, display: &str) -> Result<SegmentSummary> {
        let r = match self.state {
            State::Start(b) | State::Refused(b) => {
                return Err(wal::read_long_header(display, &b).err().unwrap_or_else(|| {
                    Error::invalid_input(display, "not a WAL segment's first page")
                }));
            }
            State::Reading(r) => *r,
        };
        let mut s = r.summary;
        s.xact_xids = r.xids.and_then(xid_ranges);
        let (walked, stop) = r.reader.finish();
        let complete = self.fed >= u64::from(s.segment_size);
        s.first_record = walked.first_record.map(Lsn);
        s.records_end = walked.records_end.map(Lsn);
        s.records = walked.records;
        s.end = match stop {
            // A short file: valid WAL ends where its bytes do.
            Stop::SegmentEnd if !complete => WalEnd::Invalid {
                lsn: Lsn(s.segment_start.0.saturating_add(self.fed)),
                reason: InvalidReason::Truncated,
            },
            Stop::SegmentEnd => WalEnd::SegmentEnd,
            Stop::Switch(lsn) => WalEnd::Switch { lsn: Lsn(lsn) },
            Stop::Invalid(lsn, reason) => WalEnd::Invalid {
                lsn: Lsn(lsn),
                reason,
            },
        };
        s.open_head = walked.head.map(|(remaining_length, b)| OpenHead {
            remaining_length,
            bytes: hex(&b),
        });
        if complete {
            s.open_tail = walked.tail.map(|(lsn, total_length, b)| OpenTail {
                lsn: Lsn(lsn),
                total_length,
                bytes: hex(&b),
            });
        }
        Ok(s)
    }
}

/// The summary of a segment with this long header before any record is read.
fn summary(h: &SegmentHeader) -> SegmentSummary {
    SegmentSummary {
        format_version: SUMMARY_FORMAT_VERSION,
        pg_major: h.pg_major,
        system_identifier: h.system_identifier,
        timeline: h.timeline.0,
        segment_start: h.page_address,
        segment_size: h.segment_size,
        first_record: None,
        records_end: None,
        records: 0,
        end: WalEnd::SegmentEnd,
        commits: TxnSummary::default(),
        aborts: TxnSummary::default(),
        prepares: PrepareSummary::default(),
        restore_points: Vec::new(),
        checkpoints: Vec::new(),
        end_of_recovery: Vec::new(),
        unlisted: 0,
        xact_xids: None,
        open_head: None,
        open_tail: None,
    }
}
