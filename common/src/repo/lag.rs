//! How far a copy of a repository (pitr-copy's destination) is behind its source, from one
//! listing of each: the WAL segments and backups the source has and the copy lacks, and how
//! long ago the source stored the oldest of those segments. Used by `pitr-copy --follow`
//! and `pitr-check --compare`.

use std::collections::HashSet;
use std::time::SystemTime;

use serde::Serialize;

use crate::error::Result;
use crate::pg::wal::WalFileName;
use crate::repo::Repository;
use crate::repo::layout;

/// A copy's lag behind its source.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Lag {
    /// WAL objects (segments, histories, backup histories) the copy lacks.
    pub wal_behind: u64,
    /// Seconds since the source stored the oldest WAL object the copy lacks; 0 when the
    /// copy has every one (`null` when the source's store gives no times).
    pub seconds_behind: Option<f64>,
    /// Backups (manifests) the copy lacks.
    pub backups_behind: Vec<String>,
    /// The newest WAL segment of each side.
    pub source_newest: Option<String>,
    pub copy_newest: Option<String>,
}

/// Compares the listings of `source` and `copy` (whose segments are `seg_size` bytes).
pub fn lag(source: &Repository, copy: &Repository, seg_size: u32) -> Result<Lag> {
    let src = source.list_wal()?;
    let have: HashSet<WalFileName> = copy.list_wal()?.into_iter().map(|(n, _)| n).collect();
    let newest = |names: &mut dyn Iterator<Item = WalFileName>| {
        names
            .filter(WalFileName::has_wal_pages)
            .max_by_key(|n| (n.segno(seg_size), n.timeline()))
            .map(|n| n.to_string())
    };
    let missing: Vec<_> = src.iter().filter(|(n, _)| !have.contains(n)).collect();
    let seconds_behind = if missing.is_empty() {
        Some(0.0)
    } else {
        missing
            .iter()
            .filter_map(|(_, o)| o.modified)
            .min()
            .map(|t| {
                SystemTime::now()
                    .duration_since(t)
                    .unwrap_or_default()
                    .as_secs_f64()
            })
    };
    let copy_backups: HashSet<String> = copy
        .store()
        .list(layout::BACKUPS)?
        .iter()
        .filter_map(|o| layout::manifest_of(o.key.as_str()))
        .map(|id| id.to_string())
        .collect();
    let backups_behind = source
        .store()
        .list(layout::BACKUPS)?
        .iter()
        .filter_map(|o| layout::manifest_of(o.key.as_str()))
        .map(|id| id.to_string())
        .filter(|id| !copy_backups.contains(id))
        .collect();
    Ok(Lag {
        wal_behind: missing.len() as u64,
        seconds_behind,
        backups_behind,
        source_newest: newest(&mut src.iter().map(|(n, _)| *n)),
        copy_newest: newest(&mut have.iter().copied()),
    })
}
