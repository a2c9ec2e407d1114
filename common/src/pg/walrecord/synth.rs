//! Hand-built WAL for the tests: a stream of segments written as PostgreSQL lays them out
//! (page headers, continuation flags, MAXALIGNed records with their CRCs), and the main
//! data of the records a summary decodes.

use super::decode::{RECORD_HEADER_SIZE, RM_XACT_ID, RM_XLOG_ID, pg_microseconds};
use crate::pg::wal::{XLP_FIRST_IS_CONTRECORD, XLP_FIRST_IS_OVERWRITE_CONTRECORD, XLP_LONG_HEADER};
use jiff::Timestamp;

pub const PAGE: usize = 8192;
pub const SYSID: u64 = 7_000_000_000_000_000_001;

/// Consecutive segments of one timeline, written front to back.
pub struct Stream {
    pub bytes: Vec<u8>,
    pub seg_size: usize,
    pub start: u64,
    pub major: u32,
    pub tli: u32,
    pub pos: usize,
    pub prev: u64,
}

impl Stream {
    /// `count` segments of `seg_size` bytes from segment number `segno`, the first
    /// page header written.
    pub fn new(major: u32, seg_size: usize, segno: u64, count: usize) -> Stream {
        let mut s = Stream {
            bytes: vec![0; seg_size * count],
            seg_size,
            start: segno * seg_size as u64,
            major,
            tli: 1,
            pos: 0,
            prev: segno * seg_size as u64 - 0x28,
        };
        s.page_header(0, 0, 0);
        s
    }

    pub fn segment(&self, i: usize) -> &[u8] {
        &self.bytes[i * self.seg_size..(i + 1) * self.seg_size]
    }

    pub fn lsn(&self, pos: usize) -> u64 {
        self.start + pos as u64
    }

    fn magic(&self) -> u16 {
        crate::pg::major::by_number(self.major)
            .unwrap()
            .wal_page_magic
    }

    /// Writes the header of the page at `off` and returns its size.
    pub fn page_header(&mut self, off: usize, rem_len: u32, extra_flags: u16) -> usize {
        let long = off.is_multiple_of(self.seg_size);
        let mut info = extra_flags;
        if long {
            info |= XLP_LONG_HEADER;
        }
        if rem_len > 0 {
            info |= XLP_FIRST_IS_CONTRECORD;
        }
        let magic = self.magic();
        let addr = self.lsn(off);
        let b = &mut self.bytes[off..];
        b[0..2].copy_from_slice(&magic.to_le_bytes());
        b[2..4].copy_from_slice(&info.to_le_bytes());
        b[4..8].copy_from_slice(&self.tli.to_le_bytes());
        b[8..16].copy_from_slice(&addr.to_le_bytes());
        b[16..20].copy_from_slice(&rem_len.to_le_bytes());
        if long {
            b[24..32].copy_from_slice(&SYSID.to_le_bytes());
            b[32..36].copy_from_slice(&(self.seg_size as u32).to_le_bytes());
            b[36..40].copy_from_slice(&(PAGE as u32).to_le_bytes());
            40
        } else {
            24
        }
    }

    /// Appends a record with this header and everything after it (block headers, data,
    /// main data); returns its LSN.
    pub fn record(&mut self, rmid: u8, info: u8, xid: u32, rest: &[u8]) -> u64 {
        self.pos = self.pos.div_ceil(8) * 8;
        if self.pos.is_multiple_of(PAGE) {
            self.pos += self.page_header(self.pos, 0, 0);
        }
        let lsn = self.lsn(self.pos);
        let tot = (RECORD_HEADER_SIZE + rest.len()) as u32;
        let mut rec = Vec::with_capacity(tot as usize);
        rec.extend(tot.to_le_bytes());
        rec.extend(xid.to_le_bytes());
        rec.extend(self.prev.to_le_bytes());
        rec.extend([info, rmid, 0, 0]);
        let crc = crc32c::crc32c_append(crc32c::crc32c(rest), &rec);
        rec.extend(crc.to_le_bytes());
        rec.extend(rest);
        self.put(&rec);
        self.prev = lsn;
        lsn
    }

    /// A record whose only content is `main` as main data.
    pub fn main(&mut self, rmid: u8, info: u8, xid: u32, main: &[u8]) -> u64 {
        self.record(rmid, info, xid, &with_main(&[], main))
    }

    /// Writes a record's bytes from `pos` on, opening continuation pages as needed.
    fn put(&mut self, rec: &[u8]) {
        let mut done = 0;
        while done < rec.len() {
            if self.pos.is_multiple_of(PAGE) && done > 0 {
                let rem = (rec.len() - done) as u32;
                self.pos += self.page_header(self.pos, rem, 0);
            }
            let page_end = (self.pos / PAGE + 1) * PAGE;
            let k = (rec.len() - done).min(page_end - self.pos);
            self.bytes[self.pos..self.pos + k].copy_from_slice(&rec[done..done + k]);
            self.pos += k;
            done += k;
        }
    }

    /// Abandons the rest of the page (as a crash that lost the next page does) and opens
    /// the next page with `XLP_FIRST_IS_OVERWRITE_CONTRECORD`.
    pub fn overwrite_next_page(&mut self) {
        self.pos = (self.pos / PAGE + 1) * PAGE;
        let h = self.page_header(self.pos, 0, XLP_FIRST_IS_OVERWRITE_CONTRECORD);
        self.pos += h;
    }
}

