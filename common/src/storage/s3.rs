//! The S3 backend, for AWS S3 and compatible stores (MinIO, Ceph, Garage).
//!
//! Requests are signed by `rusty-s3` (SigV4, as presigned URLs) and sent with the blocking
//! `ureq` client. Transient failures (connection errors, timeouts, 5xx, 429/SlowDown) are
//! retried with exponential backoff and full jitter, bounded both in attempts and in total
//! time so that a dead store makes `archive_command` fail fast and clearly rather than hang.

use std::time::{Duration, Instant};

use rusty_s3::actions::{CreateMultipartUpload, ListObjectsV2};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use url::Url;

use super::{ObjectInfo, ObjectKey, PutMode, PutOutcome, Store};
use crate::error::{Error, Result};

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
}

pub struct S3Store {
    cfg: S3Config,
    bucket: Bucket,
    agent: ureq::Agent,
}

struct Reply {
    status: u16,
    body: Vec<u8>,
    etag: Option<String>,
}

/// One logical request: what it is for (for messages), and what to send.
struct Call<'a> {
    what: &'a str,
    key: &'a str,
    method: Method,
    headers: &'a [(&'a str, String)],
    body: &'a [u8],
    limit: u64,
}

enum Method {
    Get,
    Put,
    Post,
    Delete,
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

    /// The slowest link an upload's reply waits for (bytes per second), see `send_once`.
    const MIN_RATE: f64 = 128.0 * 1024.0;

    /// One HTTP exchange, without retries.
    fn send_once(
        &self,
        method: &Method,
        url: &Url,
        headers: &[(&str, String)],
        body: &[u8],
        limit: u64,
    ) -> std::result::Result<Reply, ureq::Error> {
        fn with<B>(
            mut r: ureq::RequestBuilder<B>,
            headers: &[(&str, String)],
        ) -> ureq::RequestBuilder<B> {
            for (k, v) in headers {
                r = r.header(*k, v.as_str());
            }
            r
        }
        // Once a body is sent, what is still in flight (socket buffers hold megabytes)
        // must reach the store before it can answer: the wait for its reply grows with the
        // body, as if the link moved at least MIN_RATE.
        let drain = |r: ureq::RequestBuilder<ureq::typestate::WithBody>| {
            let wait = self.cfg.retry.timeout
                + Duration::from_secs_f64(body.len() as f64 / Self::MIN_RATE);
            r.config()
                .timeout_recv_response(Some(wait))
                .timeout_per_read(Some(wait))
                .build()
        };
        let u = url.as_str();
        let mut resp = match method {
            Method::Get => with(self.agent.get(u), headers).call()?,
            Method::Delete => with(self.agent.delete(u), headers).call()?,
            Method::Put => drain(with(self.agent.put(u), headers)).send(body)?,
            Method::Post => drain(with(self.agent.post(u), headers)).send(body)?,
        };
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.body_mut().with_config().limit(limit).read_to_vec()?;
        Ok(Reply { status, body, etag })
    }

