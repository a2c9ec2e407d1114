//! Storing one sealed file: create-only, or proving that what the repository holds under
//! its name already is the same file (and repairing a damaged copy of it), never replacing
//! other content.

use pitrkit::args::FileArg;
use pitrkit::error::{Error, Result};
use pitrkit::repo::Repository;
use pitrkit::repo::object::{self, ContentDigest, ENVELOPE_LEN, Envelope};
use pitrkit::runner::note;
use pitrkit::storage::{ObjectKey, PutMode, PutOutcome};

/// A sealed file and the key it goes under.
pub(crate) struct Sealed<'a> {
    pub(crate) key: &'a ObjectKey,
    pub(crate) envelope: Envelope,
    pub(crate) stored: &'a [u8],
}

/// Stores the sealed file create-only, or checks what is stored already under its key.
pub(crate) fn store_segment(
    repo: &Repository,
    sealed: &Sealed,
    path: &FileArg,
    display: &str,
    existing: Option<Vec<u8>>,
    read_back: bool,
) -> Result<&'static str> {
    let Sealed {
        key,
        envelope,
        stored,
    } = *sealed;
    let status = match existing {
        Some(prefix) => verify_existing(repo, key, path, display, &prefix, &envelope, stored)?,
        None => match repo.store().put(key, stored, PutMode::CreateNew)? {
            PutOutcome::Stored if read_back => {
                let prefix = repo
                    .store()
                    .get_prefix(key, ENVELOPE_LEN)?
                    .unwrap_or_default();
                let theirs = Envelope::decode(key.as_str(), &prefix)?;
                if theirs.digest != envelope.digest || theirs.plain_len != envelope.plain_len {
                    return Err(conflict(key.as_str(), display, &theirs, &envelope));
                }
                "stored"
            }
            PutOutcome::Stored => "stored",
            PutOutcome::AlreadyExists => {
                // Another wal-push won the race; what matters is whether it stored the same.
                let prefix = repo
                    .store()
                    .get_prefix(key, ENVELOPE_LEN)?
                    .unwrap_or_default();
                verify_existing(repo, key, path, display, &prefix, &envelope, stored)?
            }
        },
    };
    Ok(status)
}

/// Idempotency: the same content under the same name is success, other content is refused
/// and never overwritten.
///
/// "The same" is proven on the whole stored object, not just its envelope: PostgreSQL
/// removes its own copy once this returns 0, so a damaged archived copy must be found now.
/// When the envelope records exactly this file's digest and length but the body no longer
/// matches, rewriting it with this file is a repair that replaces nothing of value.
///
/// In an encrypted repository a push host usually holds only the recipient: it proves the
/// stored copy's keyed digest (which only a holder of the key can produce) and length, and
/// leaves the body to `pitr-check verify`, which holds the identity.
fn verify_existing(
    repo: &Repository,
    key: &ObjectKey,
    path: &FileArg,
    display: &str,
    stored_prefix: &[u8],
    ours: &Envelope,
    sealed: &[u8],
) -> Result<&'static str> {
    let theirs = Envelope::decode(key.as_str(), stored_prefix)?;
    let our_digest = if theirs.key == ours.key && theirs.digest_alg == ours.digest_alg {
        ours.digest
    } else {
        // Sealed before a key rotation, or by a pitrkit that digested with sha256: digest
        // this file again the way the stored copy was.
        let digester = repo
            .keys()
            .digester_for(theirs.key, theirs.digest_alg)
            .ok_or_else(|| {
                Error::Conflict(format!(
                    "{display}: {key} was stored with key {}, which this host does not hold, so it \
                 can't prove the stored copy is this file; list the old recipient after the \
                 current one in encryption_recipients",
                    theirs
                        .key
                        .map(|k| k.to_string())
                        .unwrap_or_else(|| "none".into())
                ))
            })?;
        // Stdin was consumed: only a file can be read again.
        let file = path.file().ok_or_else(|| {
            Error::Conflict(format!(
                "{display}: {key} was stored with an older key or digest; push it from a file, \
                 not stdin, so it can be digested again"
            ))
        })?;
        let data = std::fs::read(file).map_err(|e| Error::local_io(file, e))?;
        ContentDigest(digester.of(&data))
    };
    if theirs.digest != our_digest || theirs.plain_len != ours.plain_len {
        return Err(conflict(key.as_str(), display, &theirs, ours));
    }
    let whole = repo.store().get(key)?.unwrap_or_default();
    match object::open(key.as_str(), &whole, repo.keys(), object::limit::WAL) {
        // PostgreSQL deletes the segment on this answer: the copy found (perhaps linked by a
        // wal-push killed before its directory fsync) must be durable first.
        Ok(_) | Err(Error::Denied(_)) => {
            repo.store().settle(std::slice::from_ref(key))?;
            Ok("already-archived")
        }
        Err(e) => {
            note(format!(
                "{e}; rewriting it from {display}, which has the recorded digest"
            ));
            repo.store().put(key, sealed, PutMode::Overwrite)?;
            Ok("repaired")
        }
    }
}

fn conflict(key: &str, display: &str, theirs: &Envelope, ours: &Envelope) -> Error {
    Error::Conflict(format!(
        "{display}: {key} already exists with different content (stored {} {} length {}, \
         this file {} {} length {}); refusing to overwrite archived WAL",
        theirs.digest_name(),
        theirs.digest,
        theirs.plain_len,
        ours.digest_name(),
        ours.digest,
        ours.plain_len
    ))
}
