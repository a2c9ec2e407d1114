//! Client-side encryption at rest, with the `age` format (age-encryption.org/v1) and X25519
//! keys: objects are compressed, then encrypted on the database host, so the store only ever
//! holds ciphertext.
//!
//! Why age: an audited, specified format with a maintained Rust implementation (the `age`
//! crate, also behind `rage`), authenticated encryption (ChaCha20-Poly1305 in 64 KiB chunks,
//! so any tampering fails decryption), and public-key recipients: a database host that only
//! pushes holds the *recipient* (public key); the *identity* (private key) is needed only
//! where backups are read (restore hosts, `pitr-check verify`), so a compromised primary
//! can't read old backups from the repository. Keys are those of the stock `age-keygen`.
//!
//! Content digests. A plain repository names chunks by the sha256 of their content and
//! records a content digest (sha256 or BLAKE3, see `digest`) in every envelope; in an
//! encrypted repository that would let anyone with read access to the bucket confirm a guess
//! of the content. Encrypted objects record HMAC-SHA256 or keyed BLAKE3 instead, keyed by keys
//! derived (HKDF-SHA256) from the recipient, and
//! chunks are named by that keyed digest: deduplication keeps working for whoever holds the
//! recipient, and leaks nothing to whoever holds only the bucket. The recipient is therefore
//! not public in pitrkit: keep it as private as a credential (it still can't decrypt).
//!
//! Two kinds of objects. *Data* (WAL segments, backup chunks: the rows) is sealed with age to
//! the recipient, readable only with the identity. *Metadata* (backup manifests, timeline
//! history files: no row data) is sealed with XChaCha20-Poly1305 under a key derived from the
//! recipient, so the hosts that push can also read it: `bb-push` finds the previous backup's
//! chunks, retention reads what each backup needs, `pitr-check status` computes windows —
//! all without the identity, while someone with only the bucket still reads nothing.
//!
//! Key rotation: objects record the id of the key that sealed them (4 bytes of a hash of
//! the recipient). New objects use the first recipient; old objects stay readable with any
//! identity configured, so a restore host keeps old identities until their objects expire.

use std::io::{Read, Write};
use std::sync::Arc;

use age::x25519;
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

mod digest;
mod load;

pub use digest::{DigestAlg, DigestState, Digester};
pub use load::{KeySource, generate};

/// Which key sealed an object: the first 4 bytes of sha256("pitrkit key id" ‖ recipient).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 4]);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl serde::Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What the keys derived from one recipient do.
#[derive(Clone)]
struct Derived {
    id: KeyId,
    /// Keys sha256 content digests (and so chunk names).
    mac: [u8; 32],
    /// Keys BLAKE3 content digests (envelope version 2).
    mac_blake3: [u8; 32],
    /// Seals metadata objects.
    meta: [u8; 32],
}

impl Derived {
    fn digester(&self, alg: DigestAlg) -> Digester {
        match alg {
            DigestAlg::Sha256 => Digester::Keyed(self.mac),
            DigestAlg::Blake3 => Digester::Blake3Keyed(self.mac_blake3),
        }
    }

    fn of(recipient: &x25519::Recipient) -> Self {
        let text = recipient.to_string();
        let mut id = [0u8; 4];
        id.copy_from_slice(
            &Sha256::new_with_prefix(b"pitrkit key id\0")
                .chain_update(text.as_bytes())
                .finalize()[..4],
        );
        let hk = hkdf::Hkdf::<Sha256>::new(Some(b"pitrkit"), text.as_bytes());
        let derive = |info: &[u8]| {
            let mut k = [0u8; 32];
            hk.expand(info, &mut k)
                .unwrap_or_else(|_| unreachable!("32 bytes is a valid HKDF-SHA256 length"));
            k
        };
        Derived {
            id: KeyId(id),
            mac: derive(b"content digest v1"),
            mac_blake3: derive(b"content digest blake3 v1"),
            meta: derive(b"metadata seal v1"),
        }
    }
}

