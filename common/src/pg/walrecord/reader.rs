//! Walking the records of one segment as its bytes stream past, in pieces of any size: page
//! headers, records that span pages, CRCs, and where valid WAL ends — as
//! `src/backend/access/transam/xlogreader.c` (`XLogDecodeNextRecord`,
//! `XLogReaderValidatePageHeader`, `ValidXLogRecordHeader`, `ValidXLogRecord`) does it,
//! without I/O. It holds a page header, a record header and, of a record a summary decodes,
//! at most [`MAX_OPEN_RECORD`] bytes plus the few fields the decoder reads beyond them
//! (`held`): never the segment, nor a record's CRC-only bytes.
//!
//! [`Reader::feed`] consumes bytes; [`Reader::finish`] says what running out where means,
//! as xlogreader does: the file ending at a page boundary, between records or inside a
//! record is the segment's end (a record left open is the summary's tail), ending inside a
//! page header is that header's fault, and inside a record's length field, truncation.

use super::decode::{self, RECORD_HEADER_SIZE};
use super::held::{Held, Keeper};
use super::{Event, InvalidReason, MAX_OPEN_RECORD};
use crate::pg::wal::{
    LONG_PAGE_HEADER_SIZE, Lsn, PageHeader, SHORT_PAGE_HEADER_SIZE, SegmentHeader, XLP_ALL_FLAGS,
    XLP_FIRST_IS_CONTRECORD, XLP_FIRST_IS_OVERWRITE_CONTRECORD,
};

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

/// What the walk found besides the events it handed over.
#[derive(Debug, Default)]
pub(crate) struct Walked {
    pub first_record: Option<u64>,
    pub records_end: Option<u64>,
    pub records: u64,
    /// The continuation the segment opens with: `xlp_rem_len` and its bytes, when short.
    pub head: Option<(u32, Vec<u8>)>,
    /// A record left open at the segment's end: LSN, total length, the bytes it has here
    /// (empty when the record is too long or of no interest).
    pub tail: Option<(u64, u32, Vec<u8>)>,
}

/// Where in the segment's layout the next byte falls.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// At a page boundary: `have` bytes of its header gathered.
    Page {
        have: usize,
    },
    /// Between records: `pad` bytes of MAXALIGN padding to skip.
    Gap {
        pad: usize,
    },
    /// At a record's start: `have` bytes of its `xl_tot_len` gathered.
    Length {
        have: usize,
    },
    /// Inside the open record or continuation, before the end of its page.
    Inside,
    Done,
}

/// A record, or the continuation the segment opens with, being read.
struct Open {
    /// The record's LSN; `None` for the opening continuation.
    lsn: Option<u64>,
    tot: u32,
    /// Bytes of it read so far (of a continuation: since the segment's start).
    got: u32,
    /// CRC-32C of the bytes after the header so far (the header's own come last).
    crc: u32,
    /// Whether [`decode::wanted`] it (known once its header is read); of the opening
    /// continuation, whether it is short enough to keep.
    wanted: bool,
}

/// The streaming walk over one segment.
pub(crate) struct Reader {
    start: u64,
    page: usize,
    magic: u16,
    major: u32,
    /// The timeline of the last valid page header: it may not go back.
    tli: u32,
    /// The segment offset of the current phase's first byte (in [`Phase::Inside`], of the
    /// next byte).
    off: usize,
    phase: Phase,
    page_buf: [u8; LONG_PAGE_HEADER_SIZE],
    header: [u8; RECORD_HEADER_SIZE],
    open: Option<Open>,
    /// What the decoder needs of the open record when wanted (or the opening continuation's
    /// bytes, when short).
    kept: Keeper,
    prev: Option<u64>,
    stop: Option<Stop>,
    walked: Walked,
}

fn maxalign(off: usize) -> usize {
    off.div_ceil(8).saturating_mul(8)
}

