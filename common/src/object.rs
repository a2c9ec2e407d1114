//! The envelope of every stored object: a zstd skippable frame carrying the length and
//! sha256 of the plain content, followed by one ordinary zstd frame.
//!
//! Because the metadata lives in a skippable frame, a stored object is a valid `.zst` file:
//! `zstd -d < object > file` recovers the content without pitrkit, which matters on the day
//! the tool itself is what is broken. The layout is specified in docs/FORMAT.md.

use sha2::{Digest, Sha256};
use std::fmt;

use crate::error::{Error, Result};

/// Skippable-frame magic number (the zstd format reserves 0x184D2A50..=0x184D2A5F).
const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
/// Identifies a pitrkit envelope inside the skippable frame.
const ENVELOPE_MAGIC: &[u8; 8] = b"PITRKIT\0";
/// Bumped whenever the envelope layout changes.
const ENVELOPE_VERSION: u16 = 1;
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

/// The sha256 of an object's plain content.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Sum(pub [u8; 32]);

impl Sha256Sum {
    pub fn of(data: &[u8]) -> Self {
        Sha256Sum(Sha256::digest(data).into())
    }
}

impl fmt::Display for Sha256Sum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Sha256Sum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What the envelope records about the plain content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope {
    pub compression: Compression,
    pub plain_len: u64,
    pub sha256: Sha256Sum,
}

impl Envelope {
    fn encode(&self) -> [u8; ENVELOPE_LEN] {
        let mut b = [0u8; ENVELOPE_LEN];
        b[0..4].copy_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&(ENVELOPE_DATA_LEN as u32).to_le_bytes());
        b[8..16].copy_from_slice(ENVELOPE_MAGIC);
        b[16..18].copy_from_slice(&ENVELOPE_VERSION.to_le_bytes());
        b[18] = self.compression as u8;
        // b[19..24]: reserved (encryption, flags), zero in version 1.
        b[24..32].copy_from_slice(&self.plain_len.to_le_bytes());
        b[32..64].copy_from_slice(&self.sha256.0);
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
        if version != ENVELOPE_VERSION {
            return Err(bad(&format!(
                "envelope version {version} is not supported by this pitrkit"
            )));
        }
        let compression = match stored[18] {
            0 => Compression::None,
            1 => Compression::Zstd,
            c => return Err(bad(&format!("unknown compression {c}"))),
        };
        if stored[19..24].iter().any(|b| *b != 0) {
            return Err(bad(
                "envelope flags set that this pitrkit does not understand",
            ));
        }
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
            sha256: Sha256Sum(sha),
        })
    }
}

/// Compression settings for sealing objects.
#[derive(Debug, Clone, Copy)]
pub struct Compressor {
    /// zstd level; 0 stores the content uncompressed.
    pub level: i32,
    /// zstd worker threads; 0 compresses on the calling thread.
    pub workers: u32,
}

impl Compressor {
    /// Wraps `plain` into a stored object. The sha256 is computed on a second thread while
    /// zstd compresses, so hashing costs no wall time on a machine with a spare core.
    pub fn seal(&self, plain: &[u8]) -> Result<(Vec<u8>, Envelope)> {
        let (sha256, payload) = std::thread::scope(|s| {
            let hasher = s.spawn(|| Sha256Sum::of(plain));
            let payload = self.compress(plain);
            (hasher.join(), payload)
        });
        let sha256 = sha256.map_err(|_| Error::Usage("hashing thread panicked".into()))?;
        let (compression, payload) = payload?;
        let env = Envelope {
            compression,
            plain_len: plain.len() as u64,
            sha256,
        };
        let mut out = Vec::with_capacity(ENVELOPE_LEN + payload.len());
        out.extend_from_slice(&env.encode());
        out.extend_from_slice(&payload);
        Ok((out, env))
    }

    fn compress(&self, plain: &[u8]) -> Result<(Compression, Vec<u8>)> {
        if self.level == 0 {
            return Ok((Compression::None, plain.to_vec()));
        }
        let zerr = |e: std::io::Error| Error::Usage(format!("zstd compression failed: {e}"));
        let mut c = zstd::bulk::Compressor::new(self.level).map_err(zerr)?;
        use zstd::zstd_safe::CParameter;
        c.set_parameter(CParameter::ChecksumFlag(true))
            .map_err(zerr)?;
        if self.workers > 0 {
            c.set_parameter(CParameter::NbWorkers(self.workers))
                .map_err(zerr)?;
            // Small jobs so both cores get work on a 16 MiB segment (the default job size
            // at level 3 would give only two jobs, the second idle while the hash runs).
            c.set_parameter(CParameter::JobSize(2 << 20))
                .map_err(zerr)?;
        }
        let bound = zstd::zstd_safe::compress_bound(plain.len());
        let mut out = Vec::with_capacity(bound);
        c.compress_to_buffer(plain, &mut out).map_err(zerr)?;
        Ok((Compression::Zstd, out))
    }
}

/// Recovers and verifies the plain content of a stored object: the length and sha256 must
/// match the envelope before any byte is handed to the caller.
pub fn open(key: &str, stored: &[u8]) -> Result<(Vec<u8>, Envelope)> {
    let env = Envelope::decode(key, stored)?;
    let payload = &stored[ENVELOPE_LEN..];
    let plain = match env.compression {
        Compression::None => payload.to_vec(),
        Compression::Zstd => zstd::bulk::decompress(payload, env.plain_len as usize + 1)
            .map_err(|e| Error::corrupt(key, format!("zstd payload does not decompress: {e}")))?,
    };
    if plain.len() as u64 != env.plain_len {
        return Err(Error::corrupt(
            key,
            format!(
                "{} bytes after decompression, the envelope says {}",
                plain.len(),
                env.plain_len
            ),
        ));
    }
    let got = Sha256Sum::of(&plain);
    if got != env.sha256 {
        return Err(Error::corrupt(
            key,
            format!("sha256 {got} does not match the recorded {}", env.sha256),
        ));
    }
    Ok((plain, env))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_plain_zstd_compatibility() {
        let plain: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in [
            Compressor {
                level: 3,
                workers: 0,
            },
            Compressor {
                level: 1,
                workers: 2,
            },
            Compressor {
                level: 0,
                workers: 0,
            },
        ] {
            let (stored, env) = c.seal(&plain).unwrap();
            assert_eq!(env.plain_len, plain.len() as u64);
            assert_eq!(env.sha256, Sha256Sum::of(&plain));
            let (back, env2) = open("k", &stored).unwrap();
            assert_eq!(back, plain);
            assert_eq!(env, env2);
            if c.level > 0 {
                // A stock zstd decoder skips the envelope and yields the content.
                assert_eq!(zstd::stream::decode_all(&stored[..]).unwrap(), plain);
            }
        }
    }

    #[test]
    fn any_flipped_byte_is_detected() {
        let plain = vec![7u8; 100_000];
        let (stored, _) = Compressor {
            level: 3,
            workers: 0,
        }
        .seal(&plain)
        .unwrap();
        for at in [0, 20, 40, ENVELOPE_LEN + 3, stored.len() - 1] {
            let mut bad = stored.clone();
            bad[at] ^= 0x40;
            let e = open("wal/x", &bad).unwrap_err();
            assert_eq!(e.code(), crate::error::EXIT_CORRUPT, "byte {at}: {e}");
        }
        assert!(open("k", &stored[..stored.len() - 5]).is_err());
    }
}
