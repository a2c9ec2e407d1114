//! Repository location and store settings shared by every tool: one clap struct flattened
//! into each tool, the environment read in one place, and an optional TOML file.
//! Precedence is flags, then environment, then file, then defaults.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::error::{Error, Result};

mod file;
mod location;

use crate::storage::s3::{RetryPolicy, S3Config, S3Store, ServerSideEncryption, StorageClass};
use crate::storage::{Store, fs::FsStore};
pub use file::ConfigFile;
use file::load_config;
pub use location::RepoLocation;

/// Options every tool accepts.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RepoArgs {
    /// Repository: a directory, file:///path or s3://bucket[/prefix] [env: PITR_REPO]
    #[arg(long, value_name = "URL", global = true)]
    pub repo: Option<String>,
    /// TOML file with any of these settings [env: PITR_CONFIG]
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// S3 endpoint for MinIO, Ceph, Garage… [env: AWS_ENDPOINT_URL]
    #[arg(long, value_name = "URL", global = true)]
    pub s3_endpoint: Option<String>,
    /// S3 region [env: AWS_REGION, AWS_DEFAULT_REGION; default us-east-1]
    #[arg(long, value_name = "REGION", global = true)]
    pub s3_region: Option<String>,
    /// Bucket addressing: path (default with --s3-endpoint) or virtual (default for AWS)
    #[arg(long, value_name = "STYLE", value_parser = ["path", "virtual"], global = true)]
    pub s3_url_style: Option<String>,
    /// Server-side encryption of written objects
    #[arg(long, value_name = "MODE", value_parser = ["AES256", "aws:kms"], global = true)]
    pub s3_sse: Option<String>,
    /// KMS key for --s3-sse aws:kms (default: the bucket's AWS-managed key)
    #[arg(long, value_name = "ID", global = true)]
    pub s3_sse_kms_key_id: Option<String>,
    /// S3 storage class of new WAL, chunks and manifests, e.g. STANDARD_IA (instant-read
    /// classes only; per kind in the config file)
    #[arg(long, value_name = "CLASS", global = true)]
    pub s3_storage_class: Option<String>,
    /// Attempts per store request before giving up [default: 5]
    #[arg(long, value_name = "N", global = true)]
    pub retries: Option<u32>,
    /// Give up retrying after this long, e.g. 20s [default: 20s]
    #[arg(long, value_name = "DURATION", global = true)]
    pub retry_time: Option<String>,
    /// Longest wait for the store to accept or send a byte, e.g. 10s [default: 10s]
    #[arg(long, value_name = "DURATION", global = true)]
    pub timeout: Option<String>,
    /// More detail on stderr
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

/// Every setting, resolved.
#[derive(Clone)]
pub struct Settings {
    pub location: RepoLocation,
    /// The repository URL as given, for commands that pass it on (restore_command).
    pub repo_url: String,
    /// The configuration file used, if any.
    pub config_path: Option<PathBuf>,
    pub s3_endpoint: Option<Url>,
    pub s3_region: String,
    pub s3_path_style: Option<bool>,
    pub s3_sse: Option<ServerSideEncryption>,
    /// Storage class by key prefix (see `S3Config::storage_classes`).
    pub s3_storage_classes: Vec<(String, StorageClass)>,
    pub s3_credentials: Option<rusty_s3::Credentials>,
    pub s3_multipart_threshold: usize,
    pub s3_part_size: usize,
    pub retry: RetryPolicy,
    pub compress_level: Option<i32>,
    /// The retention policy of the configuration file (flags may override it).
    pub retention: crate::repo::retention::Policy,
    /// Where encryption keys come from; empty for a plain repository.
    pub encryption: crate::repo::crypto::KeySource,
    /// PostgreSQL server binaries per major version (the config file's `[pg_bin]` table).
    pub pg_bin: std::collections::BTreeMap<u32, PathBuf>,
    pub verbose: bool,
}

impl std::fmt::Debug for Settings {
    // Hand-written so that credentials can never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("location", &self.location)
            .field("s3_endpoint", &self.s3_endpoint.as_ref().map(Url::as_str))
            .field("s3_region", &self.s3_region)
            .field(
                "s3_credentials",
                &self.s3_credentials.as_ref().map(|_| "<set>"),
            )
            .finish_non_exhaustive()
    }
}

