//! Helpers of the `walrecord` tests: the segments left in `pg_wal`, what `pg_waldump`
//! prints record by record, SQL that makes the server write a record so that it straddles
//! two segments, and a promotion onto timeline 2.

#![allow(clippy::unwrap_used)] // tests: a panic with its message is the failure report

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use jiff::Timestamp;
use pitrkit::pg::wal::{self, WalFileName};
use pitrkit::pg::walrecord::{self, Event, SegmentSummary};
use pitrkit_tests::{Pg, Sandbox, as_pg, pg_bin, run};

/// One segment of `pg_wal`: its name, bytes, summary and events.
pub type Segment = (String, Vec<u8>, SegmentSummary, Vec<Event>);

/// Every segment in `pg_wal` that is what its name says (recycled and preallocated files
/// are not), in order, with its summary and events.
pub fn read_pg_wal(dir: &Path) -> Vec<Segment> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| matches!(n.parse(), Ok(WalFileName::Segment { .. })))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for n in names {
        let data = fs::read(dir.join(&n)).unwrap();
        if wal::validate_segment(&n, &n.parse().unwrap(), &data).is_err() {
            continue;
        }
        let mut events = Vec::new();
        let s = walrecord::walk(&n, &data, &mut |e| events.push(e.clone())).unwrap();
        out.push((n, data, s, events));
    }
    out
}

/// `2026-12-02 15:40:01.123456 UTC` (fraction optional) as pg_waldump prints it.
pub fn waldump_time(s: &str) -> Timestamp {
    let s = s
        .trim()
        .strip_suffix(" UTC")
        .unwrap_or_else(|| panic!("not UTC: {s}"));
    format!("{}Z", s.replacen(' ', "T", 1)).parse().unwrap()
}

/// pg_waldump's output for the segments `first..=last` of `pg_wal`. It ends with an error
/// at the end of valid WAL ("invalid record length", or "invalid magic number" when the
/// last record runs into a page not written yet): exit status 1.
pub fn waldump_text(pg_wal: &Path, first: &str, last: &str) -> String {
    let mut c = as_pg(&pg_bin("pg_waldump"));
    c.arg("-p").arg(pg_wal).args([first, last]);
    let out = run(c);
    assert!(
        out.stderr.contains("error in WAL record") || out.code == 0,
        "pg_waldump failed\n{out}"
    );
    out.stdout
}

/// The COMMIT/ABORT (xid, time) pairs and restore point names pg_waldump prints for the
/// segments `first..=last`.
pub fn waldump(
    pg_wal: &Path,
    first: &str,
    last: &str,
) -> (BTreeSet<(String, u32, Timestamp)>, Vec<String>) {
    let text = waldump_text(pg_wal, first, last);
    let mut ends = BTreeSet::new();
    let mut names = Vec::new();
    for line in text.lines() {
        let Some((head, desc)) = line.split_once("desc: ") else {
            continue;
        };
        let tx = |h: &str| -> u32 {
            let t = h.split("tx:").nth(1).unwrap().split(',').next().unwrap();
            t.trim().parse().unwrap()
        };
        for kind in ["COMMIT", "ABORT"] {
            let plain = desc.strip_prefix(&format!("{kind} "));
            let prepared = desc.strip_prefix(&format!("{kind}_PREPARED "));
            if let Some(rest) = plain {
                let time = rest.split(';').next().unwrap();
                ends.insert((kind.to_string(), tx(head), waldump_time(time)));
            } else if let Some(rest) = prepared {
                // "COMMIT_PREPARED 740: 2026-… UTC": the prepared transaction's xid.
                let (xid, rest) = rest.split_once(": ").unwrap();
                let time = rest.split(';').next().unwrap();
                ends.insert((kind.to_string(), xid.parse().unwrap(), waldump_time(time)));
            }
        }
        if let Some(name) = desc.strip_prefix("RESTORE_POINT ") {
            names.push(name.trim().to_string());
        }
    }
    (ends, names)
}

/// One record as pg_waldump prints it.
#[derive(Debug)]
pub struct Dumped {
    pub lsn: u64,
    /// `len (rec/tot)`'s total: the record's length, page headers not counted.
    pub tot: u32,
    pub xid: u32,
    pub desc: String,
}

/// Every record of [`waldump_text`], in WAL order.
pub fn waldump_records(pg_wal: &Path, first: &str, last: &str) -> Vec<Dumped> {
    let field = |line: &str, name: &str| -> String {
        let rest = line.split(name).nth(1).unwrap_or_else(|| panic!("{line}"));
        rest.split(',').next().unwrap().trim().to_string()
    };
    waldump_text(pg_wal, first, last)
        .lines()
        .filter(|l| l.starts_with("rmgr: "))
        .map(|l| {
            let (head, desc) = l.split_once("desc: ").unwrap();
            let tot = field(head, "len (rec/tot):");
            Dumped {
                lsn: field(head, "lsn:").parse::<wal::Lsn>().unwrap().0,
                tot: tot.split('/').nth(1).unwrap().trim().parse().unwrap(),
                xid: field(head, "tx:").parse().unwrap(),
                desc: desc.to_string(),
            }
        })
        .collect()
}

/// The (xid, time) of every plain COMMIT in `dump`.
pub fn dumped_commits(dump: &[Dumped]) -> BTreeSet<(u32, Timestamp)> {
    dump.iter()
        .filter_map(|r| {
            let rest = r.desc.strip_prefix("COMMIT ")?;
            Some((r.xid, waldump_time(rest.split(';').next().unwrap())))
        })
        .collect()
}

