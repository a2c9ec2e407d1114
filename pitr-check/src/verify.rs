//! `pitr-check verify`: read every stored object back and check it against its recorded
//! digest and length, then say what each bad or missing object breaks.
//!
//! `status` trusts listings; this reads the bytes, so it finds the silent failures listings
//! can't: a flipped bit on a disk, a truncated upload, an object replaced by something else.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use jiff::Timestamp;
use pitrkit::error::{Error, Result};
use pitrkit::io::parallel;
use pitrkit::pg::wal::WalFileName;
use pitrkit::pg::walrecord::Summarizer;
use pitrkit::repo::chunk::{self, ChunkId};
use pitrkit::repo::object::{self, Envelope};
use pitrkit::repo::summary::Summaries;
use pitrkit::runner::{Verdict, note};
use pitrkit::settings::{RepoArgs, Settings};
use pitrkit::storage::ObjectKey;
use serde::Serialize;

use crate::VerifyArgs;
use summaries::{Summing, check_summary};

mod summaries;
use crate::report::{Metrics, print_report};
use crate::status::{BackupReport, Inventory, human_bytes, verdict_word};

/// What a bad object does to one backup.
#[derive(Debug, Clone, Serialize)]
pub struct Broken {
    pub backup_id: String,
    /// `cannot restore`, or where its recovery window now ends.
    pub effect: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub key: String,
    /// `corrupt` (read but failed its checks), `missing` (referenced but absent) or
    /// `no-key` (encrypted with a key no configured identity opens).
    pub problem: String,
    pub detail: String,
    pub breaks: Vec<Broken>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub format_version: u32,
    pub repository: String,
    pub checked_at: Timestamp,
    pub verdict: Verdict,
    pub objects_checked: u64,
    pub bytes_checked: u64,
    pub seconds: f64,
    /// How many objects each key sealed (`none`: not encrypted): what a key rotation must
    /// keep readable until those objects expire.
    pub keys: BTreeMap<String, u64>,
    pub problems: Vec<Problem>,
}

enum Kind {
    Wal(WalFileName),
    Chunk(ChunkId),
    Other,
}

fn kind_of(key: &ObjectKey) -> Kind {
    let k = key.as_str();
    if let Some(id) = ChunkId::from_key(k) {
        return Kind::Chunk(id);
    }
    if let Some(name) = pitrkit::repo::layout::wal_name(k) {
        return Kind::Wal(name);
    }
    Kind::Other
}

