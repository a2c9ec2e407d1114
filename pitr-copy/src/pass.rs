//! One copy pass: list both sides, copy what the copy lacks in the order that keeps it
//! restorable, read every written object back, and say how far behind the copy still is.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use pitrkit::error::{Error, Result};
use pitrkit::io::parallel;
use pitrkit::repo::lag::{Lag, lag};
use pitrkit::repo::layout;
use pitrkit::repo::manifest::BackupId;
use pitrkit::repo::object::{self, Envelope};
use pitrkit::repo::{RepoRoot, Repository};
use pitrkit::runner::note;
use pitrkit::storage::{ObjectInfo, ObjectKey, PutMode, PutOutcome};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::CopyOptions;
use crate::progress::Progress;
use crate::rate::Rate;

/// What one pass did (one JSON line on stdout).
#[derive(Debug, Serialize)]
pub struct PassReport {
    pub from: String,
    pub to: String,
    /// Objects written to the copy, and their bytes.
    pub objects: u64,
    pub bytes: u64,
    /// Objects the copy had already.
    pub skipped: u64,
    /// Backups whose manifest this pass published at the copy.
    pub backups: Vec<String>,
    /// Backups not published yet: a chunk or WAL they need is not at the copy (still being
    /// written at the source, or refused below).
    pub deferred: Vec<String>,
    /// Objects deleted from the copy (`--mirror-deletes`).
    pub deleted: u64,
    /// Source objects that fail their checks, with why: never copied.
    pub refused: Vec<(String, String)>,
    pub seconds: f64,
    /// How far behind the copy is after this pass.
    pub lag: Lag,
}

/// What an object is, which decides how it is checked and whether it may be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Wal,
    /// Computed from its segment: replaced, never a conflict.
    Summary,
    Chunk,
    Manifest,
    /// Rewritten by `bb-push --keep` with a new reason: replaced.
    Keep,
}

impl Kind {
    fn of(key: &str) -> Option<Kind> {
        if layout::wal_name(key).is_some() {
            Some(Kind::Wal)
        } else if layout::summary_of(key).is_some() {
            Some(Kind::Summary)
        } else if layout::chunk_hex(key).is_some() {
            Some(Kind::Chunk)
        } else if layout::manifest_of(key).is_some() {
            Some(Kind::Manifest)
        } else if layout::keep_mark_of(key).is_some() {
            Some(Kind::Keep)
        } else {
            None
        }
    }

    fn replaceable(self) -> bool {
        matches!(self, Kind::Summary | Kind::Keep)
    }
}

enum Outcome {
    Copied(u64),
    Same,
    /// Removed at the source since it was listed (retention).
    Gone,
    Refused(String),
}