/// The keys a tool holds. Cheap to clone; never printed.
#[derive(Clone, Default)]
pub struct Keys(Option<Arc<KeyRing>>);

struct KeyRing {
    /// Seals new objects.
    write: (x25519::Recipient, Derived),
    /// Recipients whose digests this tool can compute (including `write`).
    known: Vec<Derived>,
    /// Identities that can open objects, with their derived keys.
    read: Vec<(x25519::Identity, Derived)>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            None => f.write_str("Keys(none)"),
            Some(r) => write!(
                f,
                "Keys(write {}, {} identities)",
                r.write.1.id,
                r.read.len()
            ),
        }
    }
}

impl Keys {
    /// No encryption: a plain repository.
    pub fn none() -> Self {
        Keys(None)
    }

    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    /// The key new objects are sealed with, if any.
    pub fn write_key(&self) -> Option<KeyId> {
        self.0.as_ref().map(|r| r.write.1.id)
    }

    /// How a new chunk is named and its content digested (sha256: see `digest`).
    pub fn digester(&self) -> Digester {
        self.digester_with(DigestAlg::Sha256)
    }

    /// How new content is digested with `alg`.
    pub fn digester_with(&self, alg: DigestAlg) -> Digester {
        match &self.0 {
            None => Digester::plain(alg),
            Some(r) => r.write.1.digester(alg),
        }
    }

    /// How content sealed with `id` was digested with `alg`, when this tool knows that key.
    pub fn digester_for(&self, id: Option<KeyId>, alg: DigestAlg) -> Option<Digester> {
        match (id, &self.0) {
            (None, _) => Some(Digester::plain(alg)),
            (Some(_), None) => None,
            (Some(id), Some(r)) => r.known.iter().find(|d| d.id == id).map(|d| d.digester(alg)),
        }
    }

    /// Whether an identity for `id` is configured.
    pub fn can_open(&self, id: KeyId) -> bool {
        self.0
            .as_ref()
            .is_some_and(|r| r.read.iter().any(|(_, d)| d.id == id))
    }

    /// The ids of the identities configured, for messages.
    pub fn identity_ids(&self) -> Vec<KeyId> {
        self.0
            .as_ref()
            .map(|r| r.read.iter().map(|(_, d)| d.id).collect())
            .unwrap_or_default()
    }

    /// Seals `payload` (already compressed): data with age to the write recipient, metadata
    /// with the recipient-derived metadata key. Returns the scheme, key id and sealed bytes.
    pub fn seal(&self, class: Class, payload: &[u8]) -> Result<(Scheme, Option<KeyId>, Vec<u8>)> {
        let mut out = Vec::new();
        let (scheme, key) = self.seal_into(class, payload, &mut out)?;
        Ok((scheme, key, out))
    }

