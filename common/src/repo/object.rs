//! The envelope of every stored object: a zstd skippable frame carrying the length and
//! digest of the plain content (and, when encrypted, how and with which key), followed by
//! the payload: one or more ordinary zstd frames, sealed when the repository is encrypted.
//!
//! Because the metadata lives in a skippable frame, an object of a plain repository is a
//! valid `.zst` file: `zstd -d < object > file` recovers the content without pitrkit, which
//! matters on the day the tool itself is what is broken (an encrypted one needs
//! `age -d` in between). The layout is specified in docs/FORMAT.md.

pub use sha2::Digest;
use sha2::Sha256;
use std::fmt;
use std::io::{Read, Write};

use crate::error::{Error, Result};
use crate::io::buffer::{PageBuf, read_full};
use crate::repo::crypto::{Class, Digester, KeyId, Keys, Scheme};

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
    /// sha256 of the plain content; for an encrypted object, its HMAC-SHA256 under the
    /// sealing key's digest key (see `crypto`).
    pub digest: Sha256Sum,
    pub scheme: Scheme,
    /// The key that sealed the payload (`None` when not encrypted).
    pub key: Option<KeyId>,
}

impl Envelope {
    fn encode(&self) -> [u8; ENVELOPE_LEN] {
        let mut b = [0u8; ENVELOPE_LEN];
        b[0..4].copy_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&(ENVELOPE_DATA_LEN as u32).to_le_bytes());
        b[8..16].copy_from_slice(ENVELOPE_MAGIC);
        b[16..18].copy_from_slice(&ENVELOPE_VERSION.to_le_bytes());
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
            digest: Sha256Sum(sha),
            scheme,
            key,
        })
    }
}

/// Compression settings for sealing objects.
#[derive(Debug, Clone, Copy)]
pub struct Compressor {
    /// zstd level; 0 stores the content uncompressed.
    pub level: i32,
    /// Pieces of a streamed seal compressed at once, each on its own thread; 0 or 1
    /// compresses on the calling thread.
    pub workers: u32,
}

/// Bytes read or decompressed per step when streaming: big enough that syscalls don't
/// matter (64 steps per segment), small enough to stay in the CPU's cache and to keep a
/// prefetcher with 8 downloads under 64 MiB.
const STREAM_CHUNK: usize = 256 << 10;

/// Plain bytes per zstd frame when sealing a stream: a buffer this size per lane is all the
/// input a seal holds (so `wal-push --jobs 8` stays well under 64 MiB), and on WAL it costs
/// 0.9% in size against one frame per 16 MiB segment (2 MiB pieces cost 2%).
const FRAME_PIECE: usize = 4 << 20;

/// A zstd context for [`compress_frame`], reused for every piece of one seal.
fn frame_compressor(level: i32) -> std::io::Result<zstd::bulk::Compressor<'static>> {
    let mut z = zstd::bulk::Compressor::new(level)?;
    z.include_checksum(true)?;
    Ok(z)
}

