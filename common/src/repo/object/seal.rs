//! Sealing: plain content in, a stored object out — compressed (zstd frames, several at
//! once for a stream), encrypted when the repository is, behind its envelope.

use std::io::Read;

use super::{Compression, ContentDigest, ENVELOPE_LEN, Envelope, STREAM_CHUNK};
use crate::error::{Error, Result};
use crate::io::buffer::{PageBuf, read_full};
use crate::repo::crypto::{Class, DigestAlg, Keys, Scheme};

/// How objects are sealed: the zstd level and how many cores a streamed seal may use.
#[derive(Debug, Clone, Copy)]
pub struct Sealer {
    /// zstd level; 0 stores the content uncompressed.
    pub level: i32,
    /// Pieces of a streamed seal compressed at once, each on its own thread; 0 or 1
    /// compresses on the calling thread.
    pub workers: u32,
}

/// Plain bytes per zstd frame when sealing a stream: a buffer this size per lane is all the
/// input a seal holds (so `wal-push --jobs 8` stays well under 64 MiB), and on WAL it costs
/// 0.9% in size against one frame per 16 MiB segment (2 MiB pieces cost 2%).
pub(super) const FRAME_PIECE: usize = 4 << 20;

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

impl Sealer {
    /// Seals at zstd `level` on the calling thread: for callers that seal many objects and
    /// spread those over workers themselves.
    pub fn on_this_thread(level: i32) -> Self {
        Sealer { level, workers: 0 }
    }

    /// Seals `plain` whose sha256 digest (`keys.digester()`) the caller already computed (to
    /// name a chunk), on this thread: callers that seal many small objects parallelise across
    /// objects instead.
    pub fn seal_known(
        &self,
        plain: &[u8],
        digest: ContentDigest,
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
            digest_alg: DigestAlg::Sha256,
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
    /// only sizes the output. The digest is BLAKE3 (envelope version 2; why: `crypto::digest`).
    pub fn seal_reader(
        &self,
        input: &mut dyn Read,
        size_hint: u64,
        keys: &Keys,
        class: Class,
    ) -> std::io::Result<(Vec<u8>, Envelope)> {
        let mut out = Vec::with_capacity(ENVELOPE_LEN + (size_hint as usize / 6).max(4096));
        out.resize(ENVELOPE_LEN, 0);
        let digester = keys.digester_with(DigestAlg::Blake3);
        let mut hasher = digester.start();
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
            let mut sealed = vec![0u8; ENVELOPE_LEN];
            let (scheme, key) = keys
                .seal_into(class, &out[ENVELOPE_LEN..], &mut sealed)
                .map_err(std::io::Error::other)?;
            out = sealed;
            (scheme, key)
        } else {
            (Scheme::None, None)
        };
        let env = Envelope {
            compression,
            plain_len: total,
            digest: ContentDigest(hasher.finish()),
            digest_alg: digester.alg(),
            scheme,
            key,
        };
        out[..ENVELOPE_LEN].copy_from_slice(&env.encode());
        Ok((out, env))
    }
}
