//! Opening: a stored object back to its plain content, verified against its envelope
//! (length and digest) before any byte reaches the caller, within a per-kind size limit.

use std::io::{Read, Write};

use super::{Compression, ContentDigest, ENVELOPE_LEN, Envelope, STREAM_CHUNK};
use crate::error::{Error, Result};
use crate::io::buffer::PageBuf;
use crate::repo::crypto::{Digester, Keys};

/// Recovers and verifies the plain content of a stored object: the length and digest must
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

/// [`payload`] as a stream: a data object is decrypted while it is decompressed, with no
/// buffer of its size.
fn payload_reader<'a>(
    key: &str,
    stored: &'a [u8],
    env: &Envelope,
    keys: &'a Keys,
) -> Result<Box<dyn std::io::BufRead + Send + 'a>> {
    let body = &stored[ENVELOPE_LEN..];
    match env.key {
        None if keys.is_enabled() => Err(Error::corrupt(
            key,
            "is not encrypted, in an encrypted repository: refusing it",
        )),
        None => Ok(Box::new(body)),
        Some(id) => Ok(Box::new(std::io::BufReader::with_capacity(
            STREAM_CHUNK,
            keys.unseal_reader(key, env.scheme, id, body)?,
        ))),
    }
}

/// How the object's digest was computed.
fn digester(key: &str, env: &Envelope, keys: &Keys) -> Result<Digester> {
    keys.digester_for(env.key, env.digest_alg).ok_or_else(|| {
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
    let payload = payload_reader(key, stored, &env, keys)?;
    let what = match env.key {
        Some(_) => "payload does not decrypt and decompress",
        None => "zstd payload does not decompress",
    };
    let corrupt = |e: std::io::Error| Error::corrupt(key, format!("{what}: {e}"));
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<(PageBuf, usize)>(2);
    let (empty_tx, empty_rx) = std::sync::mpsc::sync_channel::<PageBuf>(3);
    for _ in 0..3 {
        let _ = empty_tx.send(PageBuf::new(STREAM_CHUNK));
    }
    let (written, produced) = std::thread::scope(|s| {
        let writer = s.spawn(move || -> std::io::Result<(ContentDigest, u64)> {
            let mut hasher = digester.start();
            let mut total = 0u64;
            for (buf, n) in full_rx {
                hasher.update(&buf[..n]);
                sink.write_all(&buf[..n])?;
                total += n as u64;
                let _ = empty_tx.send(buf);
            }
            Ok((ContentDigest(hasher.finish()), total))
        });
        let produced = (|| -> Result<()> {
            let mut reader: Box<dyn Read + Send> = match env.compression {
                Compression::None => payload,
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
/// unverified: for checks that must not wait for the whole object. Only the head is
/// decrypted and decompressed.
pub fn read_head(key: &str, stored: &[u8], len: usize, keys: &Keys) -> Result<(Envelope, Vec<u8>)> {
    let env = Envelope::decode(key, stored)?;
    let payload = payload_reader(key, stored, &env, keys)?;
    let mut head = Vec::with_capacity(len);
    let read = match env.compression {
        Compression::None => payload.take(len as u64).read_to_end(&mut head),
        Compression::Zstd => zstd::stream::read::Decoder::with_buffer(payload)
            .and_then(|d| d.take(len as u64).read_to_end(&mut head)),
    };
    read.map_err(|e| Error::corrupt(key, format!("zstd payload does not decompress: {e}")))?;
    Ok((env, head))
}

fn verify(key: &str, env: &Envelope, got: ContentDigest) -> Result<()> {
    if got != env.digest {
        let what = env.digest_name();
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
    verify(key, &env, ContentDigest(digester.of(&plain)))?;
    Ok((plain, env))
}