/// The (LSN, timeline, previous timeline, time) of every END_OF_RECOVERY in `dump`.
pub fn dumped_end_of_recovery(dump: &[Dumped]) -> Vec<(u64, u32, u32, Timestamp)> {
    dump.iter()
        .filter_map(|r| {
            let rest = r.desc.strip_prefix("END_OF_RECOVERY tli ")?;
            let (tli, rest) = rest.split_once("; prev tli ").unwrap();
            let (prev, time) = rest.split_once("; time ").unwrap();
            let (tli, prev) = (tli.parse().unwrap(), prev.parse().unwrap());
            Some((r.lsn, tli, prev, waldump_time(time)))
        })
        .collect()
}

/// The (xid, time) of every commit the summaries of `segs` hold, and of those `join`
/// decodes across each two.
pub fn summarized_commits(segs: &[Segment]) -> BTreeSet<(u32, Timestamp)> {
    let mut found = BTreeSet::new();
    for (i, (_, _, s, events)) in segs.iter().enumerate() {
        let joined = i
            .checked_sub(1)
            .and_then(|p| walrecord::join(&segs[p].2, s));
        for e in events.iter().chain(joined.as_ref()) {
            if let Event::Commit(t) = e {
                assert!(found.insert((t.xid, t.time)), "{t:?} twice");
            }
        }
    }
    found
}

/// Whether a record of `tot` bytes at `lsn` runs past the end of its segment: its bytes
/// fill pages after their headers (24 bytes, 40 on a segment's first page).
pub fn crosses_segment(lsn: u64, tot: u32, segment_size: u64) -> bool {
    const PAGE: u64 = 8192;
    let segment_end = (lsn / segment_size + 1) * segment_size;
    let (mut at, mut left) = (lsn, u64::from(tot));
    loop {
        let page_end = (at / PAGE + 1) * PAGE;
        if left <= page_end - at {
            return false;
        }
        left -= page_end - at;
        if page_end == segment_end {
            return true;
        }
        at = page_end + 24;
    }
}

/// Procedures that make the server write a record at a chosen distance before the end of a
/// segment, so that the record straddles the boundary. `pad_to(leftover)` writes
/// non-transactional logical messages (any `wal_level` from replica) until the insert
/// position is `leftover` bytes (a multiple of 8, the record alignment) before a segment's
/// end: coarsely into the middle of the segment's last page, then one message whose record
/// (24-byte header, 5-byte long data header, 24-byte `xl_logical_message`, the prefix
/// `pad\0`, the payload) ends exactly there. `straddle(name, leftover, tables)` creates
/// `tables` tables (dropping all but the first: more invalidation messages and dropped
/// relations make a longer commit record), notes its xid in `straddled`, pads and commits;
/// `restore_point_at` pads and creates a restore point.
pub const STRADDLE_SQL: &str = r#"
create table straddled(name text, xid bigint);
create procedure pad_to(leftover int) language plpgsql as $$
declare
  seg numeric := pg_size_bytes(current_setting('wal_segment_size'));
  pos numeric; seg_end numeric; target numeric; aim numeric; d numeric;
begin
  for attempt in 1..20 loop
    pos := pg_current_wal_insert_lsn() - '0/0'::pg_lsn;
    seg_end := (floor(pos / seg) + 1) * seg;
    target := seg_end - leftover;
    d := target - pos;
    if d = 0 then return; end if;
    if d >= 300 and floor(pos / 8192) = floor(target / 8192) then
      perform pg_logical_emit_message(false, 'pad', repeat('x', (d - 57)::int));
    else
      aim := seg_end - 4096;
      if aim - pos < 400 then aim := aim + seg; end if;
      d := aim - pos;
      perform pg_logical_emit_message(false, 'pad',
        repeat('x', (d - 100 - 24 * ceil(d / 8192))::int));
    end if;
  end loop;
  raise exception 'could not pad to % bytes before a segment end', leftover;
end $$;
create procedure straddle(name text, leftover int, tables int) language plpgsql as $$
begin
  for i in 1..tables loop
    execute format('create table %I(i int, t text)', name || '_' || i);
    if i > 1 then execute format('drop table %I', name || '_' || i); end if;
  end loop;
  insert into straddled values (name, txid_current());
  call pad_to(leftover);
  commit;
end $$;
create procedure restore_point_at(name text, leftover int) language plpgsql as $$
begin
  call pad_to(leftover);
  perform pg_create_restore_point(name);
end $$;
"#;

/// Stops `primary` (archiving into `archive`) as a crash would, starts a physical copy of
/// it as a standby restoring from that archive, and promotes it onto timeline 2. Not a
/// clean shutdown: with archiving on, that switches to a new segment first, so timeline 2
/// would start near a segment's start; after a crash it starts where the WAL ends, and
/// timeline 2's first segment holds that much of timeline 1.
pub fn promoted_copy(sb: &Sandbox, primary: &Pg, archive: &Path) -> Pg {
    let mut c = as_pg(&primary.bin.join("pg_ctl"));
    c.args(["-w", "-m", "immediate", "-D"])
        .arg(&primary.data)
        .arg("stop");
    run(c).assert_ok();
    let copy = sb.path().join("promoted");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&primary.data)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {}", primary.data.display());
    let _ = fs::remove_file(copy.join("postmaster.pid"));
    fs::write(copy.join("standby.signal"), "").unwrap();
    sb.chown_to_pg(&copy);
    let mut pg = Pg::at(sb, "promoted");
    pg.configure(&format!(
        "restore_command = 'cp {}/%f %p'\narchive_mode = off\n",
        archive.display()
    ));
    pg.start();
    assert_eq!(pg.sql("select pg_is_in_recovery()"), "t");
    assert_eq!(pg.sql("select pg_promote()"), "t");
    pg.wait_promoted(Duration::from_secs(60));
    pg
}