pub fn run(args: &VerifyArgs, repo_args: &RepoArgs) -> Result<Verdict> {
    let started = Instant::now();
    let settings = Settings::from_args(repo_args)?;
    let jobs = settings.jobs(args.jobs);
    let inv = Inventory::load(&settings)?;
    let backups = inv.analyse();
    let store = inv.repo.store();
    // What the inventory listed already: every WAL object, then every chunk.
    let mut chunk_keys: Vec<ObjectKey> = inv.chunks.iter().map(ChunkId::key).collect();
    chunk_keys.sort();
    let objects: Vec<ObjectKey> = inv
        .index
        .objects
        .iter()
        .cloned()
        .chain(chunk_keys)
        .collect();
    let bytes = AtomicU64::new(0);
    let by_key: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
    let keys = inv.repo.keys();
    let summaries = Summaries::list(&inv.repo, &inv.root)?;
    // Corruption is a finding; an unreachable store stops the run (UNKNOWN).
    let found = parallel::map(jobs, &objects, |key| -> Result<Option<Problem>> {
        let Some(stored) = store.get(key)? else {
            return Ok(None); // removed since the listing (retention)
        };
        let sealed_with = Envelope::decode(key.as_str(), &stored)
            .ok()
            .map(|e| e.key.map_or_else(|| "none".to_string(), |k| k.to_string()));
        if let Some(k) = sealed_with {
            *pitrkit::io::lock(&by_key).entry(k).or_default() += 1;
        }
        let outcome = match kind_of(key) {
            Kind::Chunk(id) => chunk::verify(store, keys, &id, &stored),
            Kind::Wal(name) if summaries.has(&name) => {
                // The segment's records, read as they are checked: its summary must say
                // what they say (a planted or stale one would mislead every target check).
                let mut summing = Summing(Summarizer::new());
                let opened = object::open_to(key.as_str(), &stored, &mut summing, keys);
                if let Ok(env) = &opened
                    && let Some(problem) = check_summary(&summaries, &name, summing.0)?
                {
                    bytes.fetch_add(env.plain_len, Ordering::Relaxed);
                    return Ok(Some(problem));
                }
                opened.map(|e| e.plain_len)
            }
            Kind::Wal(_) | Kind::Other => {
                let mut sink = std::io::sink();
                object::open_to(key.as_str(), &stored, &mut sink, keys).map(|e| e.plain_len)
            }
        };
        match outcome {
            Ok(n) => {
                bytes.fetch_add(n, Ordering::Relaxed);
                Ok(None)
            }
            Err(Error::Corrupt { reason, .. }) => Ok(Some(Problem {
                key: key.to_string(),
                problem: "corrupt".into(),
                detail: reason,
                breaks: vec![],
            })),
            // Encrypted with a key this host has no identity for: can't be checked here,
            // and can't be restored with these keys either.
            Err(Error::Denied(reason)) => Ok(Some(Problem {
                key: key.to_string(),
                problem: "no-key".into(),
                detail: reason,
                breaks: vec![],
            })),
            Err(e) => Err(e),
        }
    })?;
    let mut problems: Vec<Problem> = found.into_iter().flatten().collect();
    // A chunk that rebuilds from a bad base is reported as corrupt by itself too: keep the
    // base's report, it names the cause.
    problems.sort_by(|a, b| a.key.cmp(&b.key));

    // What is referenced but absent.
    let present: BTreeSet<String> = objects.iter().map(ToString::to_string).collect();
    for (id, m) in &inv.backups {
        match m {
            Err(why) => problems.push(Problem {
                key: id.manifest_key().to_string(),
                problem: "corrupt".into(),
                detail: why.clone(),
                breaks: vec![Broken {
                    backup_id: id.to_string(),
                    effect: "cannot restore".into(),
                }],
            }),
            Ok(m) => {
                for c in m.referenced_chunks().collect::<BTreeSet<_>>() {
                    let key = c.key().to_string();
                    if !present.contains(&key) && !problems.iter().any(|p| p.key == key) {
                        problems.push(Problem {
                            key,
                            problem: "missing".into(),
                            detail: format!("backup {id} names it"),
                            breaks: vec![],
                        });
                    }
                }
                for n in inv.index.missing_for(m) {
                    let key = pitrkit::repo::Repository::wal_key(&n).to_string();
                    if !problems.iter().any(|p| p.key == key) {
                        problems.push(Problem {
                            key,
                            problem: "missing".into(),
                            detail: format!("backup {id} needs it to become consistent"),
                            breaks: vec![],
                        });
                    }
                }
            }
        }
    }
    attribute(&inv, &backups, &mut problems);

    let verdict = if problems.is_empty() {
        Verdict::Ok
    } else {
        Verdict::Critical
    };
    let report = VerifyReport {
        format_version: crate::status::REPORT_VERSION,
        repository: inv.repo.location(),
        checked_at: Timestamp::now(),
        verdict,
        objects_checked: objects.len() as u64,
        bytes_checked: bytes.load(Ordering::Relaxed),
        seconds: pitrkit::io::measure::seconds(started.elapsed()),
        keys: by_key.into_inner().unwrap_or_else(|p| p.into_inner()),
        problems,
    };
    print_report(
        &args.output,
        &report,
        |out| table(out, &report),
        || metrics(&report),
    )?;
    note(format!(
        "{}: {} objects ({}) read in {:.1} s, {} problem(s)",
        verdict_word(verdict),
        report.objects_checked,
        human_bytes(report.bytes_checked),
        report.seconds,
        report.problems.len()
    ));
    Ok(verdict)
}