/// Copies what `copy` lacks of `source`.
pub fn copy(
    source: &Repository,
    copy: &Repository,
    opts: &CopyOptions,
    rate: Option<&Rate>,
) -> Result<PassReport> {
    let started = Instant::now();
    let root = source.require_root()?;
    copy.store().create()?;
    copy.init_copy_root(&root)?;

    // Backups are listed before the objects they name: a manifest is published at the
    // source only after its chunks and WAL, so every manifest of this listing names objects
    // the later listings hold.
    let backups = listed(source, &[layout::BACKUPS])?;
    let data = listed(source, &[layout::WAL, layout::CHUNKS, layout::SUMMARIES])?;
    let mut at_copy: HashMap<ObjectKey, u64> = listed(
        copy,
        &[
            layout::WAL,
            layout::CHUNKS,
            layout::SUMMARIES,
            layout::BACKUPS,
        ],
    )?
    .into_iter()
    .map(|(o, _)| (o.key, o.size))
    .collect();

    let mut report = PassReport {
        from: source.location(),
        to: copy.location(),
        objects: 0,
        bytes: 0,
        skipped: 0,
        backups: Vec::new(),
        deferred: Vec::new(),
        deleted: 0,
        refused: Vec::new(),
        seconds: 0.0,
        lag: Lag::default(),
    };
    // WAL and chunks first, then the summaries of the segments: all before any manifest.
    let (summaries, rest): (Vec<_>, Vec<_>) = data
        .iter()
        .filter(|(o, _)| needs_copy(&at_copy, o))
        .partition(|(_, kind)| *kind == Kind::Summary);
    report.skipped = (data.len() - summaries.len() - rest.len()) as u64;
    let progress = Progress::new(rest.len() + summaries.len());
    for batch in [rest, summaries] {
        let done = parallel::map(opts.jobs, &batch, |(o, kind)| {
            let outcome = copy_one(source, copy, &o.key, *kind, rate);
            progress.step(o.size);
            outcome
        })?;
        for ((o, _), outcome) in batch.iter().zip(done) {
            tally(&mut report, &mut at_copy, o, outcome);
        }
    }

    progress.done();
    // Manifests, oldest first, each only once everything it names is at the copy; then
    // keep marks, of published backups only.
    for (o, _) in backups.iter().filter(|(_, k)| *k == Kind::Manifest) {
        let Some(id) = layout::manifest_of(o.key.as_str()) else {
            continue;
        };
        if at_copy.contains_key(&o.key) {
            report.skipped += 1;
            continue;
        }
        match complete_at_copy(source, &root, &id, &at_copy) {
            Ok(true) => {}
            Ok(false) => {
                report.deferred.push(id.to_string());
                continue;
            }
            Err(Error::Corrupt { key, reason }) => {
                report.refused.push((key, reason));
                continue;
            }
            Err(e) => return Err(e),
        }
        let outcome = copy_one(source, copy, &o.key, Kind::Manifest, rate)?;
        if matches!(outcome, Outcome::Copied(_)) {
            report.backups.push(id.to_string());
        }
        tally(&mut report, &mut at_copy, o, outcome);
    }
    for (o, _) in backups.iter().filter(|(_, k)| *k == Kind::Keep) {
        let published = layout::keep_mark_of(o.key.as_str())
            .is_some_and(|id| at_copy.contains_key(&id.manifest_key()));
        if published && needs_copy(&at_copy, o) {
            let outcome = copy_one(source, copy, &o.key, Kind::Keep, rate)?;
            tally(&mut report, &mut at_copy, o, outcome);
        }
    }

    if opts.mirror_deletes {
        let at_source: HashSet<&ObjectKey> =
            backups.iter().chain(&data).map(|(o, _)| &o.key).collect();
        report.deleted = mirror_deletes(copy, &at_copy, &at_source)?;
    }
    if !report.deferred.is_empty() {
        note(format!(
            "not published yet (what they need is not at the copy): {}",
            report.deferred.join(", ")
        ));
    }
    for (key, why) in &report.refused {
        note(format!("{key} is not copied: {why}"));
    }
    report.lag = lag(source, copy, root.wal_segment_size)?;
    report.seconds = pitrkit::io::measure::seconds(started.elapsed());
    Ok(report)
}

/// Every object of the kinds a copy holds under `prefixes`, sorted by key.
fn listed(repo: &Repository, prefixes: &[&str]) -> Result<Vec<(ObjectInfo, Kind)>> {
    let mut out = Vec::new();
    for p in prefixes {
        out.extend(
            repo.store()
                .list(p)?
                .into_iter()
                .filter_map(|o| Kind::of(o.key.as_str()).map(|k| (o, k))),
        );
    }
    out.sort_by(|a, b| a.0.key.cmp(&b.0.key));
    Ok(out)
}

/// Whether `o` must be written: absent at the copy, or (a kind that is replaced, or a
/// conflict for `copy_one` to find out) of another size there.
fn needs_copy(at_copy: &HashMap<ObjectKey, u64>, o: &ObjectInfo) -> bool {
    at_copy.get(&o.key).is_none_or(|size| *size != o.size)
}

fn tally(
    report: &mut PassReport,
    at_copy: &mut HashMap<ObjectKey, u64>,
    o: &ObjectInfo,
    outcome: Outcome,
) {
    match outcome {
        Outcome::Copied(n) => {
            report.objects += 1;
            report.bytes += n;
            at_copy.insert(o.key.clone(), n);
        }
        Outcome::Same => {
            report.skipped += 1;
            at_copy.insert(o.key.clone(), o.size);
        }
        Outcome::Gone => {}
        Outcome::Refused(why) => report.refused.push((o.key.to_string(), why)),
    }
}

/// Whether every chunk backup `id` names, and the WAL from its start to its stop, are at
/// the copy. Reads (and so checks) the source's manifest.
fn complete_at_copy(
    source: &Repository,
    root: &RepoRoot,
    id: &BackupId,
    at_copy: &HashMap<ObjectKey, u64>,
) -> Result<bool> {
    let m = source.read_manifest(id)?;
    let chunks = m
        .referenced_chunks()
        .all(|c| at_copy.contains_key(&c.key()));
    let wal = m
        .required_wal(root.wal_segment_size)
        .iter()
        .all(|n| at_copy.contains_key(&layout::wal(n)));
    Ok(chunks && wal)
}

