//! Decoding of the few records point-in-time recovery cares about: transaction ends
//! (`RM_XACT_ID`) and checkpoints, restore points and timeline switches (`RM_XLOG_ID`).
//!
//! References, checked for every major 13 to 18: `src/include/access/xlogrecord.h` (block
//! references before the main data), `src/backend/access/transam/xlogreader.c`
//! (`DecodeXLogRecord`), `src/include/access/xact.h` and `src/backend/access/rmgrdesc/
//! xactdesc.c` (`ParseCommitRecord`, `ParseAbortRecord`), `src/backend/access/transam/
//! twophase.c` (`TwoPhaseFileHeader`), `src/include/catalog/pg_control.h` (`CheckPoint`) and
//! `src/include/access/xlog_internal.h` (`xl_restore_point`, `xl_end_of_recovery`).
//! Differences between majors that matter here are noted where they are handled.

use jiff::Timestamp;

use super::held::{Cursor, Held};
use super::{Checkpoint, EndOfRecovery, Event, Prepare, RestorePoint, TxnEnd};
use crate::pg::wal::Lsn;

/// `SizeOfXLogRecord`: `xl_tot_len`, `xl_xid`, `xl_prev`, `xl_info`, `xl_rmid`, 2 bytes of
/// padding, `xl_crc`.
pub(crate) const RECORD_HEADER_SIZE: usize = 24;

pub(crate) const RM_XLOG_ID: u8 = 0;
pub(crate) const RM_XACT_ID: u8 = 1;

// RM_XLOG_ID infos (`xl_info & ~XLR_INFO_MASK`), pg_control.h.
const XLOG_CHECKPOINT_SHUTDOWN: u8 = 0x00;
const XLOG_CHECKPOINT_ONLINE: u8 = 0x10;
pub(crate) const XLOG_SWITCH: u8 = 0x40;
const XLOG_RESTORE_POINT: u8 = 0x70;
const XLOG_END_OF_RECOVERY: u8 = 0x90;
/// `XLR_INFO_MASK`: the low bits of `xl_info` belong to the WAL machinery, not the rmgr.
const XLR_INFO_MASK: u8 = 0x0F;

// RM_XACT_ID infos, xact.h.
const XLOG_XACT_OPMASK: u8 = 0x70;
const XLOG_XACT_COMMIT: u8 = 0x00;
const XLOG_XACT_PREPARE: u8 = 0x10;
const XLOG_XACT_ABORT: u8 = 0x20;
const XLOG_XACT_COMMIT_PREPARED: u8 = 0x30;
const XLOG_XACT_ABORT_PREPARED: u8 = 0x40;
const XLOG_XACT_HAS_INFO: u8 = 0x80;

// `xl_xact_xinfo.xinfo` bits: which optional parts follow, in this order.
const XACT_XINFO_HAS_DBINFO: u32 = 1 << 0;
const XACT_XINFO_HAS_SUBXACTS: u32 = 1 << 1;
const XACT_XINFO_HAS_RELFILELOCATORS: u32 = 1 << 2;
const XACT_XINFO_HAS_INVALS: u32 = 1 << 3;
const XACT_XINFO_HAS_TWOPHASE: u32 = 1 << 4;
// (1 << 7, XACT_XINFO_HAS_GID: the GID after the two-phase xid; not needed here.)
const XACT_XINFO_HAS_DROPPED_STATS: u32 = 1 << 8;

// Block reference ids (xlogrecord.h).
const XLR_MAX_BLOCK_ID: u8 = 32;
const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
const XLR_BLOCK_ID_ORIGIN: u8 = 253;
const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;
const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
const BKPBLOCK_SAME_REL: u8 = 0x80;
const BKPIMAGE_HAS_HOLE: u8 = 0x01;

/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC).
const PG_EPOCH_UNIX_SECONDS: i64 = 946_684_800;

