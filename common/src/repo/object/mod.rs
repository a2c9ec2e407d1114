//! The envelope of every stored object: a zstd skippable frame carrying the length and
//! digest of the plain content (and, when encrypted, how and with which key), followed by
//! the payload: one or more ordinary zstd frames, sealed when the repository is encrypted.
//!
//! Because the metadata lives in a skippable frame, an object of a plain repository is a
//! valid `.zst` file: `zstd -d < object > file` recovers the content without pitrkit, which
//! matters on the day the tool itself is what is broken (an encrypted one needs
//! `age -d` in between). The layout is specified in docs/FORMAT.md.

use sha2::{Digest, Sha256};
use std::fmt;

use crate::error::{Error, Result};
use crate::repo::crypto::{DigestAlg, KeyId, Scheme};

/// Skippable-frame magic number (the zstd format reserves 0x184D2A50..=0x184D2A5F).
const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
/// Identifies a pitrkit envelope inside the skippable frame.
const ENVELOPE_MAGIC: &[u8; 8] = b"PITRKIT\0";
/// Bumped whenever the envelope's layout or meaning changes. Version 2 has version 1's
/// layout and says the digest is BLAKE3 (keyed BLAKE3 when sealed) instead of sha256
/// (HMAC-SHA256): the version is how a reader knows which function to check with.
const fn envelope_version(alg: DigestAlg) -> u16 {
    match alg {
        DigestAlg::Sha256 => 1,
        DigestAlg::Blake3 => 2,
    }
}
/// Bytes of envelope data inside the skippable frame.
const ENVELOPE_DATA_LEN: usize = 56;
/// Total bytes before the payload: 8 bytes of frame header plus the envelope data.
pub const ENVELOPE_LEN: usize = 8 + ENVELOPE_DATA_LEN;
/// Refuse to allocate more than this for one object's plain content; a bigger length field
/// can only come from a corrupt or hostile object.
const MAX_PLAIN_LEN: u64 = 4 << 30;

/// How the payload after the envelope is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None = 0,
    Zstd = 1,
}

/// The digest an envelope records of its plain content: sha256 or BLAKE3 in a plain
/// repository, HMAC-SHA256 or keyed BLAKE3 in an encrypted one (`crypto::Digester` computes
/// each; [`ContentDigest::of`] is the plain sha256). Chunks are named by the sha256 one.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentDigest(pub [u8; 32]);

impl ContentDigest {
    pub fn of(data: &[u8]) -> Self {
        ContentDigest(Sha256::digest(data).into())
    }
}

impl fmt::Display for ContentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for ContentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What the envelope records about the plain content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope {
    pub compression: Compression,
    pub plain_len: u64,
    /// The plain content's digest with `digest_alg`, keyed with the sealing key's digest key
    /// for an encrypted object (see `crypto`).
    pub digest: ContentDigest,
    /// Which function `digest` is (the envelope's version says).
    pub digest_alg: DigestAlg,
    pub scheme: Scheme,
    /// The key that sealed the payload (`None` when not encrypted).
    pub key: Option<KeyId>,
}