/// Fills in which backups each problem breaks and how.
fn attribute(inv: &Inventory, backups: &[BackupReport], problems: &mut [Problem]) {
    let mut by_chunk: HashMap<String, Vec<String>> = HashMap::new();
    for (id, m) in &inv.backups {
        if let Ok(m) = m {
            for c in m.referenced_chunks().collect::<BTreeSet<_>>() {
                by_chunk
                    .entry(c.key().to_string())
                    .or_default()
                    .push(id.to_string());
            }
        }
    }
    let seg = inv.root.wal_segment_size;
    for p in problems.iter_mut() {
        if !p.breaks.is_empty() {
            continue;
        }
        match kind_of(&ObjectKey::new(p.key.clone()).unwrap_or_else(|_| unreachable!())) {
            Kind::Chunk(_) => {
                p.breaks = by_chunk
                    .get(&p.key)
                    .into_iter()
                    .flatten()
                    .map(|b| Broken {
                        backup_id: b.clone(),
                        effect: "cannot restore".into(),
                    })
                    .collect();
            }
            Kind::Wal(name) => {
                let Some(segno) = name.segno(seg) else {
                    continue;
                };
                for b in backups {
                    let (start, stop) = (b.start_lsn.segno(seg), b.stop_lsn.segno(seg));
                    let on_path = |tli: u32| {
                        inv.index
                            .path(tli)
                            .iter()
                            .any(|(t, _)| *t == name.timeline().0)
                    };
                    if b.timeline == name.timeline().0 && (start..=stop).contains(&segno) {
                        p.breaks.push(Broken {
                            backup_id: b.backup_id.clone(),
                            effect: "cannot restore".into(),
                        });
                    } else if let Some(w) = &b.window
                        && segno > stop
                        && segno <= w.to_lsn.segno(seg)
                        && on_path(w.timeline)
                    {
                        p.breaks.push(Broken {
                            backup_id: b.backup_id.clone(),
                            effect: format!(
                                "recovery window now ends at {} instead of {}",
                                pitrkit::pg::wal::Lsn(segno * seg as u64),
                                w.to_lsn
                            ),
                        });
                    }
                }
            }
            Kind::Other => {}
        }
    }
}

fn table(out: &mut dyn std::io::Write, r: &VerifyReport) -> std::io::Result<()> {
    writeln!(out, "repository  {}", r.repository)?;
    writeln!(
        out,
        "verified    {} objects, {} of content, in {:.1} s",
        r.objects_checked,
        human_bytes(r.bytes_checked),
        r.seconds
    )?;
    writeln!(
        out,
        "keys        {}",
        r.keys
            .iter()
            .map(|(k, n)| format!("{k}: {n} objects"))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    writeln!(out, "status      {}", verdict_word(r.verdict))?;
    for p in &r.problems {
        writeln!(
            out,
            "  {} {}: {}",
            p.problem.to_uppercase(),
            p.key,
            p.detail
        )?;
        for b in &p.breaks {
            writeln!(out, "      backup {}: {}", b.backup_id, b.effect)?;
        }
    }
    Ok(())
}

fn metrics(r: &VerifyReport) -> Metrics {
    let mut m = Metrics::new(&r.repository);
    m.gauge(
        "pitrkit_verify_status",
        "Verdict of pitr-check verify: 0 ok, 2 critical",
        &[],
        r.verdict as i64 as f64,
    );
    m.gauge(
        "pitrkit_verify_objects",
        "Objects read back",
        &[],
        r.objects_checked as f64,
    );
    m.gauge(
        "pitrkit_verify_problems",
        "Corrupt or missing objects",
        &[],
        r.problems.len() as f64,
    );
    m.gauge(
        "pitrkit_verify_seconds",
        "Duration of the verification",
        &[],
        r.seconds,
    );
    m
}