impl Reader {
    /// Starts the walk of the segment whose long header `h` was read from `first` (its
    /// first [`LONG_PAGE_HEADER_SIZE`] bytes); feed it the bytes after those.
    pub(crate) fn new(h: &SegmentHeader, first: &[u8; LONG_PAGE_HEADER_SIZE]) -> Reader {
        let mut r = Reader {
            start: h.page_address.0,
            page: h.block_size as usize,
            magic: crate::pg::major::by_number(h.pg_major).map_or(0, |m| m.wal_page_magic),
            major: h.pg_major,
            tli: h.timeline.0,
            off: 0,
            phase: Phase::Gap { pad: 0 },
            page_buf: *first,
            header: [0; RECORD_HEADER_SIZE],
            open: None,
            kept: Keeper::default(),
            prev: None,
            stop: None,
            walked: Walked::default(),
        };
        // The first page: skip the rest of a record begun in the previous segment.
        match r.valid_page_header() {
            None => r.fail(InvalidReason::PageHeader),
            Some(first) => {
                r.off = first.size();
                if first.info & XLP_FIRST_IS_CONTRECORD != 0 && first.rem_len > 0 {
                    r.open = Some(Open {
                        lsn: None,
                        tot: first.rem_len,
                        got: 0,
                        crc: 0,
                        wanted: first.rem_len as usize <= MAX_OPEN_RECORD,
                    });
                    r.phase = Phase::Inside;
                }
            }
        }
        r
    }

    fn lsn_at(&self, off: usize) -> u64 {
        self.start.saturating_add(off as u64)
    }

    /// Consumes the next bytes of the segment, handing each decoded event to `on_event`.
    pub(crate) fn feed(&mut self, mut bytes: &[u8], on_event: &mut dyn FnMut(Event)) {
        while !bytes.is_empty() {
            let n = match self.phase {
                Phase::Done => return,
                Phase::Gap { pad } => {
                    let k = pad.min(bytes.len());
                    self.off += k;
                    self.phase = Phase::Gap { pad: pad - k };
                    if k == pad {
                        self.phase = if self.off & (self.page - 1) == 0 {
                            Phase::Page { have: 0 }
                        } else {
                            Phase::Length { have: 0 }
                        };
                    }
                    k
                }
                Phase::Page { have } => {
                    // The short header says whether the long one's 16 more bytes follow.
                    let size = if have < SHORT_PAGE_HEADER_SIZE {
                        SHORT_PAGE_HEADER_SIZE
                    } else {
                        self.page_size()
                    };
                    let k = (size - have).min(bytes.len());
                    self.page_buf[have..have + k].copy_from_slice(&bytes[..k]);
                    self.phase = Phase::Page { have: have + k };
                    let have = have + k;
                    if have >= SHORT_PAGE_HEADER_SIZE && have == self.page_size() {
                        self.page_header();
                    }
                    k
                }
                Phase::Length { have } => {
                    if have == 0
                        && let Some(n) = self.whole_record(bytes, on_event)
                    {
                        bytes = bytes.get(n..).unwrap_or_default();
                        continue;
                    }
                    let k = (4 - have).min(bytes.len());
                    self.header[have..have + k].copy_from_slice(&bytes[..k]);
                    self.phase = Phase::Length { have: have + k };
                    if have + k == 4 {
                        self.record_start();
                    }
                    k
                }
                Phase::Inside => {
                    let Some(o) = &self.open else { return };
                    // Pages are a power of two (`read_long_header`): no division per record.
                    let page_end = (self.off | (self.page - 1)) + 1;
                    let left = (o.tot - o.got) as usize;
                    let k = (page_end - self.off).min(left).min(bytes.len());
                    self.off += k;
                    self.take(&bytes[..k], on_event);
                    if self.phase == Phase::Inside && self.off == page_end {
                        self.phase = Phase::Page { have: 0 };
                    }
                    k
                }
            };
            bytes = bytes.get(n..).unwrap_or_default();
        }
    }

    /// `XLogPageHeaderSize` of the page header in `page_buf`.
    fn page_size(&self) -> usize {
        PageHeader::read(&self.page_buf).map_or(SHORT_PAGE_HEADER_SIZE, |h| h.size())
    }

    /// The page header gathered at `off`, when valid as `XLogReaderValidatePageHeader`
    /// has it: magic, flags, address, no timeline going back.
    fn valid_page_header(&mut self) -> Option<PageHeader> {
        let h = PageHeader::read(&self.page_buf)?;
        if h.magic != self.magic
            || h.info & !XLP_ALL_FLAGS != 0
            || h.page_address.0 != self.lsn_at(self.off)
            || h.timeline.0 < self.tli
        {
            return None;
        }
        self.tli = h.timeline.0;
        Some(h)
    }