thread_local! {
    /// This thread's zstd context and its level: a backup seals thousands of chunks per
    /// worker, and a fresh context allocates and clears its match tables every time.
    static FRAME_COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` with this thread's zstd context for `level` (made on first use).
fn with_frame_compressor<R>(
    level: i32,
    f: impl FnOnce(&mut zstd::bulk::Compressor<'static>) -> std::io::Result<R>,
) -> std::io::Result<R> {
    FRAME_COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((level, frame_compressor(level)?));
        }
        match slot.as_mut() {
            Some((_, z)) => f(z),
            None => Err(std::io::Error::other("no zstd context")),
        }
    })
}

/// Appends `plain` to `out` as one zstd frame (with its content checksum).
fn compress_frame(
    z: &mut zstd::bulk::Compressor<'static>,
    plain: &[u8],
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    out.reserve(zstd::zstd_safe::compress_bound(plain.len()));
    let end = out.len() as u64;
    let mut at_end = std::io::Cursor::new(out);
    at_end.set_position(end);
    z.compress_to_buffer(plain, &mut at_end)?;
    Ok(())
}

impl Compressor {
    /// Seals `plain` whose digest (`keys.digester()`) the caller already computed (to name
    /// a chunk), on this thread: callers that seal many small objects parallelise across
    /// objects instead.
    pub fn seal_known(
        &self,
        plain: &[u8],
        digest: Sha256Sum,
        keys: &Keys,
        class: Class,
    ) -> Result<Vec<u8>> {
        let (compression, payload) = if self.level == 0 {
            (Compression::None, std::borrow::Cow::Borrowed(plain))
        } else {
            let mut payload = Vec::new();
            with_frame_compressor(self.level, |z| compress_frame(z, plain, &mut payload))
                .map_err(|e| Error::internal(format!("zstd: {e}")))?;
            (Compression::Zstd, std::borrow::Cow::Owned(payload))
        };
        let (scheme, key, payload) = match keys.is_enabled() {
            false => (Scheme::None, None, payload),
            true => {
                let (scheme, key, sealed) = keys.seal(class, &payload)?;
                (scheme, key, std::borrow::Cow::Owned(sealed))
            }
        };
        let env = Envelope {
            compression,
            plain_len: plain.len() as u64,
            digest,
            scheme,
            key,
        };
        let mut out = Vec::with_capacity(ENVELOPE_LEN + payload.len());
        out.extend_from_slice(&env.encode());
        out.extend_from_slice(&payload);
        Ok(out)
    }

    /// Seals everything `input` yields, [`FRAME_PIECE`] bytes at a time, each piece its own
    /// zstd frame compressed from one contiguous buffer, `workers` pieces at once. zstd's
    /// streaming compressor keeps its window in a ring buffer, and matching across the wrap
    /// costs ~25% more CPU on WAL than compressing a buffer in one piece (perf: most of
    /// wal-push's time was in the ring-buffer variant of the match finder). Independent
    /// frames also let the pieces of one segment compress on several cores. `size_hint`
    /// only sizes the output.
    pub fn seal_reader(
        &self,
        input: &mut dyn Read,
        size_hint: u64,
        keys: &Keys,
        class: Class,
    ) -> std::io::Result<(Vec<u8>, Envelope)> {
        let mut out = Vec::with_capacity(ENVELOPE_LEN + (size_hint as usize / 6).max(4096));
        out.resize(ENVELOPE_LEN, 0);
        let mut hasher = keys.digester().start();
        let mut total = 0u64;
        let compression = if self.level == 0 {
            let mut buf = PageBuf::new(STREAM_CHUNK);
            loop {
                let n = read_full(input, &mut buf)?;
                hasher.update(&buf[..n]);
                out.extend_from_slice(&buf[..n]);
                total += n as u64;
                if n < buf.len() {
                    break;
                }
            }
            Compression::None
        } else {
            // No more lanes than the input has pieces, when its size is known.
            let pieces = match size_hint {
                0 => usize::MAX,
                n => (n as usize).div_ceil(FRAME_PIECE),
            };
            let lanes = (self.workers as usize).clamp(1, pieces.max(1));
            let mut bufs: Vec<PageBuf> = Vec::with_capacity(lanes);
            let mut zs = Vec::with_capacity(lanes);
            let mut lens = Vec::with_capacity(lanes);
            loop {
                // Read (and hash) up to one piece per lane, then compress them all.
                lens.clear();
                let mut eof = false;
                while lens.len() < lanes && !eof {
                    if bufs.len() == lens.len() {
                        bufs.push(PageBuf::new(FRAME_PIECE));
                        zs.push(frame_compressor(self.level)?);
                    }
                    let buf = &mut bufs[lens.len()];
                    let n = read_full(input, buf)?;
                    hasher.update(&buf[..n]);
                    total += n as u64;
                    eof = n < buf.len();
                    // An empty input still gets its (empty) frame.
                    if n > 0 || total == 0 {
                        lens.push(n);
                    }
                }
                if let [n] = lens[..] {
                    compress_frame(&mut zs[0], &bufs[0][..n], &mut out)?;
                } else {
                    let frames = std::thread::scope(|s| {
                        let handles: Vec<_> = (bufs.iter().zip(zs.iter_mut()))
                            .zip(&lens)
                            .map(|((buf, z), &n)| {
                                s.spawn(move || {
                                    let mut frame = Vec::new();
                                    compress_frame(z, &buf[..n], &mut frame).map(|()| frame)
                                })
                            })
                            .collect();
                        handles
                            .into_iter()
                            .map(|h| {
                                h.join().unwrap_or_else(|_| {
                                    Err(std::io::Error::other("a compression thread panicked"))
                                })
                            })
                            .collect::<std::io::Result<Vec<_>>>()
                    })?;
                    frames.iter().for_each(|f| out.extend_from_slice(f));
                }
                if eof {
                    break;
                }
            }
            Compression::Zstd
        };
        let (scheme, key) = if keys.is_enabled() {
            let (scheme, key, sealed) = keys
                .seal(class, &out[ENVELOPE_LEN..])
                .map_err(std::io::Error::other)?;
            out.truncate(ENVELOPE_LEN);
            out.extend_from_slice(&sealed);
            (scheme, key)
        } else {
            (Scheme::None, None)
        };
        let env = Envelope {
            compression,
            plain_len: total,
            digest: Sha256Sum(hasher.finish()),
            scheme,
            key,
        };
        out[..ENVELOPE_LEN].copy_from_slice(&env.encode());
        Ok((out, env))
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

/// Recovers and verifies the plain content of a stored object: the length and sha256 must
/// match the envelope before any byte is handed to the caller. An envelope that claims more
/// than `max` bytes (see [`limit`]) is refused unread.
pub fn open(key: &str, stored: &[u8], keys: &Keys, max: u64) -> Result<(Vec<u8>, Envelope)> {
    decompress(key, stored, keys, max)
}

/// The payload after the envelope, unsealed. In an encrypted repository (the tool holds
/// keys) a payload that is not sealed is refused: anyone with write access to the store
/// could have planted it.
fn payload<'a>(
    key: &str,
    stored: &'a [u8],
    env: &Envelope,
    keys: &Keys,
) -> Result<std::borrow::Cow<'a, [u8]>> {
    let body = &stored[ENVELOPE_LEN..];
    match env.key {
        None if keys.is_enabled() => Err(Error::corrupt(
            key,
            "is not encrypted, in an encrypted repository: refusing it",
        )),
        None => Ok(std::borrow::Cow::Borrowed(body)),
        Some(id) => Ok(std::borrow::Cow::Owned(
            keys.unseal(key, env.scheme, id, body)?,
        )),
    }
}

/// How the object's digest was computed.
fn digester(key: &str, env: &Envelope, keys: &Keys) -> Result<Digester> {
    keys.digester_for(env.key).ok_or_else(|| {
        Error::Denied(format!(
            "{key} was sealed with key {}, which is not configured",
            env.key.map(|k| k.to_string()).unwrap_or_default()
        ))
    })
}

/// Streams the verified content of a stored object into `sink`, which must be undoable
/// (a temporary file): the caller may only publish what it wrote once this returns `Ok`.
///
/// Decompression runs on this thread in [`STREAM_CHUNK`] steps; hashing and writing run on a second
/// thread, so a restore costs about the larger of the two rather than their sum, and never
/// allocates a segment-sized buffer.
pub fn open_to(
    key: &str,
    stored: &[u8],
    sink: &mut (dyn Write + Send),
    keys: &Keys,
) -> Result<Envelope> {
    let env = Envelope::decode(key, stored)?;
    let digester = digester(key, &env, keys)?;
    let payload = payload(key, stored, &env, keys)?;
    let payload = &payload[..];
    let corrupt =
        |e: std::io::Error| Error::corrupt(key, format!("zstd payload does not decompress: {e}"));
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<(PageBuf, usize)>(2);
    let (empty_tx, empty_rx) = std::sync::mpsc::sync_channel::<PageBuf>(3);
    for _ in 0..3 {
        let _ = empty_tx.send(PageBuf::new(STREAM_CHUNK));
    }
    let (written, produced) = std::thread::scope(|s| {
        let writer = s.spawn(move || -> std::io::Result<(Sha256Sum, u64)> {
            let mut hasher = digester.start();
            let mut total = 0u64;
            for (buf, n) in full_rx {
                hasher.update(&buf[..n]);
                sink.write_all(&buf[..n])?;
                total += n as u64;
                let _ = empty_tx.send(buf);
            }
            Ok((Sha256Sum(hasher.finish()), total))
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
        .map_err(|_| Error::internal("writer thread panicked"))?
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
pub fn read_head(key: &str, stored: &[u8], len: usize, keys: &Keys) -> Result<(Envelope, Vec<u8>)> {
    let env = Envelope::decode(key, stored)?;
    let payload = payload(key, stored, &env, keys)?;
    let payload = &payload[..];
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
    if got != env.digest {
        let what = if env.key.is_some() {
            "keyed digest"
        } else {
            "sha256"
        };
        return Err(Error::corrupt(
            key,
            format!("{what} {got} does not match the recorded {}", env.digest),
        ));
    }
    Ok(())
}

fn decompress(key: &str, stored: &[u8], keys: &Keys, max: u64) -> Result<(Vec<u8>, Envelope)> {
    let env = Envelope::decode(key, stored)?;
    if env.plain_len > max {
        return Err(Error::corrupt(
            key,
            format!(
                "claims {} bytes, more than an object of its kind holds ({max})",
                env.plain_len
            ),
        ));
    }
    let digester = digester(key, &env, keys)?;
    let payload = payload(key, stored, &env, keys)?;
    let payload = &payload[..];
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
    verify(key, &env, Sha256Sum(digester.of(&plain)))?;
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
            let (stored, env) = c
                .seal_reader(&mut &plain[..], 0, &Keys::none(), Class::Data)
                .unwrap();
            assert_eq!(env.plain_len, plain.len() as u64);
            assert_eq!(env.digest, Sha256Sum::of(&plain));
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
                let c = Compressor { level: 3, workers };
                let (stored, env) = c
                    .seal_reader(&mut Trickle(plain), 0, &Keys::none(), Class::Data)
                    .unwrap();
                assert_eq!(env.plain_len, len as u64);
                assert_eq!(env.digest, Sha256Sum::of(plain));
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
            Compressor {
                level: 3,
                workers: 2,
            },
            Compressor {
                level: 0,
                workers: 0,
            },
        ] {
            let (stored, env) = c
                .seal_reader(
                    &mut &plain[..],
                    plain.len() as u64,
                    &Keys::none(),
                    Class::Data,
                )
                .unwrap();
            assert_eq!(env.digest, Sha256Sum::of(&plain));
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
        let c = Compressor {
            level: 3,
            workers: 0,
        };
        for class in [Class::Data, Class::Metadata] {
            let (stored, env) = c.seal_reader(&mut &plain[..], 0, &writer, class).unwrap();
            assert!(env.key.is_some());
            assert!(!stored.windows(8).any(|w| w == b"customer"));
            assert_eq!(env.digest.0, reader.digester().of(&plain));
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

    #[test]
    fn any_flipped_byte_is_detected() {
        let plain = vec![7u8; 100_000];
        let (stored, _) = Compressor {
            level: 3,
            workers: 0,
        }
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
        let (stored, _) = Compressor {
            level: 1,
            workers: 0,
        }
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
