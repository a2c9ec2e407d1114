//! A misbehaving store in front of a real one: an HTTP proxy on loopback that forwards each
//! request to s3s-fs (one request per connection) and changes what a real store might
//! change — today, answering 403 AccessDenied where the store says 404 NoSuchKey, as AWS
//! does for a bucket policy without s3:ListBucket.

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
}

pub struct Proxy {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream` (`127.0.0.1:port`).
    pub fn start(upstream: u16, how: Misbehaviour) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("proxy port");
        let port = listener.local_addr().expect("proxy address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(client) = client {
                    thread::spawn(move || {
                        let _ = forward(client, upstream, how);
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
fn forward(client: TcpStream, upstream: u16, how: Misbehaviour) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut length = 0usize;
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
        head.extend_from_slice(line.as_bytes());
    }
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.write_all(&head)?;
    up.write_all(&body)?;
    let mut reply = Vec::new();
    up.read_to_end(&mut reply)?;
    let reply = match how {
        Misbehaviour::ForbidMissing => forbid_missing(reply),
    };
    let mut client = client;
    client.write_all(&reply)?;
    client.flush()
}

/// A 404 NoSuchKey reply rewritten as 403 AccessDenied, with a body of the same length.
fn forbid_missing(reply: Vec<u8>) -> Vec<u8> {
    let text = String::from_utf8_lossy(&reply);
    if !(text.starts_with("HTTP/1.1 404") && text.contains("NoSuchKey")) {
        return reply;
    }
    let Some(split) = text.find("\r\n\r\n") else {
        return reply;
    };
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code>\
                <Message>Access Denied</Message></Error>";
    let head: String = text[..split]
        .lines()
        .skip(1)
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            !l.starts_with("content-length:") && !l.starts_with("transfer-encoding:")
        })
        .map(|l| format!("{l}\r\n"))
        .collect();
    format!(
        "HTTP/1.1 403 Forbidden\r\n{head}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
