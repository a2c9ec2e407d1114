//! What pitrkit knows about PostgreSQL's write-ahead log: file names, LSNs, timelines, and
//! the long page header that opens every segment.
//!
//! References: `src/include/access/xlog_internal.h` (file names, `XLogLongPageHeaderData`,
//! `XLOG_PAGE_MAGIC`) and `src/backend/access/transam/xlogreader.c`
//! (`XLogReaderValidatePageHeader`) of every major in [`crate::pg::major::SUPPORTED`].
//!
//! Why one file (~420 lines of code): names, LSNs and page headers are one vocabulary; the
//! record reader that builds on them is `walrecord`.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A PostgreSQL timeline id (`TimeLineID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimelineId(pub u32);

impl fmt::Display for TimelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}", self.0)
    }
}

/// A WAL location (`XLogRecPtr`), written as PostgreSQL writes it: `0/16B3748`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Usage(format!("invalid LSN '{s}': expected the form 0/16B3748"));
        let (hi, lo) = s.split_once('/').ok_or_else(bad)?;
        let ok =
            |p: &str| !p.is_empty() && p.len() <= 8 && p.bytes().all(|b| b.is_ascii_hexdigit());
        if !ok(hi) || !ok(lo) {
            return Err(bad());
        }
        let hi = u64::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u64::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn(hi << 32 | lo))
    }
}

impl serde::Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|_| serde::de::Error::custom(format!("invalid LSN '{s}'")))
    }
}

impl Lsn {
    /// The segment number holding this location.
    pub fn segno(&self, seg_size: u32) -> u64 {
        self.0 / seg_size as u64
    }
}

/// The name of a file PostgreSQL hands to `archive_command`, or asks of `restore_command`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WalFileName {
    /// `000000010000000000000003`: a complete segment.
    Segment { tli: TimelineId, log: u32, seg: u32 },
    /// `000000010000000000000003.partial`: the last, incomplete segment of a timeline that a
    /// promotion ended.
    Partial { tli: TimelineId, log: u32, seg: u32 },
    /// `000000010000000000000003.00000028.backup`: a backup history file.
    Backup {
        tli: TimelineId,
        log: u32,
        seg: u32,
        offset: u32,
    },
    /// `00000002.history`: the timeline history file written at a promotion.
    History { tli: TimelineId },
}

fn hex8(s: &str) -> Option<u32> {
    (s.len() == 8
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)))
    .then(|| u32::from_str_radix(s, 16).ok())
    .flatten()
}

fn hex24(s: &str) -> Option<(TimelineId, u32, u32)> {
    // Byte slicing below needs ASCII: a stored name is anyone's choice.
    if s.len() != 24 || !s.is_ascii() {
        return None;
    }
    Some((
        TimelineId(hex8(&s[0..8])?),
        hex8(&s[8..16])?,
        hex8(&s[16..24])?,
    ))
}

impl FromStr for WalFileName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let parsed = match s.split('.').collect::<Vec<_>>().as_slice() {
            [base] => hex24(base).map(|(tli, log, seg)| WalFileName::Segment { tli, log, seg }),
            [base, "partial"] => {
                hex24(base).map(|(tli, log, seg)| WalFileName::Partial { tli, log, seg })
            }
            [base, "history"] => hex8(base).map(|t| WalFileName::History { tli: TimelineId(t) }),
            [base, off, "backup"] => hex24(base).and_then(|(tli, log, seg)| {
                Some(WalFileName::Backup {
                    tli,
                    log,
                    seg,
                    offset: hex8(off)?,
                })
            }),
            _ => None,
        };
        parsed.filter(|n| n.timeline().0 != 0).ok_or_else(|| {
            Error::invalid_input(
                s,
                "not a WAL file name (expected a segment like 000000010000000000000003, \
                 or a .history, .backup or .partial file)",
            )
        })
    }
}

impl fmt::Display for WalFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalFileName::Segment { tli, log, seg } => write!(f, "{tli}{log:08X}{seg:08X}"),
            WalFileName::Partial { tli, log, seg } => write!(f, "{tli}{log:08X}{seg:08X}.partial"),
            WalFileName::Backup {
                tli,
                log,
                seg,
                offset,
            } => {
                write!(f, "{tli}{log:08X}{seg:08X}.{offset:08X}.backup")
            }
            WalFileName::History { tli } => write!(f, "{tli}.history"),
        }
    }
}