/// Whether a record with this rmgr and `xl_info` is one [`decode`] reads: only those are
/// copied when they span pages.
pub(crate) fn wanted(rmid: u8, info: u8) -> bool {
    match rmid {
        RM_XACT_ID => matches!(
            info & XLOG_XACT_OPMASK,
            XLOG_XACT_COMMIT
                | XLOG_XACT_PREPARE
                | XLOG_XACT_ABORT
                | XLOG_XACT_COMMIT_PREPARED
                | XLOG_XACT_ABORT_PREPARED
        ),
        RM_XLOG_ID => matches!(
            info & !XLR_INFO_MASK,
            XLOG_CHECKPOINT_SHUTDOWN
                | XLOG_CHECKPOINT_ONLINE
                | XLOG_RESTORE_POINT
                | XLOG_END_OF_RECOVERY
        ),
        _ => false,
    }
}

/// Whether this record is `XLOG_SWITCH`: the rest of its segment is padding.
pub(crate) fn is_switch(rmid: u8, info: u8) -> bool {
    rmid == RM_XLOG_ID && info & !XLR_INFO_MASK == XLOG_SWITCH
}

/// A PostgreSQL `TimestampTz` (microseconds since 2000-01-01 UTC). The two infinities and
/// anything beyond jiff's years -9999..=9999 saturate: no commit carries such a time.
pub(crate) fn pg_timestamp(us: i64) -> Timestamp {
    let unix = us.saturating_add(PG_EPOCH_UNIX_SECONDS * 1_000_000);
    Timestamp::from_microsecond(unix).unwrap_or(if unix < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// The bytes of a PostgreSQL `TimestampTz` for `t` (what [`pg_timestamp`] reads).
#[cfg(test)]
pub(crate) fn pg_microseconds(t: Timestamp) -> i64 {
    t.as_microsecond() - PG_EPOCH_UNIX_SECONDS * 1_000_000
}

/// Decodes a record (header included, CRC already checked) of PostgreSQL `major` that
/// started at `lsn`; `None` for records of no interest or that do not parse, or when it
/// needs bytes `record` does not hold (then [`Held::missed`] says which).
pub(crate) fn decode(record: &Held, lsn: Lsn, major: u32) -> Option<Event> {
    let mut h = record.cursor(0, record.len())?;
    let _tot_len = h.u32()?;
    let xid = h.u32()?;
    let _prev = h.u64()?;
    let info = h.u8()?;
    let rmid = h.u8()?;
    let data = main_data(record, major)?;
    match rmid {
        RM_XACT_ID => xact(lsn, xid, info, data, major),
        RM_XLOG_ID => xlog(lsn, info, data),
        _ => None,
    }
}

/// `XLogRecGetData`: the main data, which comes last, after the block references' headers
/// and their data (`DecodeXLogRecord`). Only the headers are read; block data is skipped.
fn main_data<'a>(record: &'a Held<'a>, major: u32) -> Option<Cursor<'a>> {
    let mut r = record.cursor(
        RECORD_HEADER_SIZE,
        record.len().checked_sub(RECORD_HEADER_SIZE)?,
    )?;
    let mut datatotal: usize = 0;
    let mut main_len: usize = 0;
    while r.remaining() > datatotal {
        match r.u8()? {
            XLR_BLOCK_ID_DATA_SHORT => {
                main_len = r.u8()?.into();
                datatotal = datatotal.checked_add(main_len)?;
                break;
            }
            XLR_BLOCK_ID_DATA_LONG => {
                main_len = usize::try_from(r.u32()?).ok()?;
                datatotal = datatotal.checked_add(main_len)?;
                break;
            }
            XLR_BLOCK_ID_ORIGIN => r.skip(2)?,
            // PostgreSQL 14+; 13 never writes it.
            XLR_BLOCK_ID_TOPLEVEL_XID => r.skip(4)?,
            0..=XLR_MAX_BLOCK_ID => {
                // XLogRecordBlockHeader: id, fork_flags, data_length.
                let fork_flags = r.u8()?;
                datatotal = datatotal.checked_add(r.u16()?.into())?;
                if fork_flags & BKPBLOCK_HAS_IMAGE != 0 {
                    // XLogRecordBlockImageHeader: length, hole_offset, bimg_info.
                    let image_len = r.u16()?;
                    let _hole_offset = r.u16()?;
                    let bimg_info = r.u8()?;
                    datatotal = datatotal.checked_add(image_len.into())?;
                    if bimg_info & BKPIMAGE_HAS_HOLE != 0 && image_compressed(bimg_info, major) {
                        r.skip(2)?; // XLogRecordBlockCompressHeader.hole_length
                    }
                }
                if fork_flags & BKPBLOCK_SAME_REL == 0 {
                    r.skip(12)?; // RelFileNode (13–15) / RelFileLocator (16+)
                }
                r.skip(4)?; // BlockNumber
            }
            _ => return None,
        }
    }
    if r.remaining() != datatotal {
        return None;
    }
    record.cursor(record.len().checked_sub(main_len)?, main_len)
}

/// Whether a full-page image is compressed: one flag up to 14, one flag per method
/// (pglz, lz4, zstd) from 15, where the bit 0x02 became `BKPIMAGE_APPLY`.
fn image_compressed(bimg_info: u8, major: u32) -> bool {
    if major <= 14 {
        bimg_info & 0x02 != 0
    } else {
        bimg_info & (0x04 | 0x08 | 0x10) != 0
    }
}

fn xact(lsn: Lsn, xl_xid: u32, info: u8, data: Cursor, major: u32) -> Option<Event> {
    let op = info & XLOG_XACT_OPMASK;
    if op == XLOG_XACT_PREPARE {
        return prepare(lsn, data, major);
    }
    let commit = matches!(op, XLOG_XACT_COMMIT | XLOG_XACT_COMMIT_PREPARED);
    let prepared = matches!(op, XLOG_XACT_COMMIT_PREPARED | XLOG_XACT_ABORT_PREPARED);
    if !commit && !matches!(op, XLOG_XACT_ABORT | XLOG_XACT_ABORT_PREPARED) {
        return None;
    }
    // ParseCommitRecord / ParseAbortRecord: xact_time, then the parts xinfo announces.
    let mut r = data;
    let time = pg_timestamp(r.i64()?);
    let xinfo = if info & XLOG_XACT_HAS_INFO != 0 {
        r.u32()?
    } else {
        0
    };
    if xinfo & XACT_XINFO_HAS_DBINFO != 0 {
        r.skip(8)?; // dbId, tsId
    }
    if xinfo & XACT_XINFO_HAS_SUBXACTS != 0 {
        r.skip_array(4)?;
    }
    if xinfo & XACT_XINFO_HAS_RELFILELOCATORS != 0 {
        r.skip_array(12)?;
    }
    // Dropped statistics: 15+. An item is kind, dboid, objoid (12 bytes) up to 17 and
    // kind, dboid, objid_lo, objid_hi (16 bytes) from 18.
    if major >= 15 && xinfo & XACT_XINFO_HAS_DROPPED_STATS != 0 {
        r.skip_array(if major >= 18 { 16 } else { 12 })?;
    }
    // Invalidation messages: commit records only.
    if commit && xinfo & XACT_XINFO_HAS_INVALS != 0 {
        r.skip_array(16)?;
    }
    // A prepared transaction's own xid is here; xl_xid is the (usually invalid) xid of
    // the session that ran COMMIT/ROLLBACK PREPARED.
    let xid = if xinfo & XACT_XINFO_HAS_TWOPHASE != 0 {
        r.u32()?
    } else {
        xl_xid
    };
    let end = TxnEnd {
        lsn,
        xid,
        time,
        prepared,
    };
    Some(if commit {
        Event::Commit(end)
    } else {
        Event::Abort(end)
    })
}

/// `XLOG_XACT_PREPARE`: the main data is the two-phase state file, which opens with
/// `TwoPhaseFileHeader` (magic, total_len, xid, database, prepared_at…, gidlen); the GID
/// follows the MAXALIGNed header. 15 added two counters, moving `gidlen` and the GID.
fn prepare(lsn: Lsn, data: Cursor, major: u32) -> Option<Event> {
    let (gidlen_at, gid_at) = if major >= 15 { (54, 72) } else { (46, 64) };
    let mut r = data;
    r.skip(8)?;
    let xid = r.u32()?;
    r.skip(4)?;
    let time = pg_timestamp(r.i64()?);
    let gidlen: usize = data.rest_after(gidlen_at)?.u16()?.into();
    // gidlen counts the terminating NUL; GIDSIZE is 200.
    let gid = data.rest_after(gid_at)?.bytes(gidlen.min(200))?;
    Some(Event::Prepare(Prepare {
        lsn,
        xid,
        time,
        gid: c_string(gid),
    }))
}

fn xlog(lsn: Lsn, info: u8, data: Cursor) -> Option<Event> {
    let mut r = data;
    match info & !XLR_INFO_MASK {
        op @ (XLOG_CHECKPOINT_SHUTDOWN | XLOG_CHECKPOINT_ONLINE) => {
            // CheckPoint: redo, ThisTimeLineID, PrevTimeLineID, fullPageWrites, (17+:
            // wal_level, in what was padding), nextXid (8-aligned at 24), five 4-byte
            // fields, then pg_time_t time at 64 in every major 13 to 18.
            let redo = Lsn(r.u64()?);
            let timeline = r.u32()?;
            let prev_timeline = r.u32()?;
            let secs = data.rest_after(64)?.i64()?;
            let time = Timestamp::from_second(secs).ok()?;
            Some(Event::Checkpoint(Checkpoint {
                lsn,
                redo,
                timeline,
                prev_timeline,
                time,
                online: op == XLOG_CHECKPOINT_ONLINE,
            }))
        }
        XLOG_RESTORE_POINT => {
            // xl_restore_point: rp_time, rp_name[MAXFNAMELEN = 64].
            let time = pg_timestamp(r.i64()?);
            let name = r.bytes(r.remaining().min(64))?;
            Some(Event::RestorePoint(RestorePoint {
                lsn,
                time,
                name: c_string(name),
            }))
        }
        XLOG_END_OF_RECOVERY => {
            // xl_end_of_recovery: end_time, ThisTimeLineID, PrevTimeLineID (17+: wal_level).
            let time = pg_timestamp(r.i64()?);
            Some(Event::EndOfRecovery(EndOfRecovery {
                lsn,
                time,
                timeline: r.u32()?,
                prev_timeline: r.u32()?,
            }))
        }
        _ => None,
    }
}

/// A NUL-terminated C string in a fixed field, lossily as UTF-8 (names are the server
/// encoding's bytes).
fn c_string(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(field.get(..end).unwrap_or_default()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_convert_and_saturate() {
        assert_eq!(pg_timestamp(0).to_string(), "2000-01-01T00:00:00Z");
        let t: Timestamp = "2026-12-02T15:40:01.123456Z".parse().unwrap();
        assert_eq!(pg_timestamp(pg_microseconds(t)), t);
        assert_eq!(pg_timestamp(i64::MAX), Timestamp::MAX);
        assert_eq!(pg_timestamp(i64::MIN), Timestamp::MIN);
    }

    #[test]
    fn main_data_skips_block_references() {
        let mut rec = vec![0u8; RECORD_HEADER_SIZE];
        // Block 0 with 3 bytes of data, a compressed image with a hole (15+ flags), its
        // own relation; block 1 of the same relation, no data; origin; then short main data.
        rec.extend([0, 0x10, 3, 0, 5, 0, 0, 0, 0x01 | 0x08, 9, 0]);
        rec.extend([0u8; 12]);
        rec.extend([0u8; 4]);
        rec.extend([1, 0x80, 0, 0, 0, 0, 0, 0]);
        rec.extend([XLR_BLOCK_ID_ORIGIN, 1, 0]);
        rec.extend([XLR_BLOCK_ID_DATA_SHORT, 2]);
        rec.extend([0xAA; 3 + 5]);
        rec.extend([7, 8]);
        let main = |rec: &[u8], major| {
            let held = Held::whole(rec);
            let data = main_data(&held, major).and_then(|mut c| c.bytes(c.remaining()));
            data.map(<[u8]>::to_vec)
        };
        assert_eq!(main(&rec, 15), Some(vec![7, 8]));
        // Read with 14's flags the image is not compressed: no hole_length, lengths disagree.
        assert_eq!(main(&rec, 14), None);
        // Lengths that do not add up are refused.
        rec.push(0);
        assert_eq!(main(&rec, 15), None);
    }
}