impl Envelope {
    /// The name of the function `digest` is (keyed or not), for messages and reports.
    pub fn digest_name(&self) -> &'static str {
        self.digest_alg.name(self.key.is_some())
    }

    fn encode(&self) -> [u8; ENVELOPE_LEN] {
        let mut b = [0u8; ENVELOPE_LEN];
        b[0..4].copy_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&(ENVELOPE_DATA_LEN as u32).to_le_bytes());
        b[8..16].copy_from_slice(ENVELOPE_MAGIC);
        b[16..18].copy_from_slice(&envelope_version(self.digest_alg).to_le_bytes());
        b[18] = self.compression as u8;
        b[19] = self.scheme as u8;
        if let Some(k) = self.key {
            b[20..24].copy_from_slice(&k.0);
        }
        b[24..32].copy_from_slice(&self.plain_len.to_le_bytes());
        b[32..64].copy_from_slice(&self.digest.0);
        b
    }

    /// Parses the envelope at the start of a stored object. `key` names the object in errors.
    pub fn decode(key: &str, stored: &[u8]) -> Result<Self> {
        let bad = |why: &str| Error::corrupt(key, why);
        if stored.len() < ENVELOPE_LEN {
            return Err(bad("shorter than the object envelope"));
        }
        let u32_at = |at: usize| {
            u32::from_le_bytes([stored[at], stored[at + 1], stored[at + 2], stored[at + 3]])
        };
        if u32_at(0) != SKIPPABLE_MAGIC
            || u32_at(4) as usize != ENVELOPE_DATA_LEN
            || &stored[8..16] != ENVELOPE_MAGIC
        {
            return Err(bad("not a pitrkit object (envelope magic missing)"));
        }
        let version = u16::from_le_bytes([stored[16], stored[17]]);
        let digest_alg = match version {
            v if v == envelope_version(DigestAlg::Sha256) => DigestAlg::Sha256,
            v if v == envelope_version(DigestAlg::Blake3) => DigestAlg::Blake3,
            _ => {
                return Err(bad(&format!(
                    "envelope version {version} is not supported by this pitrkit"
                )));
            }
        };
        let compression = match stored[18] {
            0 => Compression::None,
            1 => Compression::Zstd,
            c => return Err(bad(&format!("unknown compression {c}"))),
        };
        let scheme = Scheme::from_byte(stored[19])
            .ok_or_else(|| bad(&format!("unknown encryption scheme {}", stored[19])))?;
        let key = match scheme {
            Scheme::None if stored[20..24].iter().any(|b| *b != 0) => {
                return Err(bad(
                    "envelope flags set that this pitrkit does not understand",
                ));
            }
            Scheme::None => None,
            _ => Some(KeyId([stored[20], stored[21], stored[22], stored[23]])),
        };
        let mut len = [0u8; 8];
        len.copy_from_slice(&stored[24..32]);
        let plain_len = u64::from_le_bytes(len);
        if plain_len > MAX_PLAIN_LEN {
            return Err(bad(&format!("envelope claims {plain_len} bytes")));
        }
        let mut sha = [0u8; 32];
        sha.copy_from_slice(&stored[32..64]);
        Ok(Envelope {
            compression,
            plain_len,
            digest: ContentDigest(sha),
            digest_alg,
            scheme,
            key,
        })
    }
}

/// The most plain bytes an object of each kind may claim, checked before anything is
/// decompressed into memory: a zstd frame of 100 KB can inflate to gigabytes, and restores
/// open many objects at once.
pub mod limit {
    /// A backup chunk (1 MiB today), or a page delta of one.
    pub const CHUNK: u64 = 64 << 20;
    /// A WAL segment: PostgreSQL's largest segment size.
    pub const WAL: u64 = 1 << 30;
    /// A backup manifest (about 100 bytes per file and 70 per chunk).
    pub const MANIFEST: u64 = 1 << 30;
    /// A timeline history, a `.backup` file, a keep mark or a lock.
    pub const SMALL: u64 = 16 << 20;
}
/// Bytes read or decompressed per step when streaming: big enough that syscalls don't
/// matter (64 steps per segment), small enough to stay in the CPU's cache and to keep a
/// prefetcher with 8 downloads under 64 MiB.
const STREAM_CHUNK: usize = 256 << 10;

mod open;
mod seal;

