//! The slice-based reader the streaming one replaced, kept as the tests' oracle: whatever
//! the bytes, [`summarize`] here and [`super::summarize`] must agree.
#![allow(clippy::unwrap_used)]

use super::decode::{self, RECORD_HEADER_SIZE};
use super::held::Held;
use super::{
    InvalidReason, MAX_OPEN_RECORD, OpenHead, OpenTail, PrepareSummary, SUMMARY_FORMAT_VERSION,
    SegmentSummary, TxnSummary, WalEnd, hex,
};
use crate::error::Result;
use crate::pg::wal::{self, Lsn};
use crate::pg::wal::{
    PageHeader, SegmentHeader, XLP_ALL_FLAGS, XLP_FIRST_IS_CONTRECORD,
    XLP_FIRST_IS_OVERWRITE_CONTRECORD,
};

/// One complete, CRC-checked record.
pub(crate) struct Record<'r> {
    pub lsn: u64,
    /// The whole record (header included) when [`decode::wanted`] says it is worth reading.
    pub bytes: Option<&'r [u8]>,
}

/// How the walk ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Records ran up to the end of the segment's bytes.
    SegmentEnd,
    /// An `XLOG_SWITCH` record started at this LSN.
    Switch(u64),
    /// No valid record at this LSN.
    Invalid(u64, InvalidReason),
}

/// What the walk found besides the records it handed over.
#[derive(Debug)]
pub(crate) struct Walked {
    pub first_record: Option<u64>,
    pub records_end: Option<u64>,
    pub records: u64,
    pub stop: Stop,
    /// The continuation the segment opens with: `xlp_rem_len` and its bytes, when short.
    pub head: Option<(u32, Vec<u8>)>,
    /// A record left open at the segment's end: LSN, total length, the bytes it has here
    /// (empty when the record is too long or of no interest).
    pub tail: Option<(u64, u32, Vec<u8>)>,
}

/// Why reading a record's bytes stopped short.
enum Short {
    /// The bytes run out: the record continues in the next segment (or the file is cut).
    End,
    /// The next page abandons this record (`XLP_FIRST_IS_OVERWRITE_CONTRECORD`) at `usize`.
    Overwritten(usize),
    Invalid(InvalidReason),
}

struct Pages<'a> {
    seg: &'a [u8],
    start: u64,
    page: usize,
    magic: u16,
    tli: u32,
}

impl Pages<'_> {
    /// Validates the header of the page at `off` (a page boundary) as
    /// `XLogReaderValidatePageHeader` does: magic, flags, address, no timeline going back.
    fn header(&mut self, off: usize) -> Result<PageHeader, InvalidReason> {
        let h = PageHeader::read(self.seg.get(off..).unwrap_or_default())
            .ok_or(InvalidReason::PageHeader)?;
        let addr = self.start.checked_add(off as u64);
        if h.magic != self.magic
            || h.info & !XLP_ALL_FLAGS != 0
            || Some(h.page_address.0) != addr
            || h.timeline.0 < self.tli
            || off.checked_add(h.size()).is_none_or(|e| e > self.seg.len())
        {
            return Err(InvalidReason::PageHeader);
        }
        self.tli = h.timeline.0;
        Ok(h)
    }

    /// Hands `n` bytes of a record of `tot` bytes, `got` of which were read, to `sink`,
    /// from `*off` on, crossing into continuation pages.
    fn take(
        &mut self,
        off: &mut usize,
        got: &mut u32,
        tot: u32,
        mut n: usize,
        sink: &mut impl FnMut(&[u8]),
    ) -> Result<(), Short> {
        while n > 0 {
            if off.is_multiple_of(self.page) {
                if *off >= self.seg.len() {
                    return Err(Short::End);
                }
                let h = self.header(*off).map_err(Short::Invalid)?;
                // Checked before the contrecord flag, as PostgreSQL does.
                if h.info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0 {
                    return Err(Short::Overwritten(*off));
                }
                if h.info & XLP_FIRST_IS_CONTRECORD == 0
                    || h.rem_len == 0
                    || Some(h.rem_len) != tot.checked_sub(*got)
                {
                    return Err(Short::Invalid(InvalidReason::Contrecord));
                }
                *off += h.size();
            }
            let page_end = (*off / self.page + 1) * self.page;
            let here = self
                .seg
                .get(*off..page_end.min(self.seg.len()))
                .unwrap_or_default();
            if here.is_empty() {
                return Err(Short::End);
            }
            let k = n.min(here.len());
            sink(here.get(..k).unwrap_or_default());
            *off += k;
            n -= k;
            // k < page size, so it fits in u32.
            *got = got.saturating_add(k as u32);
        }
        Ok(())
    }
}

