//! Content digests. Two functions, told apart by the envelope's version (docs/FORMAT.md):
//! sha256 (HMAC-SHA256 when encrypted) names backup chunks and was the only digest before
//! envelope version 2; BLAKE3 (keyed BLAKE3 when encrypted) digests everything sealed as a
//! stream since (WAL segments, manifests, summaries). Why two: a segment's digest is computed
//! once when it is pushed and once every time it is fetched, and sha256 of 16 MiB costs
//! ~12 ms where BLAKE3 costs ~3.5 ms (SHA-NI against AVX2/AVX-512, one core): a fifth of a
//! restore_command's CPU. Chunk names stay sha256 so that new backups deduplicate against
//! the chunks of older ones. Why keyed: the module doc of `crypto`.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Which function an envelope's digest is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlg {
    /// sha256, or HMAC-SHA256 under the digest key (envelope version 1).
    Sha256,
    /// BLAKE3, or keyed BLAKE3 under the BLAKE3 digest key (envelope version 2).
    Blake3,
}

impl DigestAlg {
    /// The function's name, keyed or not, in messages and JSON (`digest_algorithm`).
    pub fn name(self, keyed: bool) -> &'static str {
        match (self, keyed) {
            (DigestAlg::Sha256, false) => "sha256",
            (DigestAlg::Sha256, true) => "hmac-sha256",
            (DigestAlg::Blake3, false) => "blake3",
            (DigestAlg::Blake3, true) => "keyed-blake3",
        }
    }
}

/// How a content digest is computed: the function, and its key in an encrypted repository.
#[derive(Clone)]
pub enum Digester {
    Sha256,
    Keyed([u8; 32]),
    Blake3,
    Blake3Keyed([u8; 32]),
}

impl Digester {
    /// `alg` without a key: a plain repository.
    pub fn plain(alg: DigestAlg) -> Self {
        match alg {
            DigestAlg::Sha256 => Digester::Sha256,
            DigestAlg::Blake3 => Digester::Blake3,
        }
    }

    pub fn of(&self, data: &[u8]) -> [u8; 32] {
        let mut s = self.start();
        s.update(data);
        s.finish()
    }

    pub fn alg(&self) -> DigestAlg {
        match self {
            Digester::Sha256 | Digester::Keyed(_) => DigestAlg::Sha256,
            Digester::Blake3 | Digester::Blake3Keyed(_) => DigestAlg::Blake3,
        }
    }

    pub fn start(&self) -> DigestState {
        match self {
            Digester::Sha256 => DigestState::Sha(Sha256::new()),
            Digester::Keyed(k) => DigestState::Mac(
                <Hmac<Sha256> as Mac>::new_from_slice(k)
                    .unwrap_or_else(|_| unreachable!("HMAC takes any key length")),
            ),
            Digester::Blake3 => DigestState::Blake3(Box::new(blake3::Hasher::new())),
            Digester::Blake3Keyed(k) => DigestState::Blake3(Box::new(blake3::Hasher::new_keyed(k))),
        }
    }
}

/// An incremental digest.
pub enum DigestState {
    Sha(Sha256),
    Mac(Hmac<Sha256>),
    /// Boxed: its chunk stack makes it ~2 KiB.
    Blake3(Box<blake3::Hasher>),
}

impl DigestState {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            DigestState::Sha(h) => h.update(data),
            DigestState::Mac(m) => m.update(data),
            DigestState::Blake3(h) => {
                h.update(data);
            }
        }
    }

    pub fn finish(self) -> [u8; 32] {
        match self {
            DigestState::Sha(h) => h.finalize().into(),
            DigestState::Mac(m) => m.finalize().into_bytes().into(),
            DigestState::Blake3(h) => *h.finalize().as_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published test vectors: BLAKE3 of the empty input, and of "abc" under sha256.
    #[test]
    fn known_answers() {
        assert_eq!(
            crate::repo::object::ContentDigest(Digester::Blake3.of(b"")).to_string(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert_eq!(
            crate::repo::object::ContentDigest(Digester::Sha256.of(b"abc")).to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut s = Digester::Blake3Keyed([7; 32]).start();
        s.update(b"ab");
        s.update(b"c");
        assert_eq!(
            s.finish(),
            blake3::keyed_hash(&[7; 32], b"abc").as_bytes()[..]
        );
        assert_ne!(
            Digester::Blake3Keyed([7; 32]).of(b"abc"),
            Digester::Blake3.of(b"abc")
        );
    }
}
