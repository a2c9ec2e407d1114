//! The envelope of every stored object: a zstd skippable frame carrying the length and
//! sha256 of the plain content, followed by one ordinary zstd frame.
//!
//! Because the metadata lives in a skippable frame, a stored object is a valid `.zst` file:
//! `zstd -d < object > file` recovers the content without pitrkit, which matters on the day
//! the tool itself is what is broken. The layout is specified in docs/FORMAT.md.

pub use sha2::Digest;
use sha2::Sha256;
use std::fmt;
use std::io::{Read, Write};

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

impl Sha256Sum {
    /// An incremental hasher, for content that arrives in pieces.
    pub fn hasher() -> Sha256 {
        Sha256::new()
    }

    pub fn finish(h: Sha256) -> Self {
        Sha256Sum(h.finalize().into())
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

/// Bytes read or decompressed per step when streaming: big enough that syscalls don't
/// matter, small enough to stay in cache and to never fault in a segment-sized buffer.
const STREAM_CHUNK: usize = 1 << 20;

impl Compressor {
    /// Seals `plain` whose sha256 the caller already computed (to name a chunk), on this
    /// thread: callers that seal many small objects parallelise across objects instead.
    pub fn seal_known(&self, plain: &[u8], sha256: Sha256Sum) -> Result<Vec<u8>> {
        let (compression, payload) = if self.level == 0 {
            (Compression::None, std::borrow::Cow::Borrowed(plain))
        } else {
            let mut c = zstd::bulk::Compressor::new(self.level)
                .map_err(|e| Error::Usage(format!("zstd: {e}")))?;
            c.include_checksum(true)
                .map_err(|e| Error::Usage(format!("zstd: {e}")))?;
            let payload = c
                .compress(plain)
                .map_err(|e| Error::Usage(format!("zstd: {e}")))?;
            (Compression::Zstd, std::borrow::Cow::Owned(payload))
        };
        let env = Envelope {
            compression,
            plain_len: plain.len() as u64,
            sha256,
        };
        let mut out = Vec::with_capacity(ENVELOPE_LEN + payload.len());
        out.extend_from_slice(&env.encode());
        out.extend_from_slice(&payload);
        Ok(out)
    }

    /// Seals everything `input` yields, streaming: this thread reads and hashes while zstd's
    /// worker threads compress, so reading, hashing and compressing overlap and no
    /// segment-sized input buffer is ever allocated. `size_hint` only sizes the output.
    pub fn seal_reader(
        &self,
        input: &mut dyn Read,
        size_hint: u64,
    ) -> std::io::Result<(Vec<u8>, Envelope)> {
        let mut out = Vec::with_capacity(ENVELOPE_LEN + (size_hint as usize / 6).max(4096));
        out.resize(ENVELOPE_LEN, 0);
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; STREAM_CHUNK];
        let mut total = 0u64;
        let mut pump = |sink: &mut dyn Write| -> std::io::Result<()> {
            loop {
                let n = match input.read(&mut buf) {
                    Ok(0) => return Ok(()),
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                hasher.update(&buf[..n]);
                sink.write_all(&buf[..n])?;
                total += n as u64;
            }
        };
        let compression = if self.level == 0 {
            pump(&mut out)?;
            Compression::None
        } else {
            let mut enc = zstd::stream::write::Encoder::new(out, self.level)?;
            enc.include_checksum(true)?;
            if self.workers > 0 {
                enc.multithread(self.workers)?;
                // Small jobs so both cores get work on a 16 MiB segment.
                enc.set_parameter(zstd::zstd_safe::CParameter::JobSize(2 << 20))?;
            }
            pump(&mut enc)?;
            out = enc.finish()?;
            Compression::Zstd
        };
        let env = Envelope {
            compression,
            plain_len: total,
            sha256: Sha256Sum(hasher.finalize().into()),
        };
        out[..ENVELOPE_LEN].copy_from_slice(&env.encode());
        Ok((out, env))
    }
}

/// Recovers and verifies the plain content of a stored object: the length and sha256 must
/// match the envelope before any byte is handed to the caller.
pub fn open(key: &str, stored: &[u8]) -> Result<(Vec<u8>, Envelope)> {
    let (plain, env) = decompress(key, stored)?;
    verify(key, &env, Sha256Sum::of(&plain))?;
    Ok((plain, env))
}

/// Streams the verified content of a stored object into `sink`, which must be undoable
/// (a temporary file): the caller may only publish what it wrote once this returns `Ok`.
///
/// Decompression runs on this thread in 1 MiB steps; hashing and writing run on a second
/// thread, so a restore costs about the larger of the two rather than their sum, and never
/// allocates a segment-sized buffer.
pub fn open_to(key: &str, stored: &[u8], sink: &mut (dyn Write + Send)) -> Result<Envelope> {
    let env = Envelope::decode(key, stored)?;
    let payload = &stored[ENVELOPE_LEN..];
    let corrupt =
        |e: std::io::Error| Error::corrupt(key, format!("zstd payload does not decompress: {e}"));
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(2);
    let (empty_tx, empty_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(3);
    for _ in 0..3 {
        let _ = empty_tx.send(vec![0u8; STREAM_CHUNK]);
    }
    let (written, produced) = std::thread::scope(|s| {
        let writer = s.spawn(move || -> std::io::Result<(Sha256Sum, u64)> {
            let mut hasher = Sha256::new();
            let mut total = 0u64;
            for (buf, n) in full_rx {
                hasher.update(&buf[..n]);
                sink.write_all(&buf[..n])?;
                total += n as u64;
                let _ = empty_tx.send(buf);
            }
            Ok((Sha256Sum(hasher.finalize().into()), total))
        });
        let produced = (|| -> Result<()> {
            let mut reader: Box<dyn Read> = match env.compression {
                Compression::None => Box::new(payload),
                Compression::Zstd => {
                    Box::new(zstd::stream::read::Decoder::with_buffer(payload).map_err(corrupt)?)
                }
            };
            let mut limit = env.plain_len + 1;
            loop {
                // A writer that failed stops taking buffers: stop producing too.
                let Ok(mut buf) = empty_rx.recv() else {
                    return Ok(());
                };
                let mut n = 0;
                while n < buf.len() {
                    match reader.read(&mut buf[n..]).map_err(corrupt)? {
                        0 => break,
                        k => n += k,
                    }
                }
                limit = limit.saturating_sub(n as u64);
                if n == 0 || full_tx.send((buf, n)).is_err() || limit == 0 {
                    return Ok(());
                }
            }
        })();
        drop(full_tx);
        (writer.join(), produced)
    });
    produced?;
    let (sum, total) = written
        .map_err(|_| Error::corrupt(key, "writer thread panicked"))?
        .map_err(|e| Error::LocalIo {
            path: "destination".into(),
            source: e,
        })?;
    if total != env.plain_len {
        return Err(Error::corrupt(
            key,
            format!(
                "{total} bytes after decompression, the envelope says {}",
                env.plain_len
            ),
        ));
    }
    verify(key, &env, sum)?;
    Ok(env)
}

/// The envelope and the first `len` bytes of the content (fewer if it is shorter),
/// unverified: for checks that must not wait for the whole object.
pub fn read_head(key: &str, stored: &[u8], len: usize) -> Result<(Envelope, Vec<u8>)> {
    let env = Envelope::decode(key, stored)?;
    let payload = &stored[ENVELOPE_LEN..];
    let mut head = Vec::with_capacity(len);
    let read = match env.compression {
        Compression::None => payload.take(len as u64).read_to_end(&mut head),
        Compression::Zstd => zstd::stream::read::Decoder::with_buffer(payload)
            .and_then(|d| d.take(len as u64).read_to_end(&mut head)),
    };
    read.map_err(|e| Error::corrupt(key, format!("zstd payload does not decompress: {e}")))?;
    Ok((env, head))
}

fn verify(key: &str, env: &Envelope, got: Sha256Sum) -> Result<()> {
    if got != env.sha256 {
        return Err(Error::corrupt(
            key,
            format!("sha256 {got} does not match the recorded {}", env.sha256),
        ));
    }
    Ok(())
}

fn decompress(key: &str, stored: &[u8]) -> Result<(Vec<u8>, Envelope)> {
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
            let (stored, env) = c.seal_reader(&mut &plain[..], 0).unwrap();
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
    fn streaming_open_agrees_with_bulk_open() {
        let plain: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i % 253) as u8 ^ (i >> 12) as u8)
            .collect();
        for c in [
            Compressor {
                level: 3,
                workers: 2,
            },
            Compressor {
                level: 0,
                workers: 0,
            },
        ] {
            let (stored, env) = c.seal_reader(&mut &plain[..], plain.len() as u64).unwrap();
            assert_eq!(env.sha256, Sha256Sum::of(&plain));
            assert_eq!(open("k", &stored).unwrap().0, plain);
            let mut out = Vec::new();
            assert_eq!(open_to("k", &stored, &mut out).unwrap(), env);
            assert_eq!(out, plain);
            let mut bad = stored.clone();
            let at = bad.len() - 100;
            bad[at] ^= 4;
            let mut out = Vec::new();
            assert_eq!(
                open_to("k", &bad, &mut out).unwrap_err().code(),
                crate::error::EXIT_CORRUPT
            );
        }
    }

    #[test]
    fn any_flipped_byte_is_detected() {
        let plain = vec![7u8; 100_000];
        let (stored, _) = Compressor {
            level: 3,
            workers: 0,
        }
        .seal_reader(&mut &plain[..], 0)
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