fn maxalign(off: usize) -> usize {
    off.div_ceil(8).saturating_mul(8)
}

/// Walks the segment whose long header `h` was read from `seg`, handing every complete
/// record to `on_record`.
pub(crate) fn walk(seg: &[u8], h: &SegmentHeader, on_record: &mut dyn FnMut(&Record)) -> Walked {
    let seg = seg.get(..h.segment_size as usize).unwrap_or(seg);
    let mut p = Pages {
        seg,
        start: h.page_address.0,
        page: h.block_size as usize,
        magic: crate::pg::major::by_number(h.pg_major).map_or(0, |m| m.wal_page_magic),
        tli: h.timeline.0,
    };
    let lsn_at = |off: usize| h.page_address.0.saturating_add(off as u64);
    let mut w = Walked {
        first_record: None,
        records_end: None,
        records: 0,
        stop: Stop::SegmentEnd,
        head: None,
        tail: None,
    };
    let mut scratch: Vec<u8> = Vec::new();
    let mut prev: Option<u64> = None;

    // The first page: skip the rest of a record begun in the previous segment.
    let first = match p.header(0) {
        Ok(first) => first,
        Err(reason) => {
            w.stop = Stop::Invalid(lsn_at(0), reason);
            return w;
        }
    };
    let mut off = first.size();
    if first.info & XLP_FIRST_IS_CONTRECORD != 0 && first.rem_len > 0 {
        let keep = first.rem_len as usize <= MAX_OPEN_RECORD;
        let mut head = Vec::new();
        // The continuation "starts" after the bytes the previous segment had.
        let mut got = 0;
        let res = p.take(
            &mut off,
            &mut got,
            first.rem_len,
            first.rem_len as usize,
            &mut |s| {
                if keep {
                    head.extend_from_slice(s);
                }
            },
        );
        w.head = keep.then_some((first.rem_len, head));
        match res {
            Ok(()) => off = maxalign(off),
            Err(Short::End) => return w,
            Err(Short::Overwritten(at)) => off = at,
            Err(Short::Invalid(reason)) => {
                w.stop = Stop::Invalid(lsn_at(off), reason);
                return w;
            }
        }
    }

    loop {
        if off >= seg.len() {
            return w;
        }
        if off.is_multiple_of(p.page) {
            match p.header(off) {
                Ok(ph) if ph.info & XLP_FIRST_IS_CONTRECORD == 0 => off += ph.size(),
                // A continuation where a record should start ("contrecord is requested").
                Ok(_) => {
                    w.stop = Stop::Invalid(lsn_at(off), InvalidReason::Contrecord);
                    return w;
                }
                Err(reason) => {
                    w.stop = Stop::Invalid(lsn_at(off), reason);
                    return w;
                }
            }
            continue;
        }
        let start = off;
        let lsn = lsn_at(start);
        let invalid = |w: &mut Walked, reason| w.stop = Stop::Invalid(lsn, reason);
        // Records are MAXALIGNed and pages are multiples of 8: xl_tot_len is on this page.
        let Some(tot) = seg
            .get(start..start + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
        else {
            invalid(&mut w, InvalidReason::Truncated);
            return w;
        };
        if (tot as usize) < RECORD_HEADER_SIZE {
            invalid(&mut w, InvalidReason::RecordLength);
            return w;
        }
        let in_page = p.page - start % p.page;
        let contiguous = tot as usize <= in_page && start + tot as usize <= seg.len();

        // The header, possibly split across two pages.
        let mut header = [0u8; RECORD_HEADER_SIZE];
        let mut hn = 0;
        let mut got = 0u32;
        let res = p.take(&mut off, &mut got, tot, RECORD_HEADER_SIZE, &mut |s| {
            if let Some(d) = header.get_mut(hn..hn + s.len()) {
                d.copy_from_slice(s);
            }
            hn += s.len();
        });
        match res {
            Ok(()) => {}
            Err(Short::End) => {
                // Too short to know the rmgr: keep it if it could be one we want.
                let bytes = if tot as usize <= MAX_OPEN_RECORD {
                    header.get(..hn).unwrap_or_default().to_vec()
                } else {
                    Vec::new()
                };
                w.tail = Some((lsn, tot, bytes));
                return w;
            }
            Err(Short::Overwritten(at)) => {
                off = at;
                continue;
            }
            Err(Short::Invalid(reason)) => {
                invalid(&mut w, reason);
                return w;
            }
        }
        let xl_prev = u64::from_le_bytes(header[8..16].try_into().unwrap());
        let (info, rmid) = (header[16], header[17]);
        let xl_crc = u32::from_le_bytes([header[20], header[21], header[22], header[23]]);
        // ValidXLogRecordHeader: the first record may point anywhere before itself; every
        // later one at the record before it.
        if prev.map_or(xl_prev >= lsn, |p| p != xl_prev) {
            invalid(&mut w, InvalidReason::RecordHeader);
            return w;
        }
        let wanted = decode::wanted(rmid, info);
        let body_len = tot as usize - RECORD_HEADER_SIZE;
        let mut crc = 0u32;
        let bytes: Option<&[u8]> = if contiguous {
            let body = seg.get(start + RECORD_HEADER_SIZE..start + tot as usize);
            crc = crc32c::crc32c(body.unwrap_or_default());
            off = start + tot as usize;
            seg.get(start..start + tot as usize)
        } else {
            scratch.clear();
            if wanted {
                scratch.extend_from_slice(&header);
            }
            let res = p.take(&mut off, &mut got, tot, body_len, &mut |s| {
                crc = crc32c::crc32c_append(crc, s);
                if wanted {
                    scratch.extend_from_slice(s);
                }
            });
            match res {
                Ok(()) => Some(&scratch[..]),
                Err(Short::End) => {
                    let keep = wanted && tot as usize <= MAX_OPEN_RECORD;
                    w.tail = Some((lsn, tot, if keep { scratch } else { Vec::new() }));
                    return w;
                }
                Err(Short::Overwritten(at)) => {
                    off = at;
                    continue;
                }
                Err(Short::Invalid(reason)) => {
                    invalid(&mut w, reason);
                    return w;
                }
            }
        };
        crc = crc32c::crc32c_append(crc, &header[..20]);
        if crc != xl_crc {
            invalid(&mut w, InvalidReason::Crc);
            return w;
        }
        w.first_record.get_or_insert(lsn);
        w.records_end = Some(lsn_at(off));
        w.records += 1;
        prev = Some(lsn);
        on_record(&Record {
            lsn,
            bytes: if wanted { bytes } else { None },
        });
        if decode::is_switch(rmid, info) {
            w.stop = Stop::Switch(lsn);
            return w;
        }
        off = maxalign(off);
    }
}

/// The old `walk`.
pub(crate) fn summarize(
    display: &str,
    segment: &[u8],
    on_event: &mut dyn FnMut(&super::Event),
) -> Result<SegmentSummary> {
    let h = wal::read_long_header(display, segment)?;
    let mut s = SegmentSummary {
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
        open_head: None,
        open_tail: None,
    };
    let walked = walk(segment, &h, &mut |r| {
        if let Some(e) = r
            .bytes
            .and_then(|b| decode::decode(&Held::whole(b), Lsn(r.lsn), h.pg_major))
        {
            s.add(&e);
            on_event(&e);
        }
    });
    s.first_record = walked.first_record.map(Lsn);
    s.records_end = walked.records_end.map(Lsn);
    s.records = walked.records;
    s.end = match walked.stop {
        Stop::SegmentEnd if segment.len() < h.segment_size as usize => WalEnd::Invalid {
            lsn: Lsn(h.page_address.0.saturating_add(segment.len() as u64)),
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
    if segment.len() >= h.segment_size as usize {
        s.open_tail = walked.tail.map(|(lsn, total_length, b)| OpenTail {
            lsn: Lsn(lsn),
            total_length,
            bytes: hex(&b),
        });
    }
    Ok(s)
}