impl serde::Serialize for WalFileName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl WalFileName {
    pub fn timeline(&self) -> TimelineId {
        match *self {
            WalFileName::Segment { tli, .. }
            | WalFileName::Partial { tli, .. }
            | WalFileName::Backup { tli, .. }
            | WalFileName::History { tli } => tli,
        }
    }

    /// Whether the file carries WAL pages (and so a long page header to validate).
    pub fn has_wal_pages(&self) -> bool {
        matches!(
            self,
            WalFileName::Segment { .. } | WalFileName::Partial { .. }
        )
    }

    /// The segment this name belongs to, as `(log, seg)`, for every kind but `.history`.
    pub fn log_seg(&self) -> Option<(u32, u32)> {
        match *self {
            WalFileName::Segment { log, seg, .. }
            | WalFileName::Partial { log, seg, .. }
            | WalFileName::Backup { log, seg, .. } => Some((log, seg)),
            WalFileName::History { .. } => None,
        }
    }

    /// The name of segment number `segno` on `tli` for the given segment size
    /// (`XLogFileName` in xlog_internal.h).
    pub fn segment(tli: TimelineId, segno: u64, seg_size: u32) -> Self {
        let per_id = segments_per_xlog_id(seg_size);
        WalFileName::Segment {
            tli,
            log: (segno / per_id) as u32,
            seg: (segno % per_id) as u32,
        }
    }

    /// The segment number (`XLogSegNo`) of a segment, partial or backup file.
    pub fn segno(&self, seg_size: u32) -> Option<u64> {
        self.log_seg()
            .map(|(log, seg)| log as u64 * segments_per_xlog_id(seg_size) + seg as u64)
    }
}

/// The segments holding the WAL from `start` up to (not including) `stop` on `tli`: what
/// recovery must read to replay that range (at least the segment holding `start`).
pub fn segments_between(tli: TimelineId, start: Lsn, stop: Lsn, seg_size: u32) -> Vec<WalFileName> {
    let first = start.segno(seg_size);
    let last = Lsn(stop.0.saturating_sub(1).max(start.0)).segno(seg_size);
    (first..=last)
        .map(|n| WalFileName::segment(tli, n, seg_size))
        .collect()
}

/// initdb's default WAL segment size (`--wal-segsize`), which nearly every cluster keeps.
pub const DEFAULT_SEGMENT_SIZE: u32 = 16 << 20;

/// `XLogSegmentsPerXLogId`: how many segments one "log" number (4 GiB of WAL) holds.
pub fn segments_per_xlog_id(seg_size: u32) -> u64 {
    0x1_0000_0000u64 / seg_size as u64
}

/// `XLP_FIRST_IS_CONTRECORD` in `xlp_info`: the page starts with the rest (`xlp_rem_len`
/// bytes) of a record begun on an earlier page.
pub const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
/// `XLP_LONG_HEADER` in `xlp_info`: this page opens a segment.
pub const XLP_LONG_HEADER: u16 = 0x0002;
/// `XLP_FIRST_IS_OVERWRITE_CONTRECORD` in `xlp_info`: the record that should have continued
/// onto this page was abandoned (a crash lost its tail); new WAL starts here instead.
pub const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
/// `XLP_ALL_FLAGS`: any other bit in `xlp_info` makes the page header invalid.
pub const XLP_ALL_FLAGS: u16 = 0x000F;
/// `SizeOfXLogShortPHD`: the header of every page but a segment's first, with padding.
pub const SHORT_PAGE_HEADER_SIZE: usize = 24;
/// `SizeOfXLogLongPHD`: the long page header's size, with alignment padding.
pub const LONG_PAGE_HEADER_SIZE: usize = 40;

/// The fields every WAL page header has (`XLogPageHeaderData`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageHeader {
    pub magic: u16,
    pub info: u16,
    pub timeline: TimelineId,
    pub page_address: Lsn,
    /// `xlp_rem_len`: how much of a record begun earlier remains, from this page on.
    pub rem_len: u32,
}

impl PageHeader {
    /// Reads the short header at the start of `page`; `None` when fewer than 24 bytes remain.
    pub fn read(page: &[u8]) -> Option<PageHeader> {
        let b: &[u8; SHORT_PAGE_HEADER_SIZE] =
            page.get(..SHORT_PAGE_HEADER_SIZE)?.try_into().ok()?;
        Some(PageHeader {
            magic: le_u16(b, 0),
            info: le_u16(b, 2),
            timeline: TimelineId(le_u32(b, 4)),
            page_address: Lsn(le_u64(b, 8)),
            rem_len: le_u32(b, 16),
        })
    }