    /// A whole page header is in `page_buf`.
    fn page_header(&mut self) {
        let Some(h) = self.valid_page_header() else {
            return self.fail(InvalidReason::PageHeader);
        };
        let Some(o) = &self.open else {
            return self.between_records(&h);
        };
        // Checked before the contrecord flag, as PostgreSQL does: the record is abandoned
        // and the page read as one where records start.
        if h.info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0 {
            self.close_head();
            self.open = None;
            return self.between_records(&h);
        }
        if h.info & XLP_FIRST_IS_CONTRECORD == 0 || h.rem_len == 0 || h.rem_len != o.tot - o.got {
            return self.fail(InvalidReason::Contrecord);
        }
        self.off += h.size();
        self.phase = Phase::Inside;
    }

    /// A page header where a record may start.
    fn between_records(&mut self, h: &PageHeader) {
        // A continuation where a record should start ("contrecord is requested").
        if h.info & XLP_FIRST_IS_CONTRECORD != 0 {
            return self.fail(InvalidReason::Contrecord);
        }
        self.off += h.size();
        self.phase = Phase::Gap { pad: 0 };
    }

    /// A record's `xl_tot_len` is in `header[..4]`.
    fn record_start(&mut self) {
        let tot = u32::from_le_bytes([
            self.header[0],
            self.header[1],
            self.header[2],
            self.header[3],
        ]);
        if (tot as usize) < RECORD_HEADER_SIZE {
            return self.fail(InvalidReason::RecordLength);
        }
        self.open = Some(Open {
            lsn: Some(self.lsn_at(self.off)),
            tot,
            got: 4,
            crc: 0,
            wanted: false,
        });
        self.off += 4;
        self.phase = Phase::Inside;
    }

    /// A record whose bytes are all on this page and at the start of `bytes` (most are),
    /// read in place as the slice-based reader did: the same checks, in the same order,
    /// without gathering its header or copying it to decode it. `None` for any other.
    fn whole_record(&mut self, bytes: &[u8], on_event: &mut dyn FnMut(Event)) -> Option<usize> {
        let tot = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
        let page_left = (self.off | (self.page - 1)) + 1 - self.off;
        let record = bytes
            .get(..tot as usize)
            .filter(|_| tot as usize <= page_left)?;
        let (header, body) = record.split_at_checked(RECORD_HEADER_SIZE)?;
        let lsn = self.lsn_at(self.off);
        self.header.copy_from_slice(header);
        self.open = Some(Open {
            lsn: Some(lsn),
            tot,
            got: tot,
            crc: crc32c::crc32c(body),
            wanted: false,
        });
        self.off += record.len();
        if self.record_header(lsn) {
            self.record_end(lsn, Some(record), on_event);
        }
        Some(record.len())
    }

    /// The next bytes of the open record or continuation, all on one page and at most
    /// what it still lacks; `off` is already past them.
    fn take(&mut self, mut b: &[u8], on_event: &mut dyn FnMut(Event)) {
        let Some(o) = self.open.as_mut() else { return };
        let Some(lsn) = o.lsn else {
            // The opening continuation: kept when short, never checked (its CRC needs the
            // previous segment's part).
            if o.wanted {
                self.kept.first.extend_from_slice(b);
            }
            o.got += b.len() as u32;
            if o.got == o.tot {
                self.close_head();
                self.open = None;
                self.phase = Phase::Gap {
                    pad: maxalign(self.off) - self.off,
                };
            }
            return;
        };
        let got = o.got as usize;
        if got < RECORD_HEADER_SIZE {
            let k = (RECORD_HEADER_SIZE - got).min(b.len());
            self.header[got..got + k].copy_from_slice(&b[..k]);
            o.got += k as u32;
            b = &b[k..];
            if o.got as usize == RECORD_HEADER_SIZE && !self.record_header(lsn) {
                return;
            }
        }
        let Some(o) = self.open.as_mut() else { return };
        o.crc = crc32c::crc32c_append(o.crc, b);
        let at = o.got as usize;
        o.got += b.len() as u32;
        if o.wanted {
            let major = self.major;
            let decode = |h: &Held| decode::decode(h, Lsn(lsn), major);
            self.kept.keep(&decode, o.tot as usize, at, b);
        }
        if self.open.as_ref().is_some_and(|o| o.got == o.tot) {
            self.record_end(lsn, None, on_event);
        }
    }

