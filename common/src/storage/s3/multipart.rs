//! Objects larger than `multipart_threshold` go up in parts (S3 caps a single PUT at 5 GiB,
//! and a part retried costs one part, not the object). A create-only upload carries
//! `If-None-Match: *` on its completion, where S3 decides whether the name is free.

use rusty_s3::S3Action;
use rusty_s3::actions::CreateMultipartUpload;

use super::http::{Call, Method, Reply};
use super::reply::s3_error_summary;
use super::{S3Store, SIGNATURE_TTL};
use crate::error::{Error, Result};
use crate::storage::PutMode;

impl S3Store {
    pub(super) fn put_multipart(
        &self,
        full: &str,
        key: &str,
        data: &[u8],
        mode: PutMode,
    ) -> Result<Reply> {
        let headers = self.write_headers(key);
        let sign = || {
            let mut a = self.bucket.create_multipart_upload(self.creds(), full);
            for (k, v) in &headers {
                a.headers_mut().insert(*k, v.clone());
            }
            a.sign(SIGNATURE_TTL)
        };
        let r = self.request(
            Call::new("start multipart upload of", key, Method::Post).headers(&headers),
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
                Call::new("abort multipart upload of", key, Method::Delete),
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
                Call::new("upload part of", key, Method::Put).body(part),
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
            Call::new("complete multipart upload of", key, Method::Post)
                .headers(&headers)
                .body(body.as_bytes()),
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