    /// `XLogPageHeaderSize`: where the page's record data begins.
    pub fn size(&self) -> usize {
        if self.info & XLP_LONG_HEADER != 0 {
            LONG_PAGE_HEADER_SIZE
        } else {
            SHORT_PAGE_HEADER_SIZE
        }
    }
}

/// What the long page header of a segment says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub pg_major: u32,
    pub system_identifier: u64,
    pub segment_size: u32,
    pub block_size: u32,
    pub timeline: TimelineId,
    pub page_address: Lsn,
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Reads the long page header at the start of `data` (which needs only its first 40 bytes).
pub fn read_long_header(display: &str, data: &[u8]) -> Result<SegmentHeader> {
    if data.len() < LONG_PAGE_HEADER_SIZE {
        return Err(Error::invalid_input(
            display,
            format!(
                "truncated: {} bytes, shorter than a WAL page header",
                data.len()
            ),
        ));
    }
    let magic = le_u16(data, 0);
    let pg_major = crate::pg::major::by_page_magic(magic)
        .map(|m| m.number)
        .ok_or_else(|| {
            Error::invalid_input(
                display,
                format!(
                    "not a WAL segment of a PostgreSQL major this pitrkit supports ({}): page \
                     magic 0x{magic:04X}; WAL of a newer major needs a newer pitrkit",
                    crate::pg::major::supported_list()
                ),
            )
        })?;
    if le_u16(data, 2) & XLP_LONG_HEADER == 0 {
        return Err(Error::invalid_input(
            display,
            "first page lacks the long header a segment starts with",
        ));
    }
    let segment_size = le_u32(data, 32);
    let block_size = le_u32(data, 36);
    if !segment_size.is_power_of_two() || !(1 << 20..=1 << 30).contains(&segment_size) {
        return Err(Error::invalid_input(
            display,
            format!("implausible segment size {segment_size} in header"),
        ));
    }
    if !block_size.is_power_of_two() || !(1024..=32768).contains(&block_size) {
        return Err(Error::invalid_input(
            display,
            format!("implausible block size {block_size} in header"),
        ));
    }
    Ok(SegmentHeader {
        pg_major,
        system_identifier: le_u64(data, 24),
        segment_size,
        block_size,
        timeline: TimelineId(le_u32(data, 4)),
        page_address: Lsn(le_u64(data, 8)),
    })
}

/// Checks that `data` is a real segment (or `.partial`) called `name`: header magic, segment
/// size and file length, page address consistent with the name, and a timeline no newer than
/// the name's. The first segment of a new timeline legitimately starts with pages of the
/// timeline it branched from (it is a copy up to the switch point), hence "no newer" rather
/// than "equal".
pub fn validate_segment(display: &str, name: &WalFileName, data: &[u8]) -> Result<SegmentHeader> {
    validate_segment_start(display, name, data, data.len() as u64)
}