/// Block headers `blocks` then `main` as main data (short or long form).
pub fn with_main(blocks: &[u8], main: &[u8]) -> Vec<u8> {
    let mut v = blocks.to_vec();
    if main.len() < 256 {
        v.extend([255, main.len() as u8]);
    } else {
        v.push(254);
        v.extend((main.len() as u32).to_le_bytes());
    }
    v.extend(main);
    v
}

pub fn time(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// The optional parts of a commit or abort record.
#[derive(Default)]
pub struct XactParts {
    pub dbinfo: bool,
    pub subxacts: Vec<u32>,
    pub rels: usize,
    pub stats: usize,
    pub invals: usize,
    pub twophase: Option<(u32, Option<&'static str>)>,
}

/// `xl_xact_commit`/`xl_xact_abort` and what follows; returns (info bits, main data).
pub fn xact_main(t: Timestamp, parts: &XactParts, commit: bool, major: u32) -> (u8, Vec<u8>) {
    let mut v = pg_microseconds(t).to_le_bytes().to_vec();
    let mut xinfo = 0u32;
    let mut rest = Vec::new();
    if parts.dbinfo {
        xinfo |= 1;
        rest.extend([5u8, 0, 0, 0, 0x7f, 6, 0, 0]);
    }
    if !parts.subxacts.is_empty() {
        xinfo |= 1 << 1;
        rest.extend((parts.subxacts.len() as i32).to_le_bytes());
        parts
            .subxacts
            .iter()
            .for_each(|x| rest.extend(x.to_le_bytes()));
    }
    if parts.rels > 0 {
        xinfo |= 1 << 2;
        rest.extend((parts.rels as i32).to_le_bytes());
        rest.extend(vec![0x11; parts.rels * 12]);
    }
    if parts.stats > 0 {
        xinfo |= 1 << 8;
        rest.extend((parts.stats as i32).to_le_bytes());
        rest.extend(vec![0x22; parts.stats * if major >= 18 { 16 } else { 12 }]);
    }
    if parts.invals > 0 && commit {
        xinfo |= 1 << 3;
        rest.extend((parts.invals as i32).to_le_bytes());
        rest.extend(vec![0xFE; parts.invals * 16]);
    }
    if let Some((xid, gid)) = parts.twophase {
        xinfo |= 1 << 4;
        rest.extend(xid.to_le_bytes());
        if let Some(g) = gid {
            xinfo |= 1 << 7;
            rest.extend(g.as_bytes());
            rest.push(0);
        }
    }
    let mut info = 0;
    if xinfo != 0 {
        info = 0x80;
        v.extend(xinfo.to_le_bytes());
        v.extend(rest);
    }
    (info, v)
}

/// Appends a commit (`op` 0x00, or 0x30 for COMMIT PREPARED) or abort (0x20 / 0x40).
pub fn xact(s: &mut Stream, op: u8, xid: u32, t: Timestamp, parts: &XactParts) -> u64 {
    let commit = op == 0x00 || op == 0x30;
    let (info, main) = xact_main(t, parts, commit, s.major);
    s.main(RM_XACT_ID, op | info, xid, &main)
}

/// A `TwoPhaseFileHeader` + GID as XLOG_XACT_PREPARE's main data.
pub fn prepare_main(xid: u32, t: Timestamp, gid: &str, major: u32) -> Vec<u8> {
    let (gidlen_at, gid_at) = if major >= 15 { (54, 72) } else { (46, 64) };
    let mut v = vec![0u8; gid_at];
    v[0..4].copy_from_slice(&0x57F94534u32.to_le_bytes());
    v[8..12].copy_from_slice(&xid.to_le_bytes());
    v[16..24].copy_from_slice(&pg_microseconds(t).to_le_bytes());
    v[gidlen_at..gidlen_at + 2].copy_from_slice(&(gid.len() as u16 + 1).to_le_bytes());
    v.extend(gid.as_bytes());
    v.push(0);
    v.resize(v.len().div_ceil(8) * 8, 0);
    v
}

/// A `CheckPoint` (88 bytes; `time` at 64 in every major).
pub fn checkpoint_main(redo: u64, tli: u32, prev_tli: u32, unix_secs: i64) -> Vec<u8> {
    let mut v = vec![0u8; 88];
    v[0..8].copy_from_slice(&redo.to_le_bytes());
    v[8..12].copy_from_slice(&tli.to_le_bytes());
    v[12..16].copy_from_slice(&prev_tli.to_le_bytes());
    v[16] = 1;
    v[64..72].copy_from_slice(&unix_secs.to_le_bytes());
    v
}

pub fn restore_point(s: &mut Stream, t: Timestamp, name: &str) -> u64 {
    let mut v = pg_microseconds(t).to_le_bytes().to_vec();
    let mut n = [0u8; 64];
    n[..name.len()].copy_from_slice(name.as_bytes());
    v.extend(n);
    s.main(RM_XLOG_ID, 0x70, 0, &v)
}

/// A heap-like record of another rmgr with one block reference carrying `data_len` bytes.
pub fn heap(s: &mut Stream, xid: u32, data_len: u16) -> u64 {
    let mut blocks = vec![0u8, 0x20];
    blocks.extend(data_len.to_le_bytes());
    blocks.extend([0u8; 12 + 4]);
    let mut rest = with_main(&blocks, &[1, 2, 3]);
    // Block data sits between the headers and the main data.
    let main_at = rest.len() - 3;
    rest.splice(main_at..main_at, vec![0x5A; data_len as usize]);
    s.record(10, 0x00, xid, &rest)
}
