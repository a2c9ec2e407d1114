//! What S3 answers: listing pages, read leniently (stores differ in optional fields) but
//! required to prove they are complete, and error bodies turned into the error a user
//! should see. The test bodies are those of AWS's S3 API reference ("Error responses").

use super::S3Store;
use super::http::Reply;
use crate::error::Error;

/// The part of a ListObjectsV2 reply pitrkit uses.
#[derive(serde::Deserialize)]
pub(super) struct ListPage {
    #[serde(rename = "Contents", default)]
    pub(super) contents: Vec<ListEntry>,
    #[serde(rename = "NextContinuationToken")]
    pub(super) next_continuation_token: Option<String>,
    #[serde(rename = "IsTruncated")]
    pub(super) is_truncated: Option<bool>,
}

#[derive(serde::Deserialize)]
pub(super) struct ListEntry {
    #[serde(rename = "Key")]
    pub(super) key: String,
    #[serde(rename = "Size")]
    pub(super) size: u64,
    #[serde(rename = "LastModified")]
    pub(super) last_modified: Option<String>,
}

impl S3Store {
    /// Turns a non-success, non-transient reply into the error the user should see.
    pub(super) fn refusal(&self, what: &str, key: &str, r: &Reply) -> Error {
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
}

/// The text of `<Name>…</Name>` in an S3 XML reply.
pub(super) fn xml_field(body: &[u8], name: &str) -> Option<String> {
    let s = std::str::from_utf8(body).ok()?;
    let open = format!("<{name}>");
    let start = s.find(&open)? + open.len();
    let end = s[start..].find(&format!("</{name}>"))? + start;
    Some(s[start..end].to_string())
}

/// After a listing page: the continuation token of the next page, or `None` at the end; an
/// error when the page does not prove where the listing stands (no `IsTruncated`, a
/// truncated page without a token, a token seen before).
pub(super) fn next_token(
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

pub(super) fn s3_error_summary(body: &[u8]) -> String {
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
    fn reads_s3_error_xml() {
        let body = b"<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>";
        assert_eq!(xml_field(body, "Code").as_deref(), Some("NoSuchBucket"));
        assert_eq!(
            s3_error_summary(body),
            "NoSuchBucket: The specified bucket does not exist"
        );
    }

    /// AWS's documented error bodies, and what a user is told for each.
    #[test]
    fn documented_error_bodies_become_errors_that_say_what_to_do() {
        let reply = |status: u16, code: &str, message: &str| {
            Reply {
            status,
            body: format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><Resource>/b/p/x</Resource><RequestId>4442587FB7D0A2F9</RequestId></Error>"
            )
            .into_bytes(),
            etag: None,
        }
        };
        let with_keys = super::super::tests::store(
            "http://127.0.0.1:9",
            Some(rusty_s3::Credentials::new("k", "s")),
        );
        let anonymous = super::super::tests::store("http://127.0.0.1:9", None);

        let e = with_keys.refusal(
            "download",
            "x",
            &reply(404, "NoSuchBucket", "The specified bucket does not exist"),
        );
        assert_eq!(e.code(), crate::error::EXIT_DENIED);
        assert_eq!(
            e.to_string(),
            "repository refused access: download s3://b/p/x: bucket 'b' does not exist at http://127.0.0.1:9/"
        );

        let denied = reply(403, "AccessDenied", "Access Denied");
        let e = with_keys.refusal("download", "x", &denied);
        assert_eq!(e.code(), crate::error::EXIT_DENIED);
        let text = e.to_string();
        assert!(
            text.starts_with(
                "repository refused access: download s3://b/p/x: HTTP 403 AccessDenied: Access Denied (check the access key"
            ),
            "{text}"
        );
        assert!(
            text.contains("s3:ListBucket"),
            "a 403 on a read names the permission that tells missing from forbidden: {text}"
        );
        let e = anonymous.refusal("upload", "x", &denied);
        assert!(
            e.to_string().ends_with(
                "(no credentials given: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            ),
            "{e}"
        );

        let e = with_keys.refusal(
            "upload",
            "x",
            &reply(
                400,
                "EntityTooLarge",
                "Your proposed upload exceeds the maximum allowed object size.",
            ),
        );
        assert_eq!(
            e.to_string(),
            "repository refused access: upload s3://b/p/x: HTTP 400 EntityTooLarge: Your proposed upload exceeds the maximum allowed object size."
        );

        // An error body without the XML a store should send still names the status.
        let e = with_keys.refusal(
            "list",
            "wal/",
            &Reply {
                status: 409,
                body: b"conflict".to_vec(),
                etag: None,
            },
        );
        assert_eq!(
            e.to_string(),
            "repository refused access: list s3://b/p/wal/: HTTP 409 "
        );
    }
}