/// [`validate_segment`] from the file's first bytes (at least the long header) and its
/// length, for callers that stream the rest.
pub fn validate_segment_start(
    display: &str,
    name: &WalFileName,
    head: &[u8],
    len: u64,
) -> Result<SegmentHeader> {
    let h = read_long_header(display, head)?;
    let complete = matches!(name, WalFileName::Segment { .. });
    if complete && len != h.segment_size as u64 {
        return Err(Error::invalid_input(
            display,
            format!(
                "truncated: {} bytes where the header says segments are {} bytes",
                len, h.segment_size
            ),
        ));
    }
    if len > h.segment_size as u64 {
        return Err(Error::invalid_input(
            display,
            format!(
                "{} bytes, longer than a {}-byte segment",
                len, h.segment_size
            ),
        ));
    }
    let (_, seg) = name.log_seg().unwrap_or_default();
    if seg as u64 >= segments_per_xlog_id(h.segment_size) {
        return Err(Error::invalid_input(
            display,
            format!(
                "name is not a valid segment for {}-byte segments",
                h.segment_size
            ),
        ));
    }
    let expected = Lsn(name.segno(h.segment_size).unwrap_or_default() * h.segment_size as u64);
    if h.page_address != expected {
        return Err(Error::invalid_input(
            display,
            format!(
                "header is for the segment at {} but the name {} is the segment at {}",
                h.page_address, name, expected
            ),
        ));
    }
    if h.timeline > name.timeline() || h.timeline.0 == 0 {
        return Err(Error::invalid_input(
            display,
            format!(
                "header is on timeline {} but the name says timeline {}",
                h.timeline.0,
                name.timeline().0
            ),
        ));
    }
    Ok(h)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal but valid-looking 16 MiB segment header for `name` (tests only).
    pub fn fake_segment(name: &str, sysid: u64, len: usize) -> Vec<u8> {
        let n: WalFileName = name.parse().unwrap();
        let seg_size = 16u32 << 20;
        let mut d = vec![0u8; len];
        d[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        d[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
        d[4..8].copy_from_slice(&n.timeline().0.to_le_bytes());
        let lsn = n.segno(seg_size).unwrap() * seg_size as u64;
        d[8..16].copy_from_slice(&lsn.to_le_bytes());
        d[24..32].copy_from_slice(&sysid.to_le_bytes());
        d[32..36].copy_from_slice(&seg_size.to_le_bytes());
        d[36..40].copy_from_slice(&8192u32.to_le_bytes());
        d
    }

    #[test]
    fn names_round_trip() {
        for s in [
            "000000010000000000000003",
            "0000000A00000001000000FF.partial",
            "000000010000000000000003.00000028.backup",
            "00000002.history",
        ] {
            assert_eq!(s.parse::<WalFileName>().unwrap().to_string(), s);
        }
        for bad in [
            "00000001000000000000003",
            "0000000100000000000000g3",
            "x.history",
            "000000000000000000000003",
            "00000001000000000000000a",
            "000000010000000000000003.ready",
            // 24 bytes, but not 24 ASCII characters: must not panic on byte slicing.
            "0000000100000000000000é",
            "0000000é000000000000003",
        ] {
            assert!(bad.parse::<WalFileName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn segment_numbers() {
        let n: WalFileName = "000000010000000100000002".parse().unwrap();
        assert_eq!(n.segno(16 << 20), Some(256 + 2));
        assert_eq!(WalFileName::segment(TimelineId(1), 258, 16 << 20), n);
    }

    #[test]
    fn lsn_round_trip() {
        let l: Lsn = "0/16B3748".parse().unwrap();
        assert_eq!(l.0, 0x16B3748);
        assert_eq!(l.to_string(), "0/16B3748");
        assert_eq!("1A/0".parse::<Lsn>().unwrap().to_string(), "1A/0");
        assert!("16B3748".parse::<Lsn>().is_err());
        assert!("0/".parse::<Lsn>().is_err());
    }

    #[test]
    fn validates_header_against_name() {
        let name: WalFileName = "000000020000000000000005".parse().unwrap();
        let seg = fake_segment("000000020000000000000005", 42, 16 << 20);
        let h = validate_segment("f", &name, &seg).unwrap();
        assert_eq!((h.system_identifier, h.pg_major), (42, 15));
        // An older timeline in the header is how a new timeline's first segment looks.
        let older = fake_segment("000000010000000000000005", 42, 16 << 20);
        validate_segment("f", &name, &older).unwrap();
        let other: WalFileName = "000000020000000000000006".parse().unwrap();
        let e = validate_segment("f", &other, &seg).unwrap_err().to_string();
        assert!(e.contains("0/5000000") && e.contains("0/6000000"), "{e}");
        let e = validate_segment("f", &name, &seg[..1 << 20])
            .unwrap_err()
            .to_string();
        assert!(e.contains("truncated"), "{e}");
        let e = validate_segment("f", &name, &[0u8; 100])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a WAL segment"), "{e}");
        // The next major's WAL: refused, naming what this build supports.
        let mut newer = seg.clone();
        newer[0..2].copy_from_slice(&0xD119u16.to_le_bytes());
        let e = validate_segment("f", &name, &newer).unwrap_err();
        assert_eq!(e.code(), crate::error::EXIT_INVALID_INPUT);
        let e = e.to_string();
        assert!(
            e.contains("0xD119")
                && e.contains("13, 14, 15, 16, 17 and 18")
                && e.contains("newer pitrkit"),
            "{e}"
        );
    }
}