    /// [`Keys::seal`], appending the sealed bytes to `out` (after an envelope already there):
    /// a segment is copied once less.
    pub fn seal_into(
        &self,
        class: Class,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(Scheme, Option<KeyId>)> {
        let Some(r) = &self.0 else {
            out.extend_from_slice(payload);
            return Ok((Scheme::None, None));
        };
        let (recipient, derived) = &r.write;
        match class {
            Class::Data => {
                let recipient: &dyn age::Recipient = recipient;
                let enc = age::Encryptor::with_recipients(std::iter::once(recipient))
                    .map_err(|e| Error::Usage(format!("age: {e}")))?;
                // age adds its header and 16 bytes per 64 KiB chunk.
                out.reserve(payload.len() + payload.len() / 4096 + 512);
                let io = |e: std::io::Error| Error::Usage(format!("age: {e}"));
                let mut w = enc.wrap_output(&mut *out).map_err(io)?;
                w.write_all(payload).map_err(io)?;
                w.finish().map_err(io)?;
            }
            Class::Metadata => {
                let mut nonce = [0u8; 24];
                getrandom::getrandom(&mut nonce)
                    .map_err(|e| Error::Usage(format!("no randomness for a nonce: {e}")))?;
                let cipher = XChaCha20Poly1305::new(&derived.meta.into());
                out.extend_from_slice(&nonce);
                out.extend(
                    cipher
                        .encrypt(&nonce.into(), payload)
                        .map_err(|_| Error::Usage("XChaCha20-Poly1305 refused".into()))?,
                );
            }
        }
        let scheme = match class {
            Class::Data => Scheme::Age,
            Class::Metadata => Scheme::Metadata,
        };
        Ok((scheme, Some(derived.id)))
    }

    /// The body of the object `key` as a stream of its plain payload: data objects are
    /// decrypted as they are read (age authenticates each 64 KiB chunk and the end, so a
    /// reader sees an error, never unauthenticated bytes), with no object-sized buffer;
    /// others are opened whole by [`Keys::unseal`].
    pub fn unseal_reader<'a>(
        &'a self,
        key: &str,
        scheme: Scheme,
        id: KeyId,
        body: &'a [u8],
    ) -> Result<Box<dyn Read + Send + 'a>> {
        if scheme != Scheme::Age {
            return Ok(Box::new(std::io::Cursor::new(
                self.unseal(key, scheme, id, body)?,
            )));
        }
        let identity = self.identity(key, id)?;
        let corrupt = |e: &dyn std::fmt::Display| {
            Error::corrupt(key, format!("does not decrypt with key {id}: {e}"))
        };
        let dec = age::Decryptor::new_buffered(body).map_err(|e| corrupt(&e))?;
        let r = dec
            .decrypt(std::iter::once(identity as &dyn age::Identity))
            .map_err(|e| corrupt(&e))?;
        Ok(Box::new(r))
    }

    /// The identity that opens data sealed with key `id`.
    fn identity(&self, key: &str, id: KeyId) -> Result<&x25519::Identity> {
        self.0
            .as_ref()
            .and_then(|r| r.read.iter().find(|(_, d)| d.id == id))
            .map(|(i, _)| i)
            .ok_or_else(|| self.missing(key, id, "identity", "encryption_identity_file"))
    }

    /// Opens the body of the object `key`, sealed with `scheme` and key `id`. A missing key is
    /// a refusal (like a missing credential); a failed decryption with the right key is
    /// corruption or tampering.
    pub fn unseal(&self, key: &str, scheme: Scheme, id: KeyId, body: &[u8]) -> Result<Vec<u8>> {
        let corrupt = |e: &dyn std::fmt::Display| {
            Error::corrupt(key, format!("does not decrypt with key {id}: {e}"))
        };
        match scheme {
            Scheme::None => Ok(body.to_vec()),
            Scheme::Age => {
                let identity = self.identity(key, id)?;
                let dec = age::Decryptor::new_buffered(body).map_err(|e| corrupt(&e))?;
                let mut r = dec
                    .decrypt(std::iter::once(identity as &dyn age::Identity))
                    .map_err(|e| corrupt(&e))?;
                let mut out = Vec::with_capacity(body.len());
                r.read_to_end(&mut out).map_err(|e| corrupt(&e))?;
                Ok(out)
            }
            Scheme::Metadata => {
                let d = self
                    .0
                    .as_ref()
                    .and_then(|r| r.known.iter().find(|d| d.id == id))
                    .ok_or_else(|| {
                        self.missing(key, id, "recipient or identity", "encryption_recipients")
                    })?;
                if body.len() < 24 {
                    return Err(corrupt(&"shorter than its nonce"));
                }
                let (nonce, ct) = body.split_at(24);
                XChaCha20Poly1305::new(&d.meta.into())
                    .decrypt(nonce.into(), ct)
                    .map_err(|_| corrupt(&"authentication failed"))
            }
        }
    }

    fn missing(&self, key: &str, id: KeyId, what: &str, setting: &str) -> Error {
        let configured = match &self.0 {
            None => "no encryption keys are configured".to_string(),
            Some(r) => format!(
                "configured: {}",
                r.known
                    .iter()
                    .map(|d| d.id.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        Error::Denied(format!(
            "{key} is encrypted with key {id}; no {what} for it ({setting}; {configured})"
        ))
    }
}

/// What an object holds, which decides how it is sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Rows: WAL segments, backup chunks. Only the identity opens them.
    Data,
    /// Manifests, timeline histories: the recipient opens them too.
    Metadata,
}

/// How an object's payload is sealed (byte 19 of the envelope).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    None = 0,
    /// age-encryption.org/v1 to an X25519 recipient.
    Age = 1,
    /// 24-byte random nonce, then XChaCha20-Poly1305 under the recipient-derived metadata key.
    Metadata = 2,
}

