//! Backing up from a `pg_basebackup -D - -Ft [-X fetch]` tar stream on stdin.
//!
//! The stream's `backup_label` gives the start position and timeline, its `backup_manifest`
//! the end of the WAL range, and `global/pg_control` the system identifier. Files are cut into
//! chunks as they stream by; compressing and uploading runs on worker threads.

use std::io::Read;
use std::sync::mpsc::sync_channel;
use std::time::Duration;

use jiff::Timestamp;
use pitrkit::error::{Error, Result};
use pitrkit::io::buffer::PageBuf;
use pitrkit::pg::wal::Lsn;
use pitrkit::repo::chunk::{CHUNK_SIZE, ChunkId, ChunkWriter};
use pitrkit::repo::manifest::Entry;
use pitrkit::repo::{ClusterIdentity, Repository};

use crate::{Captured, Cli, await_wal};
use pitrkit::io::buffer::read_full;

fn bad(why: impl Into<String>) -> Error {
    Error::invalid_input("stdin", why)
}

pub(crate) fn capture(
    cli: &Cli,
    repo: &Repository,
    writer: &ChunkWriter,
    jobs: usize,
) -> Result<Captured> {
    let start_time = Timestamp::now();
    let stdin = std::io::stdin();
    let mut archive = tar::Archive::new(stdin.lock());
    let mut entries = Vec::new();
    let mut backup_label = None;
    let mut tablespace_map = None;
    let mut backup_manifest = None;
    let mut pg_control = None;
    let mut pg_version = None;
    let mut wal_size = None;

    // Workers compress and upload; this thread reads the stream, which can't be shared.
    let previous = crate::files::previous_chunks(repo, writer)?;
    let (tx, rx) = sync_channel::<(Vec<u8>, Option<ChunkId>)>(jobs * 2);
    let rx = std::sync::Mutex::new(rx);
    // Set by a worker that failed: the reader must stop instead of waiting on a full queue
    // nobody drains any more.
    let failed = std::sync::atomic::AtomicBool::new(false);
    let result = std::thread::scope(|s| -> Result<()> {
        let mut workers = Vec::new();
        for _ in 0..jobs {
            workers.push(s.spawn(|| -> Result<()> {
                loop {
                    let (chunk, prev) = match pitrkit::io::lock(&rx).recv() {
                        Ok(c) => c,
                        Err(_) => return Ok(()),
                    };
                    if let Err(e) = writer.put(&chunk, prev.as_ref()) {
                        failed.store(true, std::sync::atomic::Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }));
        }
        let read = (|| -> Result<()> {
            let it = archive
                .entries()
                .map_err(|e| bad(format!("not a tar stream: {e}")))?;
            for entry in it {
                let mut entry = entry.map_err(|e| bad(format!("broken tar stream: {e}")))?;
                let path = entry
                    .path()
                    .map_err(|e| bad(format!("bad path in tar: {e}")))?
                    .display()
                    .to_string();
                let path = path
                    .trim_start_matches("./")
                    .trim_end_matches('/')
                    .to_string();
                let mode = entry.header().mode().unwrap_or(0o600) & 0o7777;
                let kind = entry.header().entry_type();
                if kind.is_dir() {
                    entries.push(Entry::Dir { path, mode });
                    continue;
                }
                if kind.is_symlink() {
                    let target = entry
                        .link_name()
                        .ok()
                        .flatten()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default();
                    entries.push(Entry::Symlink { path, target });
                    continue;
                }
                if !kind.is_file() {
                    continue;
                }
                let small = |entry: &mut tar::Entry<'_, _>| -> Result<Vec<u8>> {
                    let mut v = Vec::new();
                    entry
                        .read_to_end(&mut v)
                        .map_err(|e| Error::local_io("stdin", e))?;
                    Ok(v)
                };
                match path.as_str() {
                    "backup_label" => {
                        backup_label =
                            Some(String::from_utf8_lossy(&small(&mut entry)?).into_owned())
                    }
                    "tablespace_map" => {
                        tablespace_map =
                            Some(String::from_utf8_lossy(&small(&mut entry)?).into_owned())
                    }
                    "backup_manifest" => backup_manifest = Some(small(&mut entry)?),
                    _ => {
                        let mut buf = PageBuf::new(CHUNK_SIZE);
                        let mut crc = 0u32;
                        let mut chunks = Vec::new();
                        let mut size = 0u64;
                        loop {
                            let n = read_full(&mut entry, &mut buf)
                                .map_err(|e| Error::local_io("stdin", e))?;
                            if n == 0 {
                                break;
                            }
                            crc = crc32c::crc32c_append(crc, &buf[..n]);
                            if size == 0 && path == "global/pg_control" {
                                pg_control = Some(buf[..n.min(16)].to_vec());
                            }
                            if size == 0 && path == "PG_VERSION" {
                                pg_version = String::from_utf8_lossy(&buf[..n])
                                    .trim()
                                    .parse::<u32>()
                                    .ok();
                            }
                            let prev = previous
                                .get(&path)
                                .and_then(|p| p.get(chunks.len()))
                                .copied();
                            chunks.push(ChunkId::of(&buf[..n], &repo.keys().digester()));
                            let mut item = (buf[..n].to_vec(), prev);
                            loop {
                                match tx.try_send(item) {
                                    Ok(()) => break,
                                    Err(std::sync::mpsc::TrySendError::Full(back))
                                        if !failed.load(std::sync::atomic::Ordering::Relaxed) =>
                                    {
                                        item = back;
                                        std::thread::sleep(Duration::from_millis(1));
                                    }
                                    // The worker's own error is what gets reported.
                                    Err(_) => return Ok(()),
                                }
                            }
                            size += n as u64;
                            if n < CHUNK_SIZE {
                                break;
                            }
                        }
                        if path.starts_with("pg_wal/") && wal_size.is_none() && size >= 1 << 20 {
                            wal_size = Some(size as u32);
                        }
                        entries.push(Entry::file(path, mode, size, crc, chunks));
                    }
                }
            }
            Ok(())
        })();
        drop(tx);
        for w in workers {
            w.join()
                .map_err(|_| Error::internal("upload worker panicked"))??;
        }
        read
    });
    result?;
    let stop_time = Timestamp::now();

    let label_text = backup_label
        .ok_or_else(|| bad("the stream has no backup_label: is it a pg_basebackup -Ft tar?"))?;
    let field = |name: &str| {
        label_text
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let start_lsn: Lsn = field("START WAL LOCATION: ")
        .and_then(|v| v.split_whitespace().next())
        .ok_or_else(|| bad("backup_label has no START WAL LOCATION"))?
        .parse()?;
    let timeline: u32 = field("START TIMELINE: ")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad("backup_label has no START TIMELINE"))?;
    let manifest = backup_manifest.ok_or_else(|| {
        bad("the stream has no backup_manifest (pg_basebackup 13 or later writes one)")
    })?;
    let manifest: serde_json::Value = serde_json::from_slice(&manifest)
        .map_err(|e| bad(format!("backup_manifest is not JSON: {e}")))?;
    let stop_lsn: Lsn = manifest["WAL-Ranges"]
        .as_array()
        .and_then(|r| r.last())
        .and_then(|r| r["End-LSN"].as_str())
        .ok_or_else(|| bad("backup_manifest has no WAL-Ranges End-LSN"))?
        .parse()?;
    let control = pg_control.ok_or_else(|| bad("the stream has no global/pg_control"))?;
    let sysid = u64::from_le_bytes(
        control
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("global/pg_control is truncated"))?,
    );
    let major = pg_version.ok_or_else(|| bad("the stream has no PG_VERSION"))?;
    let root = repo.read_root()?;
    let identity = ClusterIdentity {
        system_identifier: sysid,
        segment_size: root
            .as_ref()
            .map(|r| r.wal_segment_size)
            .or(wal_size)
            .unwrap_or(16 << 20),
        pg_major: major,
    };
    let captured = Captured {
        identity,
        pg_version_num: major * 10000,
        label: field("LABEL: ").unwrap_or_default().to_string(),
        start_lsn,
        stop_lsn,
        timeline,
        start_time,
        stop_time,
        next_xid: None,
        backup_label: label_text.clone(),
        tablespace_map: tablespace_map.filter(|s| !s.is_empty()),
        entries,
        source: "tar",
    };
    // pg_basebackup does not wait for the archiver: give it time to catch up.
    await_wal(repo, &captured, Duration::from_secs(cli.wal_wait))?;
    Ok(captured)
}