    /// The record's header is complete: `ValidXLogRecordHeader`'s `xl_prev` check (the
    /// first record may point anywhere before itself, every later one at the record before
    /// it), and whether its bytes are worth keeping.
    fn record_header(&mut self, lsn: u64) -> bool {
        let h = &self.header;
        let xl_prev = u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
        let (info, rmid) = (h[16], h[17]);
        if self.prev.map_or(xl_prev >= lsn, |p| p != xl_prev) {
            self.fail(InvalidReason::RecordHeader);
            return false;
        }
        if let Some(o) = self.open.as_mut() {
            o.wanted = decode::wanted(rmid, info);
            if o.wanted {
                self.kept.start(&self.header);
            }
        }
        true
    }

    /// The record is complete (`whole`, when read in place): its CRC, then its event.
    fn record_end(&mut self, lsn: u64, whole: Option<&[u8]>, on_event: &mut dyn FnMut(Event)) {
        let Some(o) = self.open.take() else { return };
        let h = self.header;
        let crc = crc32c::crc32c_append(o.crc, &h[..20]);
        if crc.to_le_bytes() != h[20..24] {
            self.open = Some(o);
            return self.fail(InvalidReason::Crc);
        }
        self.walked.first_record.get_or_insert(lsn);
        self.walked.records_end = Some(self.lsn_at(self.off));
        self.walked.records += 1;
        self.prev = Some(lsn);
        let major = self.major;
        let decode = |h: &Held| decode::decode(h, Lsn(lsn), major);
        let event = match whole {
            _ if !o.wanted => None,
            Some(record) => decode(&Held::whole(record)),
            None => self.kept.event(&decode),
        };
        if let Some(e) = event {
            on_event(e);
        }
        if decode::is_switch(h[17], h[16]) {
            self.stop = Some(Stop::Switch(lsn));
            self.phase = Phase::Done;
            return;
        }
        self.phase = Phase::Gap {
            pad: maxalign(self.off) - self.off,
        };
    }

    /// Hands the opening continuation's bytes over, when short.
    fn close_head(&mut self) {
        if let Some(o) = self.open.as_ref().filter(|o| o.lsn.is_none()) {
            let bytes = if o.wanted {
                std::mem::take(&mut self.kept.first)
            } else {
                Vec::new()
            };
            self.walked.head = o.wanted.then_some((o.tot, bytes));
        }
    }

    /// Valid WAL ends here: at the open record, else at `off`.
    fn fail(&mut self, reason: InvalidReason) {
        self.close_head();
        let lsn = match self.open.as_ref().and_then(|o| o.lsn) {
            Some(lsn) => lsn,
            None => self.lsn_at(self.off),
        };
        self.open = None;
        self.stop = Some(Stop::Invalid(lsn, reason));
        self.phase = Phase::Done;
    }

    /// How many bytes the walk holds besides its fixed-size buffers.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.kept.held()
    }

    /// The segment's bytes have all been fed: how the walk ended, and what it found.
    pub(crate) fn finish(mut self) -> (Walked, Stop) {
        match self.phase {
            Phase::Page { have } if have > 0 => self.fail(InvalidReason::PageHeader),
            Phase::Length { have } if have > 0 => self.fail(InvalidReason::Truncated),
            _ => {}
        }
        if let Some(stop) = self.stop.take() {
            return (self.walked, stop);
        }
        self.close_head();
        if let Some(o) = self.open.take().filter(|o| o.lsn.is_some()) {
            let got = o.got as usize;
            let short = o.tot as usize <= MAX_OPEN_RECORD;
            // Too short to know the rmgr: kept if it could be one a summary decodes.
            let bytes = if got < RECORD_HEADER_SIZE && short {
                self.header.get(..got).unwrap_or_default().to_vec()
            } else if got >= RECORD_HEADER_SIZE && short && o.wanted {
                self.kept.first
            } else {
                Vec::new()
            };
            self.walked.tail = o.lsn.map(|lsn| (lsn, o.tot, bytes));
        }
        (self.walked, Stop::SegmentEnd)
    }
}