impl Scheme {
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Scheme::None),
            1 => Some(Scheme::Age),
            2 => Some(Scheme::Metadata),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_with_identity() -> (Keys, String, tempfile::TempDir) {
        let d = tempfile::tempdir().unwrap();
        let (identity, recipient) = generate();
        let p = d.path().join("key.txt");
        std::fs::write(&p, identity).unwrap();
        let k = Keys::load(&KeySource {
            identity_file: Some(p),
            ..Default::default()
        })
        .unwrap();
        (k, recipient, d)
    }

    #[test]
    fn push_with_the_recipient_reads_with_the_identity() {
        let (reader, recipient, _d) = keys_with_identity();
        let writer = Keys::load(&KeySource {
            recipients: vec![recipient],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(writer.write_key(), reader.write_key());
        let (scheme, id, sealed) = writer.seal(Class::Data, b"secret rows").unwrap();
        assert_eq!(scheme, Scheme::Age);
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        let id = id.unwrap();
        assert_eq!(id, writer.write_key().unwrap());
        assert_eq!(
            reader.unseal("k", scheme, id, &sealed).unwrap(),
            b"secret rows"
        );
        // The push host can't read the rows it wrote, but can read metadata.
        assert_eq!(
            writer.unseal("k", scheme, id, &sealed).unwrap_err().code(),
            crate::error::EXIT_DENIED
        );
        let (mscheme, _, meta) = writer.seal(Class::Metadata, b"manifest").unwrap();
        assert!(!meta.windows(8).any(|w| w == b"manifest"));
        assert_eq!(writer.unseal("m", mscheme, id, &meta).unwrap(), b"manifest");
        assert_eq!(reader.unseal("m", mscheme, id, &meta).unwrap(), b"manifest");
        let mut badmeta = meta.clone();
        badmeta[30] ^= 1;
        assert_eq!(
            reader
                .unseal("m", mscheme, id, &badmeta)
                .unwrap_err()
                .code(),
            crate::error::EXIT_CORRUPT
        );
        // Same key, same digest on both sides; a different key, a different digest.
        assert_eq!(writer.digester().of(b"x"), reader.digester().of(b"x"));
        let (other, _, _d2) = keys_with_identity();
        assert_ne!(other.digester().of(b"x"), reader.digester().of(b"x"));
        assert_ne!(Digester::Sha256.of(b"x"), reader.digester().of(b"x"));
        let b3 = |k: &Keys| k.digester_with(DigestAlg::Blake3).of(b"x");
        assert_eq!(b3(&writer), b3(&reader));
        assert_ne!(b3(&other), b3(&reader));
        assert_ne!(Digester::Blake3.of(b"x"), b3(&reader));
        assert_eq!(
            reader
                .digester_for(writer.write_key(), DigestAlg::Blake3)
                .unwrap()
                .of(b"x"),
            b3(&writer)
        );
        // Tampering is corruption, not a wrong key.
        let mut bad = sealed.clone();
        let at = bad.len() - 3;
        bad[at] ^= 1;
        assert_eq!(
            reader.unseal("k", scheme, id, &bad).unwrap_err().code(),
            crate::error::EXIT_CORRUPT
        );
    }

    #[test]
    fn bad_key_material_is_named_not_echoed() {
        let e = Keys::load(&KeySource {
            recipients: vec!["age1notakey".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.code(), crate::error::EXIT_USAGE);
        assert!(!e.to_string().contains("age1notakey"), "{e}");
    }
}