    /// Sends a request, signing it afresh for each attempt, and retries what a retry can fix.
    /// Returns the first reply that is not transient; the caller interprets its status.
    fn request(&self, call: Call<'_>, sign: &dyn Fn() -> Url) -> Result<Reply> {
        let Call {
            what,
            key,
            method,
            headers,
            body,
            limit,
        } = call;
        let policy = self.cfg.retry;
        let start = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let url = sign();
            let problem = match self.send_once(&method, &url, headers, body, limit) {
                Ok(r) if is_transient_status(r.status, &r.body) => {
                    format!("HTTP {} {}", r.status, s3_error_summary(&r.body))
                }
                Ok(r) => return Ok(r),
                Err(e) => describe_transport_error(&e),
            };
            let backoff = backoff(attempt);
            if attempt >= policy.attempts || start.elapsed() + backoff > policy.max_elapsed {
                return Err(Error::Unavailable(format!(
                    "{what} {} at {}: {problem} (gave up after {attempt} attempts in {:.1} s)",
                    self.display_key(key),
                    self.cfg.endpoint,
                    start.elapsed().as_secs_f64()
                )));
            }
            std::thread::sleep(backoff);
        }
    }

    fn display_key(&self, key: &str) -> String {
        format!("s3://{}/{}", self.cfg.bucket, self.full_key(key))
    }

    /// Turns a non-success, non-transient reply into the error the user should see.
    fn refusal(&self, what: &str, key: &str, r: &Reply) -> Error {
        let code = xml_field(&r.body, "Code").unwrap_or_default();
        let msg = s3_error_summary(&r.body);
        let target = self.display_key(key);
        match (r.status, code.as_str()) {
            (404, "NoSuchBucket" | "") => Error::Denied(format!(
                "{what} {target}: bucket '{}' does not exist at {}",
                self.cfg.bucket, self.cfg.endpoint
            )),
            (403, _) | (401, _) => {
                let hint = if self.cfg.credentials.is_none() {
                    " (no credentials given: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
                } else if what == "download" || what == "read" {
                    " (check the access key, secret and the bucket policy; without \
                     s3:ListBucket on the bucket, S3 answers 403 for a missing object too, so \
                     'missing' can't be told from 'forbidden': grant it)"
                } else {
                    " (check the access key, secret and the bucket policy)"
                };
                Error::Denied(format!("{what} {target}: HTTP {} {msg}{hint}", r.status))
            }
            _ => Error::Denied(format!("{what} {target}: HTTP {} {msg}", r.status)),
        }
    }

    fn put_single(&self, full: &str, key: &str, data: &[u8], mode: PutMode) -> Result<Reply> {
        let mut headers = self.sse_headers();
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
            Call {
                what: "upload",
                key,
                method: Method::Put,
                headers: &headers,
                body: data,
                limit: 1 << 20,
            },
            &sign,
        )
    }

    fn put_multipart(&self, full: &str, key: &str, data: &[u8], mode: PutMode) -> Result<Reply> {
        let headers = self.sse_headers();
        let sign = || {
            let mut a = self.bucket.create_multipart_upload(self.creds(), full);
            for (k, v) in &headers {
                a.headers_mut().insert(*k, v.clone());
            }
            a.sign(SIGNATURE_TTL)
        };
        let r = self.request(
            Call {
                what: "start multipart upload of",
                key,
                method: Method::Post,
                headers: &headers,
                body: &[],
                limit: 1 << 20,
            },
            &sign,
        )?;
        if r.status / 100 != 2 {
            return Err(self.refusal("start multipart upload of", key, &r));
        }
        let text = String::from_utf8_lossy(&r.body);
        let created = CreateMultipartUpload::parse_response(&text).map_err(|e| {
            Error::Unavailable(format!("unreadable reply to CreateMultipartUpload: {e}"))
        })?;
        let upload_id = created.upload_id().to_string();
        let result = self.upload_parts(full, key, data, &upload_id, mode);
        if !matches!(&result, Ok(r) if r.status / 100 == 2) {
            // Best effort: an abandoned upload only costs storage until a lifecycle rule.
            let sign = || {
                self.bucket
                    .abort_multipart_upload(self.creds(), full, &upload_id)
                    .sign(SIGNATURE_TTL)
            };
            let _ = self.request(
                Call {
                    what: "abort multipart upload of",
                    key,
                    method: Method::Delete,
                    headers: &[],
                    body: &[],
                    limit: 1 << 20,
                },
                &sign,
            );
        }
        result
    }

    fn upload_parts(
        &self,
        full: &str,
        key: &str,
        data: &[u8],
        upload_id: &str,
        mode: PutMode,
    ) -> Result<Reply> {
        let mut etags = Vec::new();
        for (i, part) in data.chunks(self.cfg.part_size.max(1)).enumerate() {
            let n = u16::try_from(i + 1)
                .ok()
                .filter(|n| *n <= 10_000)
                .ok_or_else(|| {
                    Error::Usage(format!("{key}: more than 10000 parts; raise s3_part_size"))
                })?;
            let sign = || {
                self.bucket
                    .upload_part(self.creds(), full, n, upload_id)
                    .sign(SIGNATURE_TTL)
            };
            let r = self.request(
                Call {
                    what: "upload part of",
                    key,
                    method: Method::Put,
                    headers: &[],
                    body: part,
                    limit: 1 << 20,
                },
                &sign,
            )?;
            if r.status / 100 != 2 {
                return Err(self.refusal("upload part of", key, &r));
            }
            etags.push(
                r.etag.ok_or_else(|| {
                    Error::Unavailable(format!("{key}: part {n} reply has no ETag"))
                })?,
            );
        }
        let mut headers = vec![];
        if mode == PutMode::CreateNew {
            headers.push(("if-none-match", "*".to_string()));
        }
        let complete = self.bucket.complete_multipart_upload(
            self.creds(),
            full,
            upload_id,
            etags.iter().map(String::as_str),
        );
        let body = complete.body();
        let sign = || {
            let mut a = self.bucket.complete_multipart_upload(
                self.creds(),
                full,
                upload_id,
                etags.iter().map(String::as_str),
            );
            for (k, v) in &headers {
                a.headers_mut().insert(*k, v.clone());
            }
            a.sign(SIGNATURE_TTL)
        };
        let r = self.request(
            Call {
                what: "complete multipart upload of",
                key,
                method: Method::Post,
                headers: &headers,
                body: body.as_bytes(),
                limit: 1 << 20,
            },
            &sign,
        )?;
        // CompleteMultipartUpload can fail with HTTP 200 and an <Error> body.
        if r.status == 200 && String::from_utf8_lossy(&r.body).contains("<Error>") {
            return Err(Error::Unavailable(format!(
                "{key}: {}",
                s3_error_summary(&r.body)
            )));
        }
        Ok(r)
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
            Call {
                what: "download",
                key: key.as_str(),
                method: Method::Get,
                headers: &[],
                body: &[],
                limit: 8 << 30,
            },
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
            Call {
                what: "read",
                key: key.as_str(),
                method: Method::Get,
                headers: &headers,
                body: &[],
                limit: len as u64 + 4096,
            },
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
        let full_prefix = self.full_key(prefix);
        let strip = if self.cfg.prefix.is_empty() {
            0
        } else {
            self.cfg.prefix.len() + 1
        };
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let mut seen = std::collections::HashSet::new();
        loop {
            let sign = || {
                let mut a: ListObjectsV2 = self.bucket.list_objects_v2(self.creds());
                a.with_prefix(full_prefix.as_str());
                if let Some(t) = &token {
                    a.with_continuation_token(t.as_str());
                }
                a.sign(SIGNATURE_TTL)
            };
            let r = self.request(
                Call {
                    what: "list",
                    key: prefix,
                    method: Method::Get,
                    headers: &[],
                    body: &[],
                    limit: 64 << 20,
                },
                &sign,
            )?;
            if r.status != 200 {
                return Err(self.refusal("list", prefix, &r));
            }
            let text = String::from_utf8_lossy(&r.body);
            // Parsed leniently with our own shape: stores differ in which optional fields
            // they send (s3s-fs omits ETag, which rusty-s3's parser requires).
            let page: ListPage = quick_xml::de::from_str(&text).map_err(|e| {
                Error::Unavailable(format!(
                    "unreadable listing of {}: {e}",
                    self.display_key(prefix)
                ))
            })?;
            for c in page.contents {
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

    fn delete(&self, key: &ObjectKey) -> Result<()> {
        let full = self.full_key(key.as_str());
        let sign = || {
            self.bucket
                .delete_object(self.creds(), &full)
                .sign(SIGNATURE_TTL)
        };
        let r = self.request(
            Call {
                what: "delete",
                key: key.as_str(),
                method: Method::Delete,
                headers: &[],
                body: &[],
                limit: 1 << 20,
            },
            &sign,
        )?;
        match r.status {
            200..=299 | 404 => Ok(()),
            _ => Err(self.refusal("delete", key.as_str(), &r)),
        }
    }
}

/// The part of a ListObjectsV2 reply pitrkit uses.
#[derive(serde::Deserialize)]
struct ListPage {
    #[serde(rename = "Contents", default)]
    contents: Vec<ListEntry>,
    #[serde(rename = "NextContinuationToken")]
    next_continuation_token: Option<String>,
    #[serde(rename = "IsTruncated")]
    is_truncated: Option<bool>,
}

#[derive(serde::Deserialize)]
struct ListEntry {
    #[serde(rename = "Key")]
    key: String,
    #[serde(rename = "Size")]
    size: u64,
    #[serde(rename = "LastModified")]
    last_modified: Option<String>,
}

/// Statuses that say "try again": throttling, server trouble, request timeouts.
fn is_transient_status(status: u16, body: &[u8]) -> bool {
    match status {
        408 | 429 | 500 | 502 | 503 | 504 => true,
        400 => matches!(xml_field(body, "Code").as_deref(), Some("RequestTimeout")),
        _ => false,
    }
}

fn describe_transport_error(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::Io(io) => format!("{io}"),
        other => format!("{other}"),
    }
}

/// Exponential backoff with full jitter: 100 ms doubling, capped at 2 s.
fn backoff(attempt: u32) -> Duration {
    let cap = 100u64.saturating_mul(1 << attempt.min(5)).min(2000);
    Duration::from_millis(fastrand::u64(cap / 2..=cap))
}

/// The text of `<Name>…</Name>` in an S3 XML reply.
fn xml_field(body: &[u8], name: &str) -> Option<String> {
    let s = std::str::from_utf8(body).ok()?;
    let open = format!("<{name}>");
    let start = s.find(&open)? + open.len();
    let end = s[start..].find(&format!("</{name}>"))? + start;
    Some(s[start..end].to_string())
}

/// After a listing page: the continuation token of the next page, or `None` at the end; an
/// error when the page does not prove where the listing stands (no `IsTruncated`, a
/// truncated page without a token, a token seen before).
fn next_token(
    truncated: Option<bool>,
    token: Option<String>,
    seen: &mut std::collections::HashSet<String>,
) -> std::result::Result<Option<String>, &'static str> {
    match (truncated, token) {
        (Some(false), _) => Ok(None),
        (Some(true), Some(t)) if !t.is_empty() => {
            if seen.insert(t.clone()) {
                Ok(Some(t))
            } else {
                Err("repeats a continuation token")
            }
        }
        (Some(true), _) => Err("is truncated but gives no continuation token"),
        (None, _) => Err("does not say whether it is truncated"),
    }
}

