//! The repository layout: every key an object lives under, and the way back from a key to
//! what it names, in one place (docs/FORMAT.md has a section per kind).
//!
//! Keys are built from fixed-alphabet parts (hex digits, backup ids, lock kinds), so
//! building one never fails; parsing a listed key is how untrusted names come in, and a key
//! that does not parse is simply not the kind asked for.

use crate::pg::wal::{TimelineId, WalFileName};
use crate::repo::manifest::BackupId;
use crate::storage::ObjectKey;

/// The root document.
pub const ROOT: &str = "pitrkit.json";
/// Archived WAL, one prefix per timeline: `wal/<TLI>/<name>.zst`.
pub const WAL: &str = "wal/";
/// Summaries of archived WAL segments: `summaries/<TLI>/<name>.json.zst`.
pub const SUMMARIES: &str = "summaries/";
/// Backup chunks: `chunks/<two hex digits>/<id>.zst`.
pub const CHUNKS: &str = "chunks/";
/// Per backup: `backups/<id>/manifest.json.zst` and `backups/<id>/keep.json`.
pub const BACKUPS: &str = "backups/";
/// Locks: `locks/<kind>-<time>-<pid>-<random>.json`.
pub const LOCKS: &str = "locks/";
/// The create-only probe a new repository writes and removes.
const PROBES: &str = "probe/";
const MANIFEST: &str = "manifest.json.zst";
const KEEP: &str = "keep.json";

fn key(s: String) -> ObjectKey {
    ObjectKey::new(s).unwrap_or_else(|_| unreachable!("layout keys are well-formed"))
}

pub fn root() -> ObjectKey {
    key(ROOT.into())
}

/// Where an archived WAL file lives: grouped by timeline so that a timeline's files list
/// with one prefix query.
pub fn wal(name: &WalFileName) -> ObjectKey {
    key(format!("{WAL}{}/{name}.zst", name.timeline()))
}

/// The prefix of one timeline's WAL.
pub fn wal_timeline(tli: TimelineId) -> String {
    format!("{WAL}{tli}/")
}

/// The WAL file a listed key holds, if it is one.
pub fn wal_name(key: &str) -> Option<WalFileName> {
    let (tli, file) = key.strip_prefix(WAL)?.split_once('/')?;
    let name: WalFileName = file.strip_suffix(".zst")?.parse().ok()?;
    (tli == name.timeline().to_string()).then_some(name)
}

/// Where the summary of an archived segment lives: beside the WAL's layout, under its own
/// prefix so that listing the archive and listing what is known of it stay separate.
pub fn summary(name: &WalFileName) -> ObjectKey {
    key(format!("{SUMMARIES}{}/{name}.json.zst", name.timeline()))
}

/// The segment a listed summary key describes, if it is one.
pub fn summary_of(key: &str) -> Option<WalFileName> {
    let (tli, file) = key.strip_prefix(SUMMARIES)?.split_once('/')?;
    let name: WalFileName = file.strip_suffix(".json.zst")?.parse().ok()?;
    (name.has_wal_pages() && tli == name.timeline().to_string()).then_some(name)
}

/// `chunks/<first two hex digits>/<hex>.zst`: 256 directories keep filesystem repositories
/// listable. `hex` is a chunk id's 64 hex digits.
pub fn chunk(hex: &str) -> ObjectKey {
    key(format!(
        "{CHUNKS}{}/{hex}.zst",
        hex.get(..2).unwrap_or("00")
    ))
}

/// The hex id of a listed chunk key, if it is one.
pub fn chunk_hex(key: &str) -> Option<&str> {
    let (dir, file) = key.strip_prefix(CHUNKS)?.split_once('/')?;
    let hex = file.strip_suffix(".zst")?;
    (hex.len() == 64 && hex.starts_with(dir) && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(hex)
}

pub fn manifest(id: &BackupId) -> ObjectKey {
    key(format!("{BACKUPS}{id}/{MANIFEST}"))
}

pub fn keep_mark(id: &BackupId) -> ObjectKey {
    key(format!("{BACKUPS}{id}/{KEEP}"))
}

/// The backup whose manifest a listed key is.
pub fn manifest_of(key: &str) -> Option<BackupId> {
    backup_file(key, MANIFEST)
}

/// The backup whose keep mark a listed key is.
pub fn keep_mark_of(key: &str) -> Option<BackupId> {
    backup_file(key, KEEP)
}

fn backup_file(key: &str, file: &str) -> Option<BackupId> {
    let (id, rest) = key.strip_prefix(BACKUPS)?.split_once('/')?;
    (rest == file).then(|| id.parse().ok()).flatten()
}

/// A lock object's key; `kind` and `stamp` are fixed-alphabet.
pub fn lock(kind: &str, stamp: &str, pid: u32, random: u32) -> ObjectKey {
    key(format!("{LOCKS}{kind}-{stamp}-{pid}-{random:08x}.json"))
}

/// The prefix under which locks of `kind` list.
pub fn locks_of(kind: &str) -> String {
    format!("{LOCKS}{kind}-")
}

pub fn probe(random: u64) -> ObjectKey {
    key(format!("{PROBES}create-only-{random:016x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_their_parsers_agree() {
        let n: WalFileName = "000000020000000100000003".parse().unwrap();
        assert_eq!(
            wal(&n).as_str(),
            "wal/00000002/000000020000000100000003.zst"
        );
        assert_eq!(wal_name(wal(&n).as_str()), Some(n));
        // A name filed under another timeline's prefix is not that file.
        assert_eq!(wal_name("wal/00000001/000000020000000100000003.zst"), None);
        assert_eq!(wal_name("wal/00000001/stray"), None);
        assert_eq!(
            summary(&n).as_str(),
            "summaries/00000002/000000020000000100000003.json.zst"
        );
        assert_eq!(summary_of(summary(&n).as_str()), Some(n));
        assert_eq!(
            summary_of("summaries/00000001/000000020000000100000003.json.zst"),
            None
        );
        assert_eq!(
            summary_of("summaries/00000002/00000002.history.json.zst"),
            None
        );
        let hex = "ab".repeat(32);
        assert_eq!(chunk_hex(chunk(&hex).as_str()), Some(hex.as_str()));
        assert_eq!(chunk_hex("chunks/cd/abab.zst"), None);
        let id: BackupId = "20261126T030512Z".parse().unwrap();
        assert_eq!(
            manifest(&id).as_str(),
            "backups/20261126T030512Z/manifest.json.zst"
        );
        assert_eq!(manifest_of(manifest(&id).as_str()), Some(id.clone()));
        assert_eq!(keep_mark_of(keep_mark(&id).as_str()), Some(id.clone()));
        assert_eq!(manifest_of(keep_mark(&id).as_str()), None);
        assert!(
            lock("restore", "20261126T030512Z", 7, 1)
                .as_str()
                .starts_with(&locks_of("restore"))
        );
    }
}
