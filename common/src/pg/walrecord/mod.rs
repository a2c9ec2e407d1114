//! A pure reader of the records in one WAL segment that sums up what point-in-time
//! recovery needs to know about it: which transactions ended there and when, restore
//! points, checkpoints, timeline switches, and where valid WAL ends. No I/O: it reads the
//! bytes it is given and never panics on any of them.
//!
//! [`summarize`] walks every record that *starts* in the segment (`reader`), checks its
//! CRC, and decodes the few kinds that matter (`decode`, reading what `held` keeps of a
//! record). The walk streams: a [`Summarizer`] (`stream`) is fed the segment in pieces of
//! any size, as wal-push reads it, holding a page header and a few records' first
//! [`MAX_OPEN_RECORD`] bytes, never the segment; [`summarize`] is one fed the whole
//! segment at once, so both give the same summary. Like PostgreSQL, it takes the
//! first record with a bad header or CRC as the end of valid WAL (a zeroed or recycled
//! tail), which the summary records rather than treats as an error.
//!
//! A record begun in the previous segment is not the segment's: it belongs to the summary
//! of the segment it starts in. One that starts here and continues into the next segment is
//! the summary's `open_tail`, and the next segment's first bytes are its `open_head`;
//! [`join`] decodes the record from the two when it is at most [`MAX_OPEN_RECORD`] bytes
//! long. A longer transaction-end record straddling two segments (a commit with thousands of
//! subtransactions, dropped relations or invalidation messages) is missed by both
//! summaries; its `open_tail` still names its LSN and length, so the gap is visible.

mod decode;
mod held;
mod reader;
mod stream;
#[cfg(test)]
pub(crate) mod synth;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_stream;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::Result;

use crate::pg::wal::Lsn;
pub use stream::Summarizer;

/// The version of the [`SegmentSummary`] document.
pub const SUMMARY_FORMAT_VERSION: u32 = 1;

/// The longest record kept in `open_tail`/`open_head` for [`join`]: a commit record of a
/// plain transaction is 34 bytes, one with a few dozen invalidation messages under 1 KiB.
pub const MAX_OPEN_RECORD: usize = 4096;

/// How many restore points, checkpoints and end-of-recovery records a summary lists
/// (they are rare; the bound only keeps a hostile segment's summary small).
pub const MAX_LISTED: usize = 256;

/// The most ranges `xact_xids` may have: transactions end nearly in the order their xids
/// were assigned, so a segment's transaction ends form few ranges; a summary past this
/// (a hostile segment, or thousands of interleaved long transactions) leaves them out.
pub const MAX_XID_RANGES: usize = 4096;

/// The most transaction ends a summarizer remembers while it streams (4 MiB of xids): a
/// 1 GiB segment of tiny transactions may have more, and then `xact_xids` is left out.
pub const MAX_XIDS_HELD: usize = 1 << 20;

/// What one segment holds, for point-in-time recovery. Times are RFC 3339 in UTC with
/// microseconds (PostgreSQL's `TimestampTz` precision); LSNs are written as PostgreSQL does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentSummary {
    pub format_version: u32,
    pub pg_major: u32,
    pub system_identifier: u64,
    /// The timeline in the segment's long page header (in the first segment of a new
    /// timeline, the old one: the segment is a copy up to the switch; later pages carry the
    /// new timeline, which `checkpoints` and `end_of_recovery` name).
    pub timeline: u32,
    /// The LSN of the segment's first byte.
    pub segment_start: Lsn,
    pub segment_size: u32,
    /// The first record that starts in this segment (after any continuation).
    pub first_record: Option<Lsn>,
    /// The end of the last complete, valid record.
    pub records_end: Option<Lsn>,
    /// How many complete, valid records start in this segment.
    pub records: u64,
    /// Why the walk ended.
    pub end: WalEnd,
    pub commits: TxnSummary,
    pub aborts: TxnSummary,
    /// `PREPARE TRANSACTION`s (their end is a commit or abort with `prepared`).
    pub prepares: PrepareSummary,
    pub restore_points: Vec<RestorePoint>,
    pub checkpoints: Vec<Checkpoint>,
    pub end_of_recovery: Vec<EndOfRecovery>,
    /// Events past [`MAX_LISTED`] per list, counted but not listed.
    pub unlisted: u64,
    /// The xids of every commit and abort in the segment (of a prepared transaction, its
    /// own), as sorted inclusive ranges: what `recovery_target_xid` can stop at. `null`
    /// when they were too many or too scattered to keep ([`MAX_XID_RANGES`]).
    pub xact_xids: Option<Vec<[u32; 2]>>,
    /// The continuation of a record begun in the previous segment.
    pub open_head: Option<OpenHead>,
    /// A record that starts here and continues in the next segment.
    pub open_tail: Option<OpenTail>,
}