pub use open::{open, open_to, read_head};
pub use seal::Sealer;

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::seal::FRAME_PIECE;
    use super::*;
    use crate::repo::crypto::{Class, Digester, Keys};

    /// The digest a streamed seal records in a plain repository.
    fn b3(plain: &[u8]) -> ContentDigest {
        ContentDigest(Digester::Blake3.of(plain))
    }

    #[test]
    fn round_trip_and_plain_zstd_compatibility() {
        let plain: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in [
            Sealer::on_this_thread(3),
            Sealer {
                level: 1,
                workers: 2,
            },
            Sealer::on_this_thread(0),
        ] {
            let (stored, env) = c
                .seal_reader(&mut &plain[..], 0, &Keys::none(), Class::Data)
                .unwrap();
            assert_eq!(env.plain_len, plain.len() as u64);
            assert_eq!(env.digest, b3(&plain));
            assert_eq!(env.digest_alg, DigestAlg::Blake3);
            assert_eq!(stored[16..18], [2, 0], "envelope version 2");
            let (back, env2) = open("k", &stored, &Keys::none(), limit::WAL).unwrap();
            assert_eq!(back, plain);
            assert_eq!(env, env2);
            if c.level > 0 {
                // A stock zstd decoder skips the envelope and yields the content.
                assert_eq!(zstd::stream::decode_all(&stored[..]).unwrap(), plain);
            }
        }
    }

    /// A reader that hands out at most 100,003 bytes per call, as pipes do.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(100_003);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn long_inputs_are_one_frame_per_piece_in_order() {
        let big: Vec<u8> = (0..(2 * FRAME_PIECE + 5) as u32)
            .map(|i| (i % 251) as u8 ^ (i >> 13) as u8)
            .collect();
        for len in [0, 1, FRAME_PIECE, FRAME_PIECE + 1, 2 * FRAME_PIECE + 5] {
            let plain = &big[..len];
            for workers in [0, 2, 3] {
                let c = Sealer { level: 3, workers };
                let (stored, env) = c
                    .seal_reader(&mut Trickle(plain), 0, &Keys::none(), Class::Data)
                    .unwrap();
                assert_eq!(env.plain_len, len as u64);
                assert_eq!(env.digest, b3(plain));
                assert_eq!(
                    open("k", &stored, &Keys::none(), limit::WAL).unwrap().0,
                    plain
                );
                assert_eq!(zstd::stream::decode_all(&stored[..]).unwrap(), plain);
                // Count the frames after the envelope: one per started piece, at least one.
                let mut rest = &stored[ENVELOPE_LEN..];
                let mut frames = 0;
                while !rest.is_empty() {
                    let n = zstd::zstd_safe::find_frame_compressed_size(rest).unwrap();
                    rest = &rest[n..];
                    frames += 1;
                }
                assert_eq!(frames, len.div_ceil(FRAME_PIECE).max(1), "len {len}");
            }
        }
    }

    /// Also across frames: 9 MB is three frames of [`FRAME_PIECE`].
    #[test]
    fn streaming_open_agrees_with_bulk_open() {
        let plain: Vec<u8> = (0..9_000_000u32)
            .map(|i| (i % 253) as u8 ^ (i >> 12) as u8)
            .collect();
        for c in [
            Sealer {
                level: 3,
                workers: 2,
            },
            Sealer::on_this_thread(0),
        ] {
            let (stored, env) = c
                .seal_reader(
                    &mut &plain[..],
                    plain.len() as u64,
                    &Keys::none(),
                    Class::Data,
                )
                .unwrap();
            assert_eq!(env.digest, b3(&plain));
            assert_eq!(
                open("k", &stored, &Keys::none(), limit::WAL).unwrap().0,
                plain
            );
            let mut out = Vec::new();
            assert_eq!(open_to("k", &stored, &mut out, &Keys::none()).unwrap(), env);
            assert_eq!(out, plain);
            let mut bad = stored.clone();
            let at = bad.len() - 100;
            bad[at] ^= 4;
            let mut out = Vec::new();
            assert_eq!(
                open_to("k", &bad, &mut out, &Keys::none())
                    .unwrap_err()
                    .code(),
                crate::error::EXIT_CORRUPT
            );
        }
    }

    #[test]
    fn encrypted_objects_round_trip_and_refuse_tampering() {
        let d = tempfile::tempdir().unwrap();
        let (identity, recipient) = crate::repo::crypto::generate();
        std::fs::write(d.path().join("id"), identity).unwrap();
        let reader = Keys::load(&crate::repo::crypto::KeySource {
            identity_file: Some(d.path().join("id")),
            ..Default::default()
        })
        .unwrap();
        let writer = Keys::load(&crate::repo::crypto::KeySource {
            recipients: vec![recipient],
            ..Default::default()
        })
        .unwrap();
        let plain: Vec<u8> = b"customer 4711 Jane Doe ".repeat(5000);
        let c = Sealer::on_this_thread(3);
        for class in [Class::Data, Class::Metadata] {
            let (stored, env) = c.seal_reader(&mut &plain[..], 0, &writer, class).unwrap();
            assert!(env.key.is_some());
            assert!(!stored.windows(8).any(|w| w == b"customer"));
            assert_eq!(
                env.digest.0,
                reader.digester_with(DigestAlg::Blake3).of(&plain)
            );
            let (back, _) = open("k", &stored, &reader, limit::WAL).unwrap();
            assert_eq!(back, plain);
            let mut out = Vec::new();
            open_to("k", &stored, &mut out, &reader).unwrap();
            assert_eq!(out, plain);
            // Without keys: refused as a missing credential, not read as garbage.
            assert_eq!(
                open("k", &stored, &Keys::none(), limit::WAL)
                    .unwrap_err()
                    .code(),
                crate::error::EXIT_DENIED
            );
            for at in [40, ENVELOPE_LEN + 2, stored.len() - 2] {
                let mut bad = stored.clone();
                bad[at] ^= 0x10;
                assert_eq!(
                    open("k", &bad, &reader, limit::WAL).unwrap_err().code(),
                    crate::error::EXIT_CORRUPT,
                    "byte {at}"
                );
            }
        }
        // The push host reads metadata, not data.
        let (meta, _) = c
            .seal_reader(&mut &plain[..], 0, &writer, Class::Metadata)
            .unwrap();
        assert_eq!(open("k", &meta, &writer, limit::WAL).unwrap().0, plain);
        let (data, _) = c
            .seal_reader(&mut &plain[..], 0, &writer, Class::Data)
            .unwrap();
        assert_eq!(
            open("k", &data, &writer, limit::WAL).unwrap_err().code(),
            crate::error::EXIT_DENIED
        );
        // A plain object in an encrypted repository is refused.
        let (plain_obj, _) = c
            .seal_reader(&mut &plain[..], 0, &Keys::none(), Class::Data)
            .unwrap();
        assert_eq!(
            open("k", &plain_obj, &reader, limit::WAL)
                .unwrap_err()
                .code(),
            crate::error::EXIT_CORRUPT
        );
    }

    /// Objects written before envelope version 2 (sha256) still open, and the version, not
    /// the writer's word elsewhere, says which function checks the content.
    #[test]
    fn the_envelope_version_chooses_the_digest() {
        let plain: Vec<u8> = b"segment ".repeat(40_000);
        let v1 = Sealer::on_this_thread(3)
            .seal_known(
                &plain,
                ContentDigest::of(&plain),
                &Keys::none(),
                Class::Data,
            )
            .unwrap();
        assert_eq!(v1[16..18], [1, 0]);
        let (back, env) = open("k", &v1, &Keys::none(), limit::WAL).unwrap();
        assert_eq!((back, env.digest_alg), (plain.clone(), DigestAlg::Sha256));
        let mut out = Vec::new();
        open_to("k", &v1, &mut out, &Keys::none()).unwrap();
        assert_eq!(out, plain);
        // The same sha256 read as BLAKE3 does not match: refused, naming the function.
        let mut relabelled = v1.clone();
        relabelled[16] = 2;
        let e = open("k", &relabelled, &Keys::none(), limit::WAL).unwrap_err();
        assert_eq!(e.code(), crate::error::EXIT_CORRUPT);
        assert!(e.to_string().contains("blake3"), "{e}");
        let mut out = Vec::new();
        let e = open_to("k", &relabelled, &mut out, &Keys::none()).unwrap_err();
        assert_eq!(e.code(), crate::error::EXIT_CORRUPT);
        relabelled[16] = 3;
        let e = open("k", &relabelled, &Keys::none(), limit::WAL).unwrap_err();
        assert!(e.to_string().contains("envelope version 3"), "{e}");
    }

    #[test]
    fn any_flipped_byte_is_detected() {
        let plain = vec![7u8; 100_000];
        let (stored, _) = Sealer::on_this_thread(3)
            .seal_reader(&mut &plain[..], 0, &Keys::none(), Class::Data)
            .unwrap();
        for at in [0, 20, 40, ENVELOPE_LEN + 3, stored.len() - 1] {
            let mut bad = stored.clone();
            bad[at] ^= 0x40;
            let e = open("wal/x", &bad, &Keys::none(), limit::WAL).unwrap_err();
            assert_eq!(e.code(), crate::error::EXIT_CORRUPT, "byte {at}: {e}");
        }
        assert!(open("k", &stored[..stored.len() - 5], &Keys::none(), limit::WAL).is_err());
    }

    #[test]
    fn a_bomb_is_refused_by_its_kind_before_it_inflates() {
        // 128 MiB of zeros seal into a few KB; as a chunk it claims more than a chunk holds.
        let zeros = vec![0u8; 128 << 20];
        let (stored, _) = Sealer::on_this_thread(1)
            .seal_reader(&mut &zeros[..], 0, &Keys::none(), Class::Data)
            .unwrap();
        assert!(stored.len() < 1 << 20, "{}", stored.len());
        let e = open("chunks/ab/x.zst", &stored, &Keys::none(), limit::CHUNK).unwrap_err();
        assert_eq!(e.code(), crate::error::EXIT_CORRUPT);
        assert!(
            e.to_string().contains("more than an object of its kind"),
            "{e}"
        );
        assert_eq!(
            open("wal/x", &stored, &Keys::none(), limit::WAL)
                .unwrap()
                .0
                .len(),
            128 << 20
        );
    }
}
