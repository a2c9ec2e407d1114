//! The optional TOML configuration file (`--config`, `PITR_CONFIG`): the flags' settings
//! plus what never belongs on a command line (credentials, encryption keys).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The configuration file: the same settings as the flags, plus credentials.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub repo: Option<String>,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub s3_url_style: Option<String>,
    pub s3_sse: Option<String>,
    pub s3_sse_kms_key_id: Option<String>,
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<String>,
    pub s3_session_token: Option<String>,
    pub s3_multipart_threshold: Option<usize>,
    /// S3 storage class of new objects, and per kind (README, "Storage classes").
    pub s3_storage_class: Option<String>,
    pub s3_storage_class_wal: Option<String>,
    pub s3_storage_class_chunks: Option<String>,
    pub s3_storage_class_manifests: Option<String>,
    pub s3_part_size: Option<usize>,
    pub retries: Option<u32>,
    pub retry_time: Option<String>,
    pub timeout: Option<String>,
    pub compress_level: Option<i32>,
    /// Retention applied after each backup and by `bb-push --expire`.
    pub retain_full: Option<u32>,
    pub retain_window: Option<String>,
    /// Encryption (see README): `age1…` recipients, the first seals new objects.
    pub encryption_recipients: Option<Vec<String>>,
    pub encryption_recipients_file: Option<PathBuf>,
    pub encryption_identity_file: Option<PathBuf>,
    pub encryption_identity_command: Option<String>,
    /// PostgreSQL server binaries per major, e.g. `[pg_bin]` then `18 = "/opt/pg18/bin"`:
    /// where `pitr-check drill` finds the server for a backup of that major.
    pub pg_bin: Option<HashMap<String, PathBuf>>,
}

pub(super) fn load_config(path: &Path) -> Result<ConfigFile> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("cannot read config file {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        let first = e.to_string().lines().next().unwrap_or_default().to_string();
        Error::Usage(format!(
            "config file {}: {} {first}",
            path.display(),
            e.message()
        ))
    })
}