/// Where and why reading the segment stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum WalEnd {
    /// Valid records up to the end of the segment (the last may continue in the next one).
    SegmentEnd,
    /// An `XLOG_SWITCH` record at `lsn`: the rest of the segment is padding.
    Switch { lsn: Lsn },
    /// No valid record at `lsn`: where recovery reading this segment would stop.
    Invalid { lsn: Lsn, reason: InvalidReason },
}

/// What made the record at the end of valid WAL invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalidReason {
    /// A page header with the wrong magic, flags, address or timeline (zeroed or recycled).
    PageHeader,
    /// `xl_tot_len` shorter than a record header (typically 0: zeroed space).
    RecordLength,
    /// `xl_prev` does not point at the previous record.
    RecordHeader,
    /// The record's CRC does not match.
    Crc,
    /// A continuation page is missing, or one appears where a record should start.
    Contrecord,
    /// The file ends before the segment does.
    Truncated,
}

/// Commits or aborts of one segment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxnSummary {
    pub count: u64,
    /// How many of them ended prepared transactions (`COMMIT/ROLLBACK PREPARED`).
    pub prepared: u64,
    /// The first and last in WAL order (the order recovery replays them in).
    pub first: Option<TxnEnd>,
    pub last: Option<TxnEnd>,
    /// The earliest and latest times: not always those of `first` and `last`, since a
    /// transaction takes its time before it inserts its record.
    pub min_time: Option<Timestamp>,
    pub max_time: Option<Timestamp>,
}

/// A transaction's commit or abort record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxnEnd {
    /// Where the record starts.
    pub lsn: Lsn,
    /// The transaction's id (for a prepared one, its own, not the finishing session's).
    pub xid: u32,
    /// `xact_time`: what `recovery_target_time` compares.
    pub time: Timestamp,
    /// `COMMIT PREPARED` / `ROLLBACK PREPARED`.
    pub prepared: bool,
}

/// The `PREPARE TRANSACTION`s of one segment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareSummary {
    pub count: u64,
    pub first: Option<Prepare>,
    pub last: Option<Prepare>,
}

/// A `PREPARE TRANSACTION` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prepare {
    pub lsn: Lsn,
    pub xid: u32,
    pub time: Timestamp,
    pub gid: String,
}

/// `pg_create_restore_point`'s record: what `recovery_target_name` looks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestorePoint {
    pub lsn: Lsn,
    pub time: Timestamp,
    pub name: String,
}

/// A checkpoint record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub lsn: Lsn,
    /// Where replay starting from this checkpoint begins.
    pub redo: Lsn,
    pub timeline: u32,
    /// Differs from `timeline` when the checkpoint opens a new timeline.
    pub prev_timeline: u32,
    /// The checkpoint's time (whole seconds, `pg_time_t`).
    pub time: Timestamp,
    /// `XLOG_CHECKPOINT_ONLINE`, else `XLOG_CHECKPOINT_SHUTDOWN`.
    pub online: bool,
}

/// `XLOG_END_OF_RECOVERY`: a promotion switched from `prev_timeline` to `timeline`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndOfRecovery {
    pub lsn: Lsn,
    pub time: Timestamp,
    pub timeline: u32,
    pub prev_timeline: u32,
}

/// The start of a record that continues in the next segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenTail {
    pub lsn: Lsn,
    pub total_length: u32,
    /// The record's bytes in this segment, hex; empty when the record is longer than
    /// [`MAX_OPEN_RECORD`] or not one a summary decodes.
    pub bytes: String,
}

/// The continuation a segment opens with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenHead {
    /// `xlp_rem_len` of the first page: how many bytes of the record remain.
    pub remaining_length: u32,
    /// Those bytes, hex (at most [`MAX_OPEN_RECORD`] of them, else empty).
    pub bytes: String,
}

/// One decoded record, in WAL order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    Commit(TxnEnd),
    Abort(TxnEnd),
    Prepare(Prepare),
    RestorePoint(RestorePoint),
    Checkpoint(Checkpoint),
    EndOfRecovery(EndOfRecovery),
}