/// The environment variables pitrkit reads, in one place.
pub const ENV_VARS: [&str; 12] = [
    "PITR_ENCRYPTION_RECIPIENTS_FILE",
    "PITR_ENCRYPTION_IDENTITY_FILE",
    "PITR_REPO",
    "PITR_CONFIG",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "PITR_S3_URL_STYLE",
];

/// A snapshot of the variables in [`ENV_VARS`]; tests pass their own.
pub fn process_env() -> HashMap<String, String> {
    ENV_VARS
        .iter()
        .filter_map(|k| {
            std::env::var(k)
                .ok()
                .filter(|v| !v.is_empty())
                .map(|v| (k.to_string(), v))
        })
        .collect()
}

/// Parses a duration as users write them: `20s`, `5m`, `7d`, or bare seconds.
pub fn parse_duration(what: &str, s: &str) -> Result<Duration> {
    let s = s.trim();
    // A bare number is seconds, as most people mean it.
    if let Ok(n) = s.parse::<f64>()
        && n.is_finite()
        && n >= 0.0
    {
        return Ok(Duration::from_secs_f64(n));
    }
    humantime::parse_duration(s)
        .map_err(|e| Error::Usage(format!("bad {what} '{s}': {e} (e.g. 20s, 5m, 7d)")))
}