fn s3_error_summary(body: &[u8]) -> String {
    match (xml_field(body, "Code"), xml_field(body, "Message")) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c,
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn store_replies_never_panic(body in "\\PC{0,300}", wrapped in "[a-zA-Z<>/ ]{0,80}") {
            let xml = format!("<ListBucketResult>{wrapped}{body}</ListBucketResult>");
            let _ = quick_xml::de::from_str::<ListPage>(&xml);
            let _ = quick_xml::de::from_str::<ListPage>(&body);
            let _ = s3_error_summary(body.as_bytes());
            let _ = xml_field(xml.as_bytes(), "Code");
        }
    }

    use super::*;

    #[test]
    fn reads_listings_without_optional_fields() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Contents><Key>p/wal/x.zst</Key><LastModified>2026-11-26T03:01:02.000Z</LastModified><Size>12</Size></Contents><Contents><Key>p/y</Key><Size>3</Size><ETag>"e"</ETag></Contents><IsTruncated>true</IsTruncated><NextContinuationToken>tok</NextContinuationToken></ListBucketResult>"#;
        let page: ListPage = quick_xml::de::from_str(xml).unwrap();
        assert_eq!(page.contents.len(), 2);
        assert_eq!(
            (page.contents[0].key.as_str(), page.contents[0].size),
            ("p/wal/x.zst", 12)
        );
        assert!(
            page.contents[0]
                .last_modified
                .as_ref()
                .unwrap()
                .parse::<jiff::Timestamp>()
                .is_ok()
        );
        assert_eq!(page.next_continuation_token.as_deref(), Some("tok"));
        let empty: ListPage =
            quick_xml::de::from_str("<ListBucketResult><Name>b</Name></ListBucketResult>").unwrap();
        assert!(empty.contents.is_empty());
    }

    #[test]
    fn a_listing_must_prove_it_is_complete() {
        let mut seen = std::collections::HashSet::new();
        let tok = |s: &str| Some(s.to_string());
        assert_eq!(next_token(Some(true), tok("a"), &mut seen), Ok(tok("a")));
        assert_eq!(next_token(Some(true), tok("b"), &mut seen), Ok(tok("b")));
        assert!(next_token(Some(true), tok("a"), &mut seen).is_err());
        assert!(next_token(Some(true), None, &mut seen).is_err());
        assert!(next_token(Some(true), tok(""), &mut seen).is_err());
        assert!(next_token(None, None, &mut seen).is_err());
        assert_eq!(next_token(Some(false), tok("c"), &mut seen), Ok(None));
    }

    #[test]
    fn backoff_is_bounded() {
        for a in 1..20 {
            let b = backoff(a);
            assert!(b <= Duration::from_secs(2), "{b:?}");
        }
    }

    #[test]
    fn reads_s3_error_xml() {
        let body = b"<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>";
        assert_eq!(xml_field(body, "Code").as_deref(), Some("NoSuchBucket"));
        assert_eq!(
            s3_error_summary(body),
            "NoSuchBucket: The specified bucket does not exist"
        );
        assert!(is_transient_status(503, b""));
        assert!(!is_transient_status(403, b""));
    }

    #[test]
    fn unreachable_store_fails_fast() {
        // Port 9 on loopback has no listener: every attempt is refused at once.
        let store = S3Store::new(S3Config {
            bucket: "b".into(),
            prefix: "p".into(),
            endpoint: Url::parse("http://127.0.0.1:9").unwrap(),
            region: "us-east-1".into(),
            path_style: true,
            credentials: Some(Credentials::new("k", "s")),
            sse: None,
            retry: RetryPolicy {
                attempts: 3,
                max_elapsed: Duration::from_secs(5),
                timeout: Duration::from_secs(2),
            },
            multipart_threshold: 1 << 30,
            part_size: 8 << 20,
        })
        .unwrap();
        let t = Instant::now();
        let e = store.get(&ObjectKey::new("x").unwrap()).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(e.code(), crate::error::EXIT_UNAVAILABLE, "{e}");
        assert!(e.to_string().contains("3 attempts"), "{e}");
    }
}
