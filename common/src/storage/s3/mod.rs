//! The S3 backend, for AWS S3 and compatible stores (MinIO, Ceph, Garage).
//!
//! Requests are signed by `rusty-s3` (SigV4, as presigned URLs) and sent with the blocking
//! `ureq` client. Transient failures (connection errors, timeouts, 5xx, 429/SlowDown) are
//! retried with exponential backoff and full jitter, bounded both in attempts and in total
//! time so that a dead store makes `archive_command` fail fast and clearly rather than hang.

use std::time::Duration;

use rusty_s3::actions::ListObjectsV2;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use url::Url;

use super::{ObjectInfo, ObjectKey, PutMode, PutOutcome, Store};
use crate::error::{Error, Result};
use http::{Call, Method, Reply};
use reply::{ListEntry, ListPage, next_token, xml_field};

mod http;
mod multipart;
mod reply;

/// How long a presigned request stays valid; it is used at once, so this only needs to
/// cover clock skew and a slow upload.
const SIGNATURE_TTL: Duration = Duration::from_secs(3600);

/// Bounds on retrying a failing store.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub attempts: u32,
    /// No new attempt starts after this much time since the first.
    pub max_elapsed: Duration,
    /// The longest one attempt waits for the store: to connect, for each read and write of a
    /// body, and for a reply (longer after a large upload, see `send_once`).
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            max_elapsed: Duration::from_secs(20),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Server-side encryption requested on every write (`x-amz-server-side-encryption`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerSideEncryption {
    Aes256,
    Kms { key_id: Option<String> },
}

/// Everything needed to talk to one bucket.
#[derive(Clone)]
pub struct S3Config {
    pub bucket: String,
    pub prefix: String,
    pub endpoint: Url,
    pub region: String,
    pub path_style: bool,
    pub credentials: Option<Credentials>,
    pub sse: Option<ServerSideEncryption>,
    pub retry: RetryPolicy,
    /// Objects larger than this are uploaded in parts.
    pub multipart_threshold: usize,
    /// Size of each part of a multipart upload (S3 requires at least 5 MiB but the last).
    pub part_size: usize,
    /// `x-amz-storage-class` of new objects, by key prefix (the first that matches); keys
    /// under none (the root document, locks) are written in the bucket's default class.
    pub storage_classes: Vec<(String, StorageClass)>,
}

/// An S3 storage class pitrkit writes in: only those whose objects read back at once (a
/// `restore_command` can't wait hours for a restore request), checked when settings are
/// read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageClass(String);

impl StorageClass {
    /// Classes whose objects are read like any other.
    pub const READABLE: [&'static str; 7] = [
        "STANDARD",
        "STANDARD_IA",
        "ONEZONE_IA",
        "INTELLIGENT_TIERING",
        "GLACIER_IR",
        "REDUCED_REDUNDANCY",
        "EXPRESS_ONEZONE",
    ];

    pub fn parse(setting: &str, name: &str) -> Result<Self> {
        let upper = name.trim().to_ascii_uppercase();
        if Self::READABLE.contains(&upper.as_str()) {
            return Ok(StorageClass(upper));
        }
        Err(Error::Usage(match upper.as_str() {
            "GLACIER" | "DEEP_ARCHIVE" | "GLACIER_FLEXIBLE_RETRIEVAL" => format!(
                "{setting} = '{name}': objects in {upper} must be restored (a request that takes \
                 minutes to hours) before they can be read, so restore_command and restores \
                 would fail; use GLACIER_IR (instant retrieval) or STANDARD_IA"
            ),
            _ => format!(
                "{setting} = '{name}' is not an S3 storage class pitrkit writes in (use one of {})",
                Self::READABLE.join(", ")
            ),
        }))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub struct S3Store {
    cfg: S3Config,
    bucket: Bucket,
    agent: ureq::Agent,
}

impl S3Store {
    pub fn new(cfg: S3Config) -> Result<Self> {
        let style = if cfg.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(
            cfg.endpoint.clone(),
            style,
            cfg.bucket.clone(),
            cfg.region.clone(),
        )
        .map_err(|e| Error::Usage(format!("S3 endpoint {}: {e}", cfg.endpoint)))?;
        // `timeout` limits waiting, not transferring: connecting, the reply's first byte, and
        // each read or write of a body. A 16 MiB object on a slow link transfers as long as
        // it moves; a stalled one fails within `timeout`, and `retry_time` bounds the retries.
        let t = Some(cfg.retry.timeout);
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(t)
            .timeout_send_request(t)
            .timeout_send_body(None)
            .timeout_recv_response(t)
            .timeout_recv_body(None)
            .timeout_per_read(t)
            .timeout_per_write(t)
            .user_agent(concat!("pitrkit/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(S3Store { cfg, bucket, agent })
    }

    fn full_key(&self, key: &str) -> String {
        if self.cfg.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.cfg.prefix)
        }
    }

    fn creds(&self) -> Option<&Credentials> {
        self.cfg.credentials.as_ref()
    }

    /// The headers every new object of `key` is written with: server-side encryption and
    /// its storage class.
    fn write_headers(&self, key: &str) -> Vec<(&'static str, String)> {
        let mut h = self.sse_headers();
        if let Some((_, class)) = self
            .cfg
            .storage_classes
            .iter()
            .find(|(prefix, _)| key.starts_with(prefix.as_str()))
        {
            h.push(("x-amz-storage-class", class.as_str().to_string()));
        }
        h
    }

    fn sse_headers(&self) -> Vec<(&'static str, String)> {
        match &self.cfg.sse {
            None => vec![],
            Some(ServerSideEncryption::Aes256) => {
                vec![("x-amz-server-side-encryption", "AES256".into())]
            }
            Some(ServerSideEncryption::Kms { key_id }) => {
                let mut h = vec![("x-amz-server-side-encryption", "aws:kms".to_string())];
                if let Some(id) = key_id {
                    h.push(("x-amz-server-side-encryption-aws-kms-key-id", id.clone()));
                }
                h
            }
        }
    }

    fn display_key(&self, key: &str) -> String {
        format!("s3://{}/{}", self.cfg.bucket, self.full_key(key))
    }

    /// One ListObjectsV2 request for `prefix` (relative to the repository), with whatever
    /// else `configure` sets (a continuation token, start-after, max-keys).
    fn list_page(
        &self,
        prefix: &str,
        configure: impl Fn(&mut ListObjectsV2<'_>),
    ) -> Result<ListPage> {
        let full_prefix = self.full_key(prefix);
        let sign = || {
            let mut a: ListObjectsV2 = self.bucket.list_objects_v2(self.creds());
            a.with_prefix(full_prefix.as_str());
            configure(&mut a);
            a.sign(SIGNATURE_TTL)
        };
        let r = self.request(
            Call::new("list", prefix, Method::Get).limit(64 << 20),
            &sign,
        )?;
        if r.status != 200 {
            return Err(self.refusal("list", prefix, &r));
        }
        let text = String::from_utf8_lossy(&r.body);
        // Parsed leniently with our own shape: stores differ in which optional fields
        // they send (s3s-fs omits ETag, which rusty-s3's parser requires).
        quick_xml::de::from_str(&text).map_err(|e| {
            Error::Unavailable(format!(
                "unreadable listing of {}: {e}",
                self.display_key(prefix)
            ))
        })
    }

    /// The listed objects inside this repository's prefix, as keys relative to it.
    fn push_listed(&self, contents: Vec<ListEntry>, out: &mut Vec<ObjectInfo>) {
        let strip = if self.cfg.prefix.is_empty() {
            0
        } else {
            self.cfg.prefix.len() + 1
        };
        for c in contents {
            if let Some(rel) = c.key.get(strip..)
                && let Ok(key) = ObjectKey::new(rel)
            {
                let modified = c
                    .last_modified
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok());
                out.push(ObjectInfo {
                    key,
                    size: c.size,
                    modified: modified.map(std::time::SystemTime::from),
                });
            }
        }
    }

    fn put_single(&self, full: &str, key: &str, data: &[u8], mode: PutMode) -> Result<Reply> {
        let mut headers = self.write_headers(key);
        if mode == PutMode::CreateNew {
            headers.push(("if-none-match", "*".into()));
        }
        let sign = || {
            let mut a = self.bucket.put_object(self.creds(), full);
            for (k, v) in &headers {
                a.headers_mut().insert(*k, v.clone());
            }
            a.sign(SIGNATURE_TTL)
        };
        self.request(
            Call::new("upload", key, Method::Put)
                .headers(&headers)
                .body(data),
            &sign,
        )
    }
}

impl Store for S3Store {
    fn location(&self) -> String {
        if self.cfg.prefix.is_empty() {
            format!("s3://{}", self.cfg.bucket)
        } else {
            format!("s3://{}/{}", self.cfg.bucket, self.cfg.prefix)
        }
    }

    fn get(&self, key: &ObjectKey) -> Result<Option<Vec<u8>>> {
        let full = self.full_key(key.as_str());
        let sign = || {
            self.bucket
                .get_object(self.creds(), &full)
                .sign(SIGNATURE_TTL)
        };
        let r = self.request(
            Call::new("download", key.as_str(), Method::Get).limit(8 << 30),
            &sign,
        )?;
        match r.status {
            200 => Ok(Some(r.body)),
            404 if xml_field(&r.body, "Code").as_deref() == Some("NoSuchKey") => Ok(None),
            _ => Err(self.refusal("download", key.as_str(), &r)),
        }
    }

    fn get_prefix(&self, key: &ObjectKey, len: usize) -> Result<Option<Vec<u8>>> {
        if len == 0 {
            return self.get(key).map(|o| o.map(|_| Vec::new()));
        }
        let full = self.full_key(key.as_str());
        let range = format!("bytes=0-{}", len - 1);
        let headers = [("range", range.clone())];
        let sign = || {
            self.bucket
                .get_object(self.creds(), &full)
                .sign(SIGNATURE_TTL)
        };
        let r = self.request(
            Call::new("read", key.as_str(), Method::Get)
                .headers(&headers)
                .limit(len as u64 + 4096),
            &sign,
        )?;
        match r.status {
            206 => Ok(Some(r.body)),
            // A server that ignores Range sends it all; an empty object can't satisfy a range.
            200 => Ok(Some(r.body.into_iter().take(len).collect())),
            416 => Ok(Some(Vec::new())),
            404 if xml_field(&r.body, "Code").as_deref() == Some("NoSuchKey") => Ok(None),
            _ => Err(self.refusal("read", key.as_str(), &r)),
        }
    }

    fn put(&self, key: &ObjectKey, data: &[u8], mode: PutMode) -> Result<PutOutcome> {
        let full = self.full_key(key.as_str());
        let mut r = if data.len() > self.cfg.multipart_threshold {
            self.put_multipart(&full, key.as_str(), data, mode)?
        } else {
            self.put_single(&full, key.as_str(), data, mode)?
        };
        if r.status == 501 && mode == PutMode::CreateNew {
            // A store without conditional writes: check, then write. The window between the
            // two is covered by PostgreSQL running one archiver per cluster.
            if self.get_prefix(key, 1)?.is_some() {
                return Ok(PutOutcome::AlreadyExists);
            }
            r = self.put_single(&full, key.as_str(), data, PutMode::Overwrite)?;
        }
        match r.status {
            200..=299 => Ok(PutOutcome::Stored),
            412 => Ok(PutOutcome::AlreadyExists),
            _ => Err(self.refusal("upload", key.as_str(), &r)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let mut seen = std::collections::HashSet::new();
        loop {
            let page = self.list_page(prefix, |a| {
                if let Some(t) = &token {
                    a.with_continuation_token(t.clone());
                }
            })?;
            self.push_listed(page.contents, &mut out);
            // Retention deletes what no listed manifest names: a listing must be provably
            // complete, and a store that repeats itself must not loop forever.
            let incomplete = |why: &str| {
                Error::Unavailable(format!(
                    "listing of {} {why}: it cannot be proved complete",
                    self.display_key(prefix)
                ))
            };
            match next_token(page.is_truncated, page.next_continuation_token, &mut seen) {
                Ok(Some(t)) => token = Some(t),
                Ok(None) => break,
                Err(why) => return Err(incomplete(why)),
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn list_some(&self, prefix: &str, after: Option<&str>, max: usize) -> Result<Vec<ObjectInfo>> {
        let full_after = after.map(|a| self.full_key(a));
        let page = self.list_page(prefix, |a| {
            if let Some(f) = &full_after {
                a.with_start_after(f.clone());
            }
            a.with_max_keys(max.clamp(1, 1000));
        })?;
        let mut out = Vec::new();
        self.push_listed(page.contents, &mut out);
        // A store that ignores start-after sends the listing's first keys: what comes after
        // `after` would then look like nothing. Ask for the whole listing instead.
        if let Some(a) = after
            && out.iter().any(|o| o.key.as_str() <= a)
        {
            out = self.list(prefix)?;
            out.retain(|o| o.key.as_str() > a);
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.truncate(max);
        Ok(out)
    }

    fn delete(&self, key: &ObjectKey) -> Result<()> {
        let full = self.full_key(key.as_str());
        let sign = || {
            self.bucket
                .delete_object(self.creds(), &full)
                .sign(SIGNATURE_TTL)
        };
        let r = self.request(Call::new("delete", key.as_str(), Method::Delete), &sign)?;
        match r.status {
            200..=299 | 404 => Ok(()),
            _ => Err(self.refusal("delete", key.as_str(), &r)),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Instant;

    use super::*;

    /// A store at `endpoint` that gives up after three quick attempts.
    pub(in crate::storage::s3) fn store(
        endpoint: &str,
        credentials: Option<Credentials>,
    ) -> S3Store {
        S3Store::new(S3Config {
            bucket: "b".into(),
            prefix: "p".into(),
            endpoint: Url::parse(endpoint).unwrap(),
            region: "us-east-1".into(),
            path_style: true,
            credentials,
            sse: None,
            retry: RetryPolicy {
                attempts: 3,
                max_elapsed: Duration::from_secs(5),
                timeout: Duration::from_secs(2),
            },
            multipart_threshold: 1 << 30,
            part_size: 8 << 20,
            storage_classes: Vec::new(),
        })
        .unwrap()
    }

    #[test]
    fn unreachable_store_fails_fast() {
        // Port 9 on loopback has no listener: every attempt is refused at once.
        let store = store("http://127.0.0.1:9", Some(Credentials::new("k", "s")));
        let t = Instant::now();
        let e = store.get(&ObjectKey::new("x").unwrap()).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(e.code(), crate::error::EXIT_UNAVAILABLE, "{e}");
        assert!(e.to_string().contains("3 attempts"), "{e}");
    }
}
