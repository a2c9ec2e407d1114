//! A misbehaving store in front of a real one: an HTTP proxy on loopback that forwards each
//! request to s3s-fs (one request per connection) and changes its replies as stores that
//! exist do: 403 AccessDenied where the store says 404 NoSuchKey (AWS, for a bucket policy
//! without s3:ListBucket), and success where it says 412 (a store that ignores
//! `If-None-Match: *`, as a client sees it: a create-only write never fails).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

/// What the proxy changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// 404 NoSuchKey becomes 403 AccessDenied.
    ForbidMissing,
    /// 412 Precondition Failed becomes 200 OK.
    IgnorePreconditions,
    /// The first GET of each object answers 404 NoSuchKey (a store whose reads lag its
    /// writes, as S3 did before 2020 and some S3-compatible stores still do).
    StaleFirstRead,
    /// Request and reply bodies move at this many bytes per second (a slow link).
    Throttle(usize),
}

pub struct Proxy {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

/// Objects a [`Misbehaviour::StaleFirstRead`] proxy has answered for once.
type Seen = Arc<std::sync::Mutex<std::collections::HashSet<String>>>;

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream` (`127.0.0.1:port`).
    pub fn start(upstream: u16, how: &[Misbehaviour]) -> Proxy {
        let how = how.to_vec();
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("proxy port");
        let port = listener.local_addr().expect("proxy address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let seen = Seen::default();
        thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(client) = client {
                    let how = how.clone();
                    let seen = seen.clone();
                    thread::spawn(move || {
                        let _ = forward(client, upstream, &how, &seen);
                    });
                }
            }
        });
        Proxy { port, stop }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One request: its head (with `Connection: close`) and body go upstream; the whole reply
/// comes back, changed as asked.
fn forward(
    client: TcpStream,
    upstream: u16,
    how: &[Misbehaviour],
    seen: &Seen,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut length = 0usize;
    let mut first = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("connection:") {
            continue;
        }
        if first.is_empty() {
            first = line.clone();
        }
        head.extend_from_slice(line.as_bytes());
    }
    if how.contains(&Misbehaviour::StaleFirstRead) && first.starts_with("GET ") {
        let object = first
            .split([' ', '?'])
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let fresh = seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(object);
        if fresh {
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NoSuchKey</Code>\
                        <Message>The specified key does not exist.</Message></Error>";
            let mut client = client;
            return client.write_all(
                format!(
                    "HTTP/1.1 404 Not Found\r\nContent-Type: application/xml\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    }
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    let rate = how.iter().find_map(|m| match m {
        Misbehaviour::Throttle(r) => Some(*r),
        _ => None,
    });
    let mut body = vec![0; length];
    match rate {
        Some(rate) => {
            for piece in body.chunks_mut(PIECE) {
                reader.read_exact(piece)?;
                thread::sleep(pace(piece.len(), rate));
            }
        }
        None => reader.read_exact(&mut body)?,
    }
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.write_all(&head)?;
    up.write_all(&body)?;
    let mut reply = Vec::new();
    up.read_to_end(&mut reply)?;
    for m in how {
        reply = match m {
            Misbehaviour::ForbidMissing => forbid_missing(reply),
            Misbehaviour::IgnorePreconditions => ignore_precondition(reply),
            Misbehaviour::StaleFirstRead | Misbehaviour::Throttle(_) => reply,
        };
    }
    let mut client = client;
    match rate {
        Some(rate) => {
            for piece in reply.chunks(PIECE) {
                client.write_all(piece)?;
                thread::sleep(pace(piece.len(), rate));
            }
        }
        None => client.write_all(&reply)?,
    }
    client.flush()
}

/// Bytes moved between pauses of a throttled body.
const PIECE: usize = 16 << 10;

/// How long `bytes` take at `rate` bytes per second.
fn pace(bytes: usize, rate: usize) -> std::time::Duration {
    std::time::Duration::from_secs_f64(bytes as f64 / rate.max(1) as f64)
}

/// A 404 NoSuchKey reply rewritten as 403 AccessDenied.
fn forbid_missing(reply: Vec<u8>) -> Vec<u8> {
    let text = String::from_utf8_lossy(&reply);
    if !(text.starts_with("HTTP/1.1 404") && text.contains("NoSuchKey")) {
        return reply;
    }
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code>\
                <Message>Access Denied</Message></Error>";
    replace(&text, "403 Forbidden", body).unwrap_or(reply)
}

/// A 412 reply to a create-only write rewritten as 200 OK, as if the write had happened.
fn ignore_precondition(reply: Vec<u8>) -> Vec<u8> {
    let text = String::from_utf8_lossy(&reply);
    if !text.starts_with("HTTP/1.1 412") {
        return reply;
    }
    replace(&text, "200 OK", "").unwrap_or(reply)
}

/// The reply with another status and body, its other headers kept.
fn replace(text: &str, status: &str, body: &str) -> Option<Vec<u8>> {
    let split = text.find("\r\n\r\n")?;
    let head: String = text[..split]
        .lines()
        .skip(1)
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            !l.starts_with("content-length:") && !l.starts_with("transfer-encoding:")
        })
        .map(|l| format!("{l}\r\n"))
        .collect();
    Some(
        format!(
            "HTTP/1.1 {status}\r\n{head}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}