/// Copies one object: read at the source and checked, written create-only (or replaced, for
/// the kinds that are), then read back from the copy and compared byte for byte.
fn copy_one(
    source: &Repository,
    copy: &Repository,
    key: &ObjectKey,
    kind: Kind,
    rate: Option<&Rate>,
) -> Result<Outcome> {
    let Some(bytes) = source.store().get(key)? else {
        return Ok(Outcome::Gone);
    };
    if let Err(why) = check(source, key, kind, &bytes) {
        return Ok(Outcome::Refused(why));
    }
    let mode = if kind.replaceable() {
        PutMode::Overwrite
    } else {
        PutMode::CreateNew
    };
    match copy.store().put(key, &bytes, mode)? {
        PutOutcome::Stored => {
            pitrkit::runner::fault_point("after-copy-put");
            if let Some(r) = rate {
                r.take(bytes.len());
            }
            let back = copy.store().get(key)?;
            if back.as_deref() != Some(&bytes[..]) {
                return Err(Error::Unavailable(format!(
                    "{key} reads back from {} different from what was written ({} bytes, \
                     then {}): the copy's store is not keeping what it acknowledges",
                    copy.location(),
                    bytes.len(),
                    back.map_or("nothing".into(), |b| format!("{} bytes", b.len()))
                )));
            }
            Ok(Outcome::Copied(bytes.len() as u64))
        }
        PutOutcome::AlreadyExists => {
            let theirs = copy.store().get(key)?.unwrap_or_default();
            if theirs == bytes {
                Ok(Outcome::Same)
            } else {
                Err(Error::Conflict(format!(
                    "{key} differs at the copy {}: the source holds {}, the copy {}; refusing \
                     to overwrite it (is the copy another repository's?)",
                    copy.location(),
                    digest(key, &bytes),
                    digest(key, &theirs)
                )))
            }
        }
    }
}

/// Checks a source object before it is copied: its envelope, and where the keys allow, its
/// content against the envelope's digest (an encrypted repository's data objects open only
/// with the identity, which a copy host does not need: their envelope is checked).
fn check(
    source: &Repository,
    key: &ObjectKey,
    kind: Kind,
    bytes: &[u8],
) -> std::result::Result<(), String> {
    if kind == Kind::Keep {
        return serde_json::from_slice::<serde_json::Value>(bytes)
            .map(drop)
            .map_err(|e| format!("not a keep mark: {e}"));
    }
    match object::open_to(key.as_str(), bytes, &mut std::io::sink(), source.keys()) {
        Ok(_) => Ok(()),
        Err(Error::Denied(_)) => Envelope::decode(key.as_str(), bytes)
            .map(drop)
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// How a conflict names an object: its envelope's digest, else the sha256 of its bytes.
fn digest(key: &ObjectKey, bytes: &[u8]) -> String {
    match Envelope::decode(key.as_str(), bytes) {
        Ok(e) => format!("content digest {}", e.digest),
        Err(_) => format!("bytes with sha256 {:x}", Sha256::digest(bytes)),
    }
}

/// Deletes from the copy what the source no longer holds, in retention's order: manifests
/// (and keep marks) first, so no published backup ever lacks what it names, then WAL and
/// summaries, then chunks.
fn mirror_deletes(
    copy: &Repository,
    at_copy: &HashMap<ObjectKey, u64>,
    at_source: &HashSet<&ObjectKey>,
) -> Result<u64> {
    let mut by_rank: BTreeMap<u8, Vec<&ObjectKey>> = BTreeMap::new();
    for key in at_copy.keys().filter(|k| !at_source.contains(k)) {
        let rank = match Kind::of(key.as_str()) {
            Some(Kind::Manifest) => 0,
            Some(Kind::Keep) => 1,
            Some(Kind::Wal | Kind::Summary) => 2,
            Some(Kind::Chunk) => 3,
            None => continue,
        };
        by_rank.entry(rank).or_default().push(key);
    }
    let mut deleted = 0;
    for keys in by_rank.values_mut() {
        keys.sort();
        for key in keys.iter() {
            copy.store().delete(key)?;
            deleted += 1;
        }
    }
    Ok(deleted)
}
