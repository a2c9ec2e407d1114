//! One S3 request on the wire: sent with `ureq`, signed afresh for each attempt, retried
//! while the store's answer says a retry can help, within the bounds of [`RetryPolicy`].

use std::time::{Duration, Instant};

use url::Url;

use super::S3Store;
use super::reply::{s3_error_summary, xml_field};
use crate::error::{Error, Result};

/// The largest reply body read for a request that expects no data (an XML status).
const SMALL_REPLY: u64 = 1 << 20;

/// What came back: the status, the body (bounded by the call's limit) and the ETag.
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) body: Vec<u8>,
    pub(super) etag: Option<String>,
}

/// One logical request: what it is for (for messages), and what to send.
pub(super) struct Call<'a> {
    what: &'a str,
    key: &'a str,
    method: Method,
    headers: &'a [(&'a str, String)],
    body: &'a [u8],
    limit: u64,
}

pub(super) enum Method {
    Get,
    Put,
    Post,
    Delete,
}

impl<'a> Call<'a> {
    /// A request without headers or body, whose reply is a small XML document.
    pub(super) fn new(what: &'a str, key: &'a str, method: Method) -> Self {
        Call {
            what,
            key,
            method,
            headers: &[],
            body: &[],
            limit: SMALL_REPLY,
        }
    }

    pub(super) fn headers(mut self, headers: &'a [(&'a str, String)]) -> Self {
        self.headers = headers;
        self
    }

    pub(super) fn body(mut self, body: &'a [u8]) -> Self {
        self.body = body;
        self
    }

    /// The largest reply body accepted (the object, for a download).
    pub(super) fn limit(mut self, limit: u64) -> Self {
        self.limit = limit;
        self
    }
}

impl S3Store {
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
    pub(super) fn request(&self, call: Call<'_>, sign: &dyn Fn() -> Url) -> Result<Reply> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded() {
        for a in 1..20 {
            let b = backoff(a);
            assert!(b <= Duration::from_secs(2), "{b:?}");
        }
    }

    #[test]
    fn retries_what_a_retry_can_fix() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(is_transient_status(s, b""), "{s}");
        }
        for s in [200, 204, 301, 403, 404, 409, 412, 501] {
            assert!(!is_transient_status(s, b""), "{s}");
        }
        let timeout = b"<Error><Code>RequestTimeout</Code><Message>Your socket connection to the server was not read from or written to within the timeout period.</Message></Error>";
        assert!(is_transient_status(400, timeout));
        let bad_digest = b"<Error><Code>BadDigest</Code><Message>The Content-MD5 you specified did not match what we received.</Message></Error>";
        assert!(!is_transient_status(400, bad_digest));
    }
}
