//! Content digests: sha256 in a plain repository, HMAC-SHA256 under a key derived from the
//! recipient in an encrypted one (why: the module doc of `crypto`).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// How a content digest is computed: sha256 in a plain repository, HMAC-SHA256 with the
/// key's derived MAC key in an encrypted one.
#[derive(Clone)]
pub enum Digester {
    Sha256,
    Keyed([u8; 32]),
}

impl Digester {
    pub fn of(&self, data: &[u8]) -> [u8; 32] {
        let mut s = self.start();
        s.update(data);
        s.finish()
    }

    pub fn start(&self) -> DigestState {
        match self {
            Digester::Sha256 => DigestState::Sha(Sha256::new()),
            Digester::Keyed(k) => DigestState::Mac(
                <Hmac<Sha256> as Mac>::new_from_slice(k)
                    .unwrap_or_else(|_| unreachable!("HMAC takes any key length")),
            ),
        }
    }
}

/// An incremental digest.
pub enum DigestState {
    Sha(Sha256),
    Mac(Hmac<Sha256>),
}

impl DigestState {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            DigestState::Sha(h) => h.update(data),
            DigestState::Mac(m) => m.update(data),
        }
    }

    pub fn finish(self) -> [u8; 32] {
        match self {
            DigestState::Sha(h) => h.finalize().into(),
            DigestState::Mac(m) => m.finalize().into_bytes().into(),
        }
    }
}