/// Summarizes the segment `segment` (named `display` in errors); its start LSN, size and
/// major come from its long page header. Only a first page that is not a supported major's
/// long header is an error; anything after it gives a summary.
pub fn summarize(display: &str, segment: &[u8]) -> Result<SegmentSummary> {
    walk(display, segment, &mut |_| {})
}

/// [`summarize`], handing every decoded event to `on_event` as well, in WAL order.
pub fn walk(
    display: &str,
    segment: &[u8],
    on_event: &mut dyn FnMut(&Event),
) -> Result<SegmentSummary> {
    let mut s = Summarizer::new();
    s.feed_with(segment, on_event);
    s.finish(display)
}

/// Decodes the record that `prev` leaves open and `next` (the following segment) completes,
/// when both kept its bytes and its CRC checks out.
pub fn join(prev: &SegmentSummary, next: &SegmentSummary) -> Option<Event> {
    let tail = prev.open_tail.as_ref()?;
    let head = next.open_head.as_ref()?;
    let follows = prev
        .segment_start
        .0
        .checked_add(prev.segment_size.into())
        .is_some_and(|n| n == next.segment_start.0);
    if !follows || prev.pg_major != next.pg_major {
        return None;
    }
    let mut record = unhex(&tail.bytes)?;
    let tot = usize::try_from(tail.total_length).ok()?;
    if record.is_empty() || record.len().checked_add(head.remaining_length as usize) != Some(tot) {
        return None;
    }
    record.extend(unhex(&head.bytes)?);
    if record.len() != tot || tot < decode::RECORD_HEADER_SIZE {
        return None;
    }
    let (header, body) = record.split_at(decode::RECORD_HEADER_SIZE);
    let crc = crc32c::crc32c_append(crc32c::crc32c(body), header.get(..20)?);
    if crc.to_le_bytes() != header.get(20..24)? {
        return None;
    }
    decode::decode(&held::Held::whole(&record), tail.lsn, prev.pg_major)
}

impl SegmentSummary {
    /// Folds one event into the summary.
    fn add(&mut self, e: &Event) {
        fn listed<T: Clone>(list: &mut Vec<T>, unlisted: &mut u64, item: &T) {
            if list.len() < MAX_LISTED {
                list.push(item.clone());
            } else {
                *unlisted += 1;
            }
        }
        match e {
            Event::Commit(t) => self.commits.add(t),
            Event::Abort(t) => self.aborts.add(t),
            Event::Prepare(p) => {
                self.prepares.count += 1;
                self.prepares.first.get_or_insert_with(|| p.clone());
                self.prepares.last = Some(p.clone());
            }
            Event::RestorePoint(r) => listed(&mut self.restore_points, &mut self.unlisted, r),
            Event::Checkpoint(c) => listed(&mut self.checkpoints, &mut self.unlisted, c),
            Event::EndOfRecovery(r) => listed(&mut self.end_of_recovery, &mut self.unlisted, r),
        }
    }
}

impl TxnSummary {
    fn add(&mut self, t: &TxnEnd) {
        self.count += 1;
        self.prepared += u64::from(t.prepared);
        self.first.get_or_insert_with(|| t.clone());
        self.last = Some(t.clone());
        self.min_time = Some(self.min_time.map_or(t.time, |m| m.min(t.time)));
        self.max_time = Some(self.max_time.map_or(t.time, |m| m.max(t.time)));
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 2 * MAX_OPEN_RECORD {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect()
}

/// Sorted, merged inclusive ranges of `xids`, or `None` past [`MAX_XID_RANGES`].
pub(crate) fn xid_ranges(mut xids: Vec<u32>) -> Option<Vec<[u32; 2]>> {
    xids.sort_unstable();
    xids.dedup();
    let mut out: Vec<[u32; 2]> = Vec::new();
    for x in xids {
        match out.last_mut() {
            Some(r) if r[1].checked_add(1) == Some(x) => r[1] = x,
            _ => {
                if out.len() == MAX_XID_RANGES {
                    return None;
                }
                out.push([x, x]);
            }
        }
    }
    Some(out)
}

impl SegmentSummary {
    /// Whether a commit or abort of `xid` is in the segment; `None` when the summary does
    /// not keep its transaction ends.
    pub fn ends_xid(&self, xid: u32) -> Option<bool> {
        let ranges = self.xact_xids.as_ref()?;
        let i = ranges.partition_point(|r| r[1] < xid);
        Some(ranges.get(i).is_some_and(|r| r[0] <= xid))
    }
}
