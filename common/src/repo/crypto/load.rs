//! Where keys come from: recipients and identities from the configuration or environment
//! (files, or a command such as a vault client), never from the command line; and new keys.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use age::x25519;

use super::{Derived, KeyRing, Keys};
use crate::error::{Error, Result};

/// Where the keys come from (configuration file or environment; never the command line).
#[derive(Debug, Clone, Default)]
pub struct KeySource {
    /// `age1…` recipients; the first seals new objects, the others only let a push host
    /// recognise objects an earlier key sealed.
    pub recipients: Vec<String>,
    /// A file of `age1…` recipients, one per line (`#` comments), as `age -R` reads.
    pub recipients_file: Option<PathBuf>,
    /// An age identity file (`AGE-SECRET-KEY-1…` lines, as `age-keygen` writes).
    pub identity_file: Option<PathBuf>,
    /// A command whose stdout is an identity file (Vault, a KMS, a password manager).
    pub identity_command: Option<String>,
}

impl KeySource {
    pub fn is_set(&self) -> bool {
        !self.recipients.is_empty()
            || self.recipients_file.is_some()
            || self.identity_file.is_some()
            || self.identity_command.is_some()
    }
}

impl Keys {
    /// Loads the keys `source` names. With identities only, new objects are sealed to the
    /// first identity's recipient.
    pub fn load(source: &KeySource) -> Result<Self> {
        if !source.is_set() {
            return Ok(Keys(None));
        }
        let mut recipients = Vec::new();
        let mut texts: Vec<(String, String)> = source
            .recipients
            .iter()
            .map(|r| ("encryption_recipients".to_string(), r.clone()))
            .collect();
        if let Some(path) = &source.recipients_file {
            let text = std::fs::read_to_string(path).map_err(|e| Error::local_io(path, e))?;
            texts.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(|l| (path.display().to_string(), l.to_string())),
            );
        }
        for (from, text) in texts {
            let r: x25519::Recipient = text.trim().parse().map_err(|_| {
                // The value itself is not echoed: it is a credential here.
                Error::Usage(format!(
                    "{from}: not an age X25519 recipient (expected age1…, as `age-keygen -y` prints)"
                ))
            })?;
            recipients.push(r);
        }
        let mut read = Vec::new();
        if let Some(path) = &source.identity_file {
            let text = std::fs::read_to_string(path).map_err(|e| Error::local_io(path, e))?;
            read.extend(parse_identities(&text, &path.display().to_string())?);
        }
        if let Some(cmd) = &source.identity_command {
            read.extend(parse_identities(
                &run_identity_command(cmd)?,
                "encryption_identity_command",
            )?);
        }
        let write = match (recipients.first(), read.first()) {
            (Some(r), _) => r.clone(),
            (None, Some(i)) => i.to_public(),
            (None, None) => {
                return Err(Error::Usage(
                    "encryption is configured but no recipient or identity was found".into(),
                ));
            }
        };
        let mut known: Vec<Derived> = recipients.iter().map(Derived::of).collect();
        let read: Vec<(x25519::Identity, Derived)> = read
            .into_iter()
            .map(|i| {
                let d = Derived::of(&i.to_public());
                (i, d)
            })
            .collect();
        known.extend(read.iter().map(|(_, d)| d.clone()));
        let write_derived = Derived::of(&write);
        Ok(Keys(Some(Arc::new(KeyRing {
            write: (write, write_derived),
            known,
            read,
        }))))
    }
}

fn parse_identities(text: &str, from: &str) -> Result<Vec<x25519::Identity>> {
    let ids: Vec<x25519::Identity> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.parse().map_err(|_| {
                Error::Usage(format!(
                    "{from}: a line is not an age X25519 identity (expected AGE-SECRET-KEY-1…)"
                ))
            })
        })
        .collect::<Result<_>>()?;
    if ids.is_empty() {
        return Err(Error::Usage(format!("{from}: no age identity in it")));
    }
    Ok(ids)
}

/// Runs the identity command through `sh -c`; its stdout is the identity file. Its stderr
/// goes to ours; the identity never appears in a message.
fn run_identity_command(cmd: &str) -> Result<String> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| Error::local_io(Path::new("sh"), e))?;
    if !out.status.success() {
        return Err(Error::Denied(format!(
            "encryption_identity_command failed ({})",
            out.status
        )));
    }
    String::from_utf8(out.stdout)
        .map_err(|_| Error::Usage("encryption_identity_command printed non-UTF-8".into()))
}

/// A new identity, as `age-keygen` would make it: the identity file text and the recipient.
pub fn generate() -> (String, String) {
    use age::secrecy::ExposeSecret;
    let id = x25519::Identity::generate();
    let recipient = id.to_public().to_string();
    (
        format!(
            "# created by pitrkit\n# public key: {recipient}\n{}\n",
            id.to_string().expose_secret()
        ),
        recipient,
    )
}