impl Settings {
    /// Resolves flags, then `env`, then the configuration file, then defaults.
    pub fn resolve(args: &RepoArgs, env: &HashMap<String, String>) -> Result<Self> {
        let e = |k: &str| env.get(k).cloned();
        let config_path = args
            .config
            .clone()
            .or_else(|| e("PITR_CONFIG").map(PathBuf::from));
        let file = match &config_path {
            Some(p) => load_config(p)?,
            None => ConfigFile::default(),
        };
        let repo = args.repo.clone().or_else(|| e("PITR_REPO")).or(file.repo.clone()).ok_or_else(|| {
            Error::Usage("no repository given: use --repo URL, set PITR_REPO, or set repo in the --config file".into())
        })?;
        let location = RepoLocation::parse(&repo)?;

        let endpoint = args
            .s3_endpoint
            .clone()
            .or_else(|| e("AWS_ENDPOINT_URL_S3"))
            .or_else(|| e("AWS_ENDPOINT_URL"))
            .or(file.s3_endpoint.clone())
            .map(|u| {
                Url::parse(&u)
                    .ok()
                    .filter(|p| matches!(p.scheme(), "http" | "https") && p.host_str().is_some())
                    .ok_or_else(|| {
                        Error::Usage(format!(
                            "bad S3 endpoint '{u}': expected http(s)://host[:port]"
                        ))
                    })
            })
            .transpose()?;
        let region = args
            .s3_region
            .clone()
            .or_else(|| e("AWS_REGION"))
            .or_else(|| e("AWS_DEFAULT_REGION"))
            .or(file.s3_region.clone())
            .unwrap_or_else(|| "us-east-1".into());
        let style = args
            .s3_url_style
            .clone()
            .or_else(|| e("PITR_S3_URL_STYLE"))
            .or(file.s3_url_style.clone());
        let s3_path_style = match style.as_deref() {
            None => None,
            Some("path") => Some(true),
            Some("virtual") => Some(false),
            Some(other) => {
                return Err(Error::Usage(format!(
                    "bad s3_url_style '{other}': use path or virtual"
                )));
            }
        };
        let sse = match args.s3_sse.clone().or(file.s3_sse.clone()).as_deref() {
            None => None,
            Some("AES256") => Some(ServerSideEncryption::Aes256),
            Some("aws:kms") => Some(ServerSideEncryption::Kms {
                key_id: args
                    .s3_sse_kms_key_id
                    .clone()
                    .or(file.s3_sse_kms_key_id.clone()),
            }),
            Some(other) => {
                return Err(Error::Usage(format!(
                    "bad s3_sse '{other}': use AES256 or aws:kms"
                )));
            }
        };
        let default_class = args
            .s3_storage_class
            .clone()
            .map(|c| ("--s3-storage-class", c))
            .or(file
                .s3_storage_class
                .clone()
                .map(|c| ("s3_storage_class", c)));
        let mut s3_storage_classes = Vec::new();
        for (setting, kind, prefixes) in [
            (
                "s3_storage_class_wal",
                &file.s3_storage_class_wal,
                &[crate::repo::layout::WAL][..],
            ),
            (
                "s3_storage_class_chunks",
                &file.s3_storage_class_chunks,
                &[crate::repo::layout::CHUNKS][..],
            ),
            (
                "s3_storage_class_manifests",
                &file.s3_storage_class_manifests,
                // The small documents: in an infrequent-access class each would be billed
                // as 128 KiB.
                &[crate::repo::layout::BACKUPS, crate::repo::layout::SUMMARIES][..],
            ),
        ] {
            let chosen = kind.clone().map(|c| (setting, c)).or(default_class.clone());
            if let Some((setting, class)) = chosen {
                let class = StorageClass::parse(setting, &class)?;
                for p in prefixes {
                    s3_storage_classes.push((p.to_string(), class.clone()));
                }
            }
        }
        // Credentials come as a set: a key id from one source and a secret from another
        // would be a confusing mix, so the environment's pair wins over the file's pair.
        let creds = match (e("AWS_ACCESS_KEY_ID"), e("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => Some((id, secret, e("AWS_SESSION_TOKEN"))),
            _ => match (
                file.s3_access_key_id.clone(),
                file.s3_secret_access_key.clone(),
            ) {
                (Some(id), Some(secret)) => Some((id, secret, file.s3_session_token.clone())),
                (None, None) => None,
                _ => {
                    return Err(Error::Usage(
                        "the config file must give both s3_access_key_id and s3_secret_access_key"
                            .into(),
                    ));
                }
            },
        };
        let s3_credentials = creds.map(|(id, secret, token)| match token {
            Some(t) => rusty_s3::Credentials::new_with_token(id, secret, t),
            None => rusty_s3::Credentials::new(id, secret),
        });

        let defaults = RetryPolicy::default();
        let retry = RetryPolicy {
            attempts: args
                .retries
                .or(file.retries)
                .unwrap_or(defaults.attempts)
                .max(1),
            max_elapsed: match args.retry_time.as_ref().or(file.retry_time.as_ref()) {
                Some(s) => parse_duration("retry time", s)?,
                None => defaults.max_elapsed,
            },
            timeout: match args.timeout.as_ref().or(file.timeout.as_ref()) {
                Some(s) => parse_duration("timeout", s)?,
                None => defaults.timeout,
            },
        };
        if retry.timeout.is_zero() {
            return Err(Error::Usage("timeout must be more than 0".into()));
        }
        let part_size = file.s3_part_size.unwrap_or(16 << 20);
        if part_size < 5 << 20 {
            return Err(Error::Usage(
                "s3_part_size must be at least 5 MiB (5242880), as S3 requires".into(),
            ));
        }
        let mut pg_bin = std::collections::BTreeMap::new();
        for (major, dir) in file.pg_bin.clone().unwrap_or_default() {
            let number = major
                .parse::<u32>()
                .ok()
                .and_then(crate::pg::major::by_number)
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "bad [pg_bin] key '{major}': a PostgreSQL major this pitrkit supports ({})",
                        crate::pg::major::supported_list()
                    ))
                })?
                .number;
            pg_bin.insert(number, dir);
        }
        Ok(Settings {
            location,
            repo_url: repo,
            config_path,
            s3_endpoint: endpoint,
            s3_region: region,
            s3_path_style,
            s3_sse: sse,
            s3_storage_classes,
            s3_credentials,
            s3_multipart_threshold: file.s3_multipart_threshold.unwrap_or(64 << 20),
            s3_part_size: part_size,
            retry,
            compress_level: file.compress_level,
            retention: crate::repo::retention::Policy {
                retain_full: file.retain_full,
                retain_window: file
                    .retain_window
                    .as_deref()
                    .map(|w| parse_duration("retain_window", w))
                    .transpose()?,
            },
            encryption: crate::repo::crypto::KeySource {
                recipients: file.encryption_recipients.clone().unwrap_or_default(),
                recipients_file: env
                    .get("PITR_ENCRYPTION_RECIPIENTS_FILE")
                    .map(PathBuf::from)
                    .or(file.encryption_recipients_file.clone()),
                identity_file: env
                    .get("PITR_ENCRYPTION_IDENTITY_FILE")
                    .map(PathBuf::from)
                    .or(file.encryption_identity_file.clone()),
                identity_command: file.encryption_identity_command.clone(),
            },
            pg_bin,
            verbose: args.verbose,
        })
    }

    /// Resolves from the process environment.
    pub fn from_args(args: &RepoArgs) -> Result<Self> {
        Self::resolve(args, &process_env())
    }

    /// Opens the repository with the encryption keys configured (read from their files now:
    /// a missing or malformed key fails before anything touches the store).
    /// Requests or files in flight: `explicit` (a `--jobs` flag) if given, else what suits
    /// this repository's store (see [`RepoLocation::default_jobs`]); at least one.
    pub fn jobs(&self, explicit: Option<usize>) -> usize {
        explicit
            .unwrap_or_else(|| self.location.default_jobs())
            .max(1)
    }

    pub fn open_repo(&self) -> Result<crate::repo::Repository> {
        let keys = crate::repo::crypto::Keys::load(&self.encryption)?;
        Ok(crate::repo::Repository::with_keys(self.open_store()?, keys))
    }

    /// Opens the store these settings point at. No network traffic happens here.
    pub fn open_store(&self) -> Result<Box<dyn Store>> {
        match &self.location {
            RepoLocation::Dir(p) => Ok(Box::new(FsStore::new(p.clone()))),
            RepoLocation::S3 { bucket, prefix } => {
                let custom = self.s3_endpoint.is_some();
                let endpoint = match &self.s3_endpoint {
                    Some(u) => u.clone(),
                    None => Url::parse(&format!("https://s3.{}.amazonaws.com", self.s3_region))
                        .map_err(|e| {
                            Error::Usage(format!("bad S3 region '{}': {e}", self.s3_region))
                        })?,
                };
                Ok(Box::new(S3Store::new(S3Config {
                    bucket: bucket.clone(),
                    prefix: prefix.clone(),
                    endpoint,
                    region: self.s3_region.clone(),
                    path_style: self.s3_path_style.unwrap_or(custom),
                    credentials: self.s3_credentials.clone(),
                    sse: self.s3_sse.clone(),
                    retry: self.retry,
                    multipart_threshold: self.s3_multipart_threshold,
                    part_size: self.s3_part_size,
                    storage_classes: self.s3_storage_classes.clone(),
                })?))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn pg_bin_table_names_supported_majors() {
        let d = tempfile::tempdir().unwrap();
        let cfg = d.path().join("pitr.toml");
        let args = RepoArgs {
            config: Some(cfg.clone()),
            ..Default::default()
        };
        std::fs::write(&cfg, "repo = '/r'\n[pg_bin]\n18 = '/opt/pg18/bin'\n").unwrap();
        let s = Settings::resolve(&args, &env(&[])).unwrap();
        assert_eq!(
            s.pg_bin.get(&18).map(PathBuf::as_path),
            Some(std::path::Path::new("/opt/pg18/bin"))
        );
        for bad in ["12", "19", "x"] {
            std::fs::write(&cfg, format!("repo = '/r'\n[pg_bin]\n{bad} = '/b'\n")).unwrap();
            let e = Settings::resolve(&args, &env(&[])).unwrap_err();
            assert_eq!(e.code(), crate::error::EXIT_USAGE);
            assert!(e.to_string().contains("13, 14, 15, 16, 17 and 18"), "{e}");
        }
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let d = tempfile::tempdir().unwrap();
        let cfg = d.path().join("pitr.toml");
        std::fs::write(
            &cfg,
            "repo = 's3://from-file'\ns3_region = 'eu-west-1'\nretries = 2\n",
        )
        .unwrap();
        let mut args = RepoArgs {
            config: Some(cfg.clone()),
            ..Default::default()
        };
        let s = Settings::resolve(&args, &env(&[])).unwrap();
        assert_eq!(
            s.location,
            RepoLocation::S3 {
                bucket: "from-file".into(),
                prefix: String::new()
            }
        );
        assert_eq!((s.s3_region.as_str(), s.retry.attempts), ("eu-west-1", 2));
        let s = Settings::resolve(
            &args,
            &env(&[("PITR_REPO", "/env"), ("AWS_REGION", "us-west-2")]),
        )
        .unwrap();
        assert_eq!(s.location, RepoLocation::Dir("/env".into()));
        assert_eq!(s.s3_region, "us-west-2");
        args.repo = Some("/flag".into());
        args.s3_region = Some("ap-south-1".into());
        let s = Settings::resolve(
            &args,
            &env(&[("PITR_REPO", "/env"), ("AWS_REGION", "us-west-2")]),
        )
        .unwrap();
        assert_eq!(s.location, RepoLocation::Dir("/flag".into()));
        assert_eq!(s.s3_region, "ap-south-1");
        // The config file can also come from the environment.
        let s = Settings::resolve(
            &RepoArgs::default(),
            &env(&[("PITR_CONFIG", cfg.to_str().unwrap())]),
        )
        .unwrap();
        assert_eq!(s.retry.attempts, 2);
    }

    #[test]
    fn config_errors_are_usage_errors() {
        let d = tempfile::tempdir().unwrap();
        let cfg = d.path().join("pitr.toml");
        std::fs::write(&cfg, "repo = '/x'\nretires = 3\n").unwrap();
        let args = RepoArgs {
            config: Some(cfg),
            ..Default::default()
        };
        let e = Settings::resolve(&args, &env(&[])).unwrap_err();
        assert_eq!(e.code(), crate::error::EXIT_USAGE);
        assert!(e.to_string().contains("retires"), "{e}");
        let e = Settings::resolve(&RepoArgs::default(), &env(&[])).unwrap_err();
        assert!(e.to_string().contains("no repository"), "{e}");
        let args = RepoArgs {
            repo: Some("/x".into()),
            timeout: Some("soon".into()),
            ..Default::default()
        };
        assert_eq!(
            Settings::resolve(&args, &env(&[])).unwrap_err().code(),
            crate::error::EXIT_USAGE
        );
    }

    #[test]
    fn storage_classes_by_kind_and_only_those_read_at_once() {
        let d = tempfile::tempdir().unwrap();
        let cfg = d.path().join("pitr.toml");
        std::fs::write(
            &cfg,
            "repo = 's3://bkt/p'\ns3_storage_class = 'standard_ia'\ns3_storage_class_wal = 'GLACIER_IR'\n",
        )
        .unwrap();
        let args = RepoArgs {
            config: Some(cfg.clone()),
            ..Default::default()
        };
        let s = Settings::resolve(&args, &env(&[])).unwrap();
        let classes: Vec<(&str, &str)> = s
            .s3_storage_classes
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_str()))
            .collect();
        assert_eq!(
            classes,
            [
                ("wal/", "GLACIER_IR"),
                ("chunks/", "STANDARD_IA"),
                ("backups/", "STANDARD_IA"),
                ("summaries/", "STANDARD_IA")
            ]
        );
        for (bad, says) in [
            ("GLACIER", "must be restored"),
            ("DEEP_ARCHIVE", "must be restored"),
            ("FAST", "not an S3 storage class"),
        ] {
            std::fs::write(
                &cfg,
                format!("repo = 's3://bkt/p'\ns3_storage_class_chunks = '{bad}'\n"),
            )
            .unwrap();
            let e = Settings::resolve(&args, &env(&[])).unwrap_err();
            assert_eq!(e.code(), crate::error::EXIT_USAGE, "{bad}");
            assert!(e.to_string().contains(says), "{e}");
            assert!(e.to_string().contains("s3_storage_class_chunks"), "{e}");
        }
    }

    #[test]
    fn debug_never_shows_secrets() {
        let args = RepoArgs {
            repo: Some("s3://bucket".into()),
            ..Default::default()
        };
        let s = Settings::resolve(
            &args,
            &env(&[
                ("AWS_ACCESS_KEY_ID", "AKIDX"),
                ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
            ]),
        )
        .unwrap();
        assert!(s.s3_credentials.is_some(), "the credentials were read");
        let shown = format!("{s:?}");
        assert!(shown.contains("s3_credentials: Some(\"<set>\")"), "{shown}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("AKIDX"),
            "{shown}"
        );
    }
}
