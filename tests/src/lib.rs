//! Harness for the integration tests: real PostgreSQL clusters started as an unprivileged
//! user on their own loopback port, a real S3 server (s3s-fs) per test, and the pitrkit
//! binaries copied where that user can run them. Failures print the command, its stdout and
//! stderr, and the server log.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// PostgreSQL's server binaries (`PITRKIT_PG_BIN` overrides).
pub mod proxy;

pub fn pg_bin(tool: &str) -> PathBuf {
    let dir =
        std::env::var("PITRKIT_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    let p = Path::new(&dir).join(tool);
    assert!(
        p.exists(),
        "{} is missing: install postgresql-15 (apt-get install -y postgresql-15) or set PITRKIT_PG_BIN",
        p.display()
    );
    p
}

/// The PostgreSQL major whose server runs when a test does not name one: Debian's.
pub const DEFAULT_MAJOR: u32 = 15;

/// Server binaries (`initdb`, `pg_ctl`, `postgres`) of PostgreSQL `major`: Debian's for 15
/// (or `PITRKIT_PG_BIN`), else `PITRKIT_PG<major>_BIN`, else where `scripts/install-deps.sh`
/// puts the npm registry's builds, `/opt/pitrkit-pg/<major>/bin`. Client programs (psql,
/// pgbench) always come from [`pg_bin`]: they talk to every supported server.
pub fn server_bin_dir(major: u32) -> PathBuf {
    if major == DEFAULT_MAJOR {
        return pg_bin("postgres").parent().expect("bin dir").to_path_buf();
    }
    let dir = std::env::var(format!("PITRKIT_PG{major}_BIN"))
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(format!("/opt/pitrkit-pg/{major}/bin")));
    assert!(
        dir.join("postgres").exists(),
        "PostgreSQL {major} is missing in {}: run scripts/install-deps.sh (it installs every \
         supported major) or set PITRKIT_PG{major}_BIN",
        dir.display()
    );
    dir
}

/// The pitrkit tools the tests run.
pub const TOOLS: [&str; 6] = [
    "wal-push",
    "wal-fetch",
    "bb-push",
    "bb-restore",
    "pitr-check",
    "pitr-copy",
];

/// The built pitrkit binaries: `PITRKIT_BIN_DIR`, else `target/debug` of this workspace,
/// whose binaries must be newer than every source they were built from (a stale binary
/// would test old code silently).
pub fn pitrkit_bin_dir() -> PathBuf {
    let explicit = std::env::var("PITRKIT_BIN_DIR").map(PathBuf::from).ok();
    let dir = explicit
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug"));
    assert!(
        TOOLS.iter().all(|t| dir.join(t).exists()),
        "pitrkit binaries not found in {}: run `cargo build --workspace --bins` first",
        dir.display()
    );
    if explicit.is_none() {
        for t in TOOLS {
            if let Some(source) = newer_source(&dir, t) {
                panic!(
                    "{} is older than {}: run `cargo build --workspace --bins` first",
                    dir.join(t).display(),
                    source.display()
                );
            }
        }
    }
    dir
}

/// A source file `tool` was built from (cargo's `<tool>.d` lists them) that changed after
/// the binary was linked.
fn newer_source(dir: &Path, tool: &str) -> Option<PathBuf> {
    let built = fs::metadata(dir.join(tool))
        .and_then(|m| m.modified())
        .ok()?;
    let deps = fs::read_to_string(dir.join(format!("{tool}.d"))).ok()?;
    let (_, sources) = deps.lines().next()?.split_once(": ")?;
    // Paths are space-separated, with `\ ` for a space inside one.
    sources
        .replace("\\ ", "\0")
        .split(' ')
        .map(|p| PathBuf::from(p.replace('\0', " ")))
        .find(|p| {
            fs::metadata(p)
                .and_then(|m| m.modified())
                .is_ok_and(|m| m > built)
        })
}

fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// A command run as the cluster's OS user (`postgres` when the tests run as root, since
/// PostgreSQL refuses to run as root), with a clean environment.
pub fn as_pg(program: &Path) -> Command {
    let mut c = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    c.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .env("LC_ALL", "C.UTF-8")
        .env("TZ", "UTC");
    c
}

/// A finished command with everything needed to explain a failure.
pub struct Output {
    pub cmd: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub stdout_bytes: Vec<u8>,
}

impl Output {
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit status\n{self}");
        self
    }
    pub fn assert_ok(&self) -> &Self {
        self.assert_code(0)
    }
    pub fn stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}\n{self}"
        );
        self
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "$ {}\nexit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.cmd, self.code, self.stdout, self.stderr
        )
    }
}

pub fn run(mut c: Command) -> Output {
    run_with_stdin(&mut c, None)
}

pub fn run_with_stdin(c: &mut Command, stdin: Option<&[u8]>) -> Output {
    let cmd = format!("{c:?}");
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    if let Some(data) = stdin {
        use std::io::Write;
        let mut sin = child.stdin.take().expect("stdin");
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = sin.write_all(&data);
        });
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    Output {
        cmd,
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        stdout_bytes: out.stdout,
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The digest wal-push records of a file in a plain repository (BLAKE3), in hex.
pub fn blake3_hex(data: &[u8]) -> String {
    pitrkit::repo::object::ContentDigest(pitrkit::repo::crypto::Digester::Blake3.of(data))
        .to_string()
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A fresh directory per test, owned by the cluster's OS user, holding a copy of the
/// pitrkit binaries that user can execute.
pub struct Sandbox {
    /// Taken (kept on disk) when a failing test drops it.
    dir: Option<tempfile::TempDir>,
}

impl Drop for Sandbox {
    /// A failing test leaves its sandbox behind, says where, and prints the end of every log
    /// in it (PostgreSQL's, s3s-fs's): what is needed to see why without running it again.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Some(dir) = self.dir.take() else {
            return;
        };
        let path = dir.keep();
        eprintln!("--- the sandbox is kept: {}", path.display());
        let mut logs: Vec<PathBuf> = fs::read_dir(&path)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        for log in logs {
            let text = fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("--- last lines of {}", log.display());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

impl Sandbox {
    pub fn new(name: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("pitrkit-{name}-"))
            .tempdir_in("/tmp")
            .expect("tempdir");
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).expect("bin dir");
        for tool in TOOLS {
            fs::copy(pitrkit_bin_dir().join(tool), bin.join(tool)).expect("copy binary");
        }
        let sb = Sandbox { dir: Some(dir) };
        sb.chown_to_pg(sb.path());
        // The temp dir is created 0700; the cluster user and the test user both work inside.
        let _ = Command::new("chmod").arg("0755").arg(sb.path()).status();
        sb
    }

    pub fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .expect("the sandbox exists until dropped")
    }

    pub fn bin(&self, tool: &str) -> PathBuf {
        self.path().join("bin").join(tool)
    }

    /// Hands a path to the cluster's OS user (a no-op when not running as root).
    pub fn chown_to_pg(&self, p: &Path) {
        if is_root() {
            let st = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(p)
                .status()
                .expect("chown");
            assert!(st.success(), "chown {}", p.display());
        }
    }

    /// A pitrkit tool run as the test user, with a clean environment.
    pub fn tool(&self, tool: &str) -> Command {
        let mut c = Command::new(self.bin(tool));
        c.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .current_dir(self.path());
        c
    }
}

/// One s3s-fs server on a free loopback port with its own data directory.
pub struct S3Server {
    pub port: u16,
    pub data: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    /// Whether the log names every request (see [`S3Server::log_requests`]).
    requests: bool,
}

pub const S3_KEY: &str = "pitrkit-test-key";
pub const S3_SECRET: &str = "pitrkit-test-secret";

pub fn s3s_fs_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PITRKIT_S3S_FS") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    for cand in [
        format!("{home}/.cargo/bin/s3s-fs"),
        "/usr/local/bin/s3s-fs".into(),
    ] {
        if Path::new(&cand).exists() {
            return PathBuf::from(cand);
        }
    }
    panic!(
        "s3s-fs not found: install it with `cargo install s3s-fs@0.14.1 --features binary` (see .ci/run) or set PITRKIT_S3S_FS"
    );
}

impl S3Server {
    pub fn start(sb: &Sandbox) -> Self {
        let data = sb.path().join("s3data");
        fs::create_dir_all(&data).expect("s3 data dir");
        let log = sb.path().join("s3s-fs.log");
        let mut s = S3Server {
            port: free_port(),
            data,
            child: None,
            log,
            requests: false,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let logf = fs::File::create(&self.log).expect("s3 log");
        let mut c = Command::new(s3s_fs_bin());
        c.args([
            "--host",
            "127.0.0.1",
            "--port",
            &self.port.to_string(),
            "--access-key",
            S3_KEY,
            "--secret-key",
            S3_SECRET,
        ])
        .arg(&self.data)
        .stdout(logf.try_clone().expect("log"))
        .stderr(logf);
        if self.requests {
            c.env("RUST_LOG", "s3s=debug");
        }
        let child = c.spawn().expect("start s3s-fs");
        self.child = Some(child);
        let port = self.port;
        wait_for("s3s-fs to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// s3s-fs keeps each bucket as a directory under its data directory.
    pub fn create_bucket(&self, name: &str) {
        fs::create_dir_all(self.data.join(name)).expect("bucket dir");
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Restarts the server logging every request it handles (by S3 operation name), for
    /// tests that check which requests a tool made.
    pub fn log_requests(&mut self) {
        self.requests = true;
        self.restart();
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// moto's S3 server (`scripts/install-deps.sh --s3` installs it in /opt/pitrkit-moto), for
/// what s3s-fs does not keep: storage classes. Requests must be signed; any key is accepted.
pub struct MotoServer {
    pub port: u16,
    child: Child,
}

pub fn moto_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PITRKIT_MOTO") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from("/opt/pitrkit-moto/bin/moto_server");
    if Path::new("/opt/pitrkit-moto/.installed").exists() {
        return venv;
    }
    let on_path = Command::new("sh")
        .args(["-c", "command -v moto_server"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    on_path.unwrap_or_else(|| {
        panic!("moto_server not found: run scripts/install-deps.sh --s3 (or set PITRKIT_MOTO)")
    })
}

impl MotoServer {
    pub fn start(sb: &Sandbox) -> Self {
        let port = free_port();
        let log = fs::File::create(sb.path().join("moto.log")).expect("moto log");
        let child = Command::new(moto_bin())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start moto_server");
        wait_for("moto_server to listen", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        MotoServer { port, child }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn bucket(&self, name: &str) -> rusty_s3::Bucket {
        rusty_s3::Bucket::new(
            url::Url::parse(&self.endpoint()).expect("endpoint"),
            rusty_s3::UrlStyle::Path,
            name.to_string(),
            "us-east-1".to_string(),
        )
        .expect("bucket")
    }

    pub fn create_bucket(&self, name: &str) {
        use rusty_s3::S3Action;
        let creds = rusty_s3::Credentials::new(S3_KEY, S3_SECRET);
        let url = self
            .bucket(name)
            .create_bucket(&creds)
            .sign(Duration::from_secs(600));
        ureq::put(url.as_str()).send_empty().expect("create bucket");
    }

    /// The storage class the server reports for `key` (`x-amz-storage-class` of a HEAD;
    /// `None` for STANDARD, which S3 does not name).
    pub fn storage_class(&self, bucket: &str, key: &str) -> Option<String> {
        use rusty_s3::S3Action;
        let creds = rusty_s3::Credentials::new(S3_KEY, S3_SECRET);
        let url = self
            .bucket(bucket)
            .head_object(Some(&creds), key)
            .sign(Duration::from_secs(600));
        let reply = ureq::head(url.as_str()).call().expect("HEAD");
        reply
            .headers()
            .get("x-amz-storage-class")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which backend a repository test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Fs,
    S3,
}

/// A repository on one backend, with a view of the stored files for tests to inspect or
/// damage "at rest".
pub struct TestRepo {
    pub backend: Backend,
    pub url: String,
    /// Where the objects are on disk (the repository directory, or the bucket prefix
    /// inside the s3s-fs data directory).
    pub files: PathBuf,
    /// A config file with the repository and, for S3, endpoint and credentials.
    pub config: PathBuf,
    pub s3: Option<S3Server>,
}

impl TestRepo {
    pub fn new(sb: &Sandbox, backend: Backend) -> Self {
        let config = sb.path().join("pitrkit.toml");
        match backend {
            Backend::Fs => {
                let files = sb.path().join("repo");
                let url = files.display().to_string();
                // The archiver (as the cluster's user) and the tools (as the test user)
                // share it, as a DBA would set up /var/lib/pitrkit for postgres.
                fs::create_dir_all(&files).expect("repo dir");
                sb.chown_to_pg(&files);
                fs::write(&config, format!("repo = '{url}'\n")).expect("config");
                TestRepo {
                    backend,
                    url,
                    files,
                    config,
                    s3: None,
                }
            }
            Backend::S3 => {
                let s3 = S3Server::start(sb);
                s3.create_bucket("pitr-test");
                let url = "s3://pitr-test/cluster-a".to_string();
                fs::write(
                    &config,
                    format!(
                        "repo = '{url}'\ns3_endpoint = '{}'\ns3_region = 'us-east-1'\n\
                         s3_access_key_id = '{S3_KEY}'\ns3_secret_access_key = '{S3_SECRET}'\n\
                         retries = 3\nretry_time = '3s'\ntimeout = '3s'\n",
                        s3.endpoint()
                    ),
                )
                .expect("config");
                let files = s3.data.join("pitr-test/cluster-a");
                TestRepo {
                    backend,
                    url,
                    files,
                    config,
                    s3: Some(s3),
                }
            }
        }
    }

    /// postgresql.conf lines that make a cluster archive into this repository through the
    /// sandbox's wal-push, as PostgreSQL calls it.
    pub fn archiving_conf(&self, sb: &Sandbox) -> String {
        format!(
            "archive_mode = on\narchive_command = '{} --config {} %p'\n",
            sb.bin("wal-push").display(),
            self.config.display()
        )
    }

    /// The restore_command that recovers from this repository through the sandbox's wal-fetch.
    pub fn restore_command(&self, sb: &Sandbox) -> String {
        format!(
            "{} --config {} %f %p",
            sb.bin("wal-fetch").display(),
            self.config.display()
        )
    }

    /// The repository arguments for a tool: everything through the config file.
    pub fn args(&self) -> Vec<String> {
        vec!["--config".into(), self.config.display().to_string()]
    }

    pub fn object_path(&self, key: &str) -> PathBuf {
        self.files.join(key)
    }

    /// Every stored file under the repository, with its sha256: compared before and after
    /// a refused operation to prove nothing changed.
    pub fn snapshot(&self) -> Vec<(String, String)> {
        let mut out = vec![];
        walk(&self.files, &self.files, &mut out);
        out.sort();
        out
    }

    pub fn log(&self) -> String {
        self.s3.as_ref().map(S3Server::log).unwrap_or_default()
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(root, &p, out);
        } else {
            let rel = p.strip_prefix(root).unwrap_or(&p).display().to_string();
            out.push((rel, sha256_hex(&fs::read(&p).unwrap_or_default())));
        }
    }
}

/// A PostgreSQL cluster in the sandbox, on its own loopback port.
pub struct Pg {
    /// The server binaries this cluster runs with.
    pub bin: PathBuf,
    pub data: PathBuf,
    pub port: u16,
    pub sock: PathBuf,
    pub log: PathBuf,
    started: bool,
}

impl Pg {
    /// `initdb` into `<sandbox>/<name>`.
    pub fn init(sb: &Sandbox, name: &str) -> Self {
        Self::init_major(sb, name, DEFAULT_MAJOR)
    }

    /// `initdb` of PostgreSQL `major` into `<sandbox>/<name>`.
    pub fn init_major(sb: &Sandbox, name: &str, major: u32) -> Self {
        let data = sb.path().join(name);
        let bin = server_bin_dir(major);
        let mut c = as_pg(&bin.join("initdb"));
        c.args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "--data-checksums",
            "-D",
        ])
        .arg(&data);
        run(c).assert_ok();
        let pg = Self::at_major(sb, name, major);
        pg.configure("");
        pg
    }

    /// A data directory made some other way (a base backup), not yet configured.
    pub fn at(sb: &Sandbox, name: &str) -> Self {
        Self::at_major(sb, name, DEFAULT_MAJOR)
    }

    /// [`Pg::at`] for a data directory of PostgreSQL `major`.
    pub fn at_major(sb: &Sandbox, name: &str, major: u32) -> Self {
        let data = sb.path().join(name);
        let sock = sb.path().join(format!("sock-{name}"));
        fs::create_dir_all(&sock).expect("socket dir");
        sb.chown_to_pg(&sock);
        Pg {
            bin: server_bin_dir(major),
            log: sb.path().join(format!("{name}.log")),
            data,
            port: free_port(),
            sock,
            started: false,
        }
    }

    /// Appends settings, always (re)setting the port and socket so a copy gets its own.
    pub fn configure(&self, extra: &str) {
        let conf = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nshared_buffers = 32MB\nmax_wal_senders = 4\nwal_level = replica\n{extra}\n",
            self.port,
            self.sock.display()
        );
        let path = self.data.join("postgresql.conf");
        let mut text = fs::read_to_string(&path).expect("postgresql.conf");
        text.push_str(&conf);
        fs::write(&path, text).expect("postgresql.conf");
    }

    pub fn start(&mut self) {
        let mut c = as_pg(&self.bin.join("pg_ctl"));
        c.args(["-w", "-t", "120", "-l"])
            .arg(&self.log)
            .arg("-D")
            .arg(&self.data)
            .arg("start");
        let out = run(c);
        assert_eq!(
            out.code,
            0,
            "pg_ctl start failed\n{out}\n--- server log\n{}",
            self.log_text()
        );
        self.started = true;
    }

    /// Starts a cluster that is recovering: pg_ctl returns before recovery has finished.
    pub fn start_recovery(&mut self) {
        let mut c = as_pg(&self.bin.join("pg_ctl"));
        c.args(["-W", "-l"])
            .arg(&self.log)
            .arg("-D")
            .arg(&self.data)
            .arg("start");
        run(c).assert_ok();
        self.started = true;
    }

    pub fn stop(&mut self) {
        if self.started {
            let mut c = as_pg(&self.bin.join("pg_ctl"));
            c.args(["-w", "-t", "60", "-m", "fast", "-D"])
                .arg(&self.data)
                .arg("stop");
            let _ = run(c);
            self.started = false;
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn psql_cmd(&self) -> Command {
        let mut c = as_pg(&pg_bin("psql"));
        c.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.sock)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ]);
        c
    }

    /// Runs SQL and returns its unaligned, tuples-only output, trimmed.
    pub fn sql(&self, sql: &str) -> String {
        let mut c = self.psql_cmd();
        c.args(["-c", sql]);
        let out = run(c);
        assert_eq!(
            out.code,
            0,
            "SQL failed: {sql}\n{out}\n--- server log\n{}",
            self.log_text()
        );
        out.stdout.trim().to_string()
    }

    /// Runs SQL, returning None on error (the server may still be starting).
    pub fn try_sql(&self, sql: &str) -> Option<String> {
        let mut c = self.psql_cmd();
        c.args(["-c", sql]);
        let out = run(c);
        (out.code == 0).then(|| out.stdout.trim().to_string())
    }

    /// Runs a PostgreSQL client program (pgbench, pg_basebackup…) against this cluster.
    pub fn client(&self, tool: &str, args: &[&str]) -> Output {
        let mut c = as_pg(&pg_bin(tool));
        c.arg("-h")
            .arg(&self.sock)
            .args(["-p", &self.port.to_string(), "-U", "postgres"])
            .args(args);
        run(c)
    }

    /// Switches to a new WAL segment and waits until the archiver has archived the old one.
    pub fn switch_and_wait_archived(&self) -> String {
        let seg = self.sql("select pg_walfile_name(pg_current_wal_lsn())");
        self.sql("select pg_switch_wal()");
        self.wait_archived(&seg);
        seg
    }

    /// Waits until recovery has ended and the cluster accepts writes, showing the server
    /// log if it does not.
    pub fn wait_promoted(&self, timeout: Duration) {
        let start = Instant::now();
        while self.try_sql("select pg_is_in_recovery()").as_deref() != Some("f") {
            let running = self.data.join("postmaster.pid").exists();
            assert!(
                running || start.elapsed() < Duration::from_secs(5),
                "the server stopped\n--- server log\n{}",
                self.log_text()
            );
            assert!(
                start.elapsed() < timeout,
                "recovery did not end within {timeout:?}\n--- server log\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn wait_archived(&self, segment: &str) {
        wait_for(
            &format!("{segment} to be archived"),
            Duration::from_secs(120),
            || {
                let last = self.sql("select coalesce(last_archived_wal, '') from pg_stat_archiver");
                !last.is_empty() && last.as_str() >= segment
            },
        );
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if self.started {
            let mut c = as_pg(&self.bin.join("pg_ctl"));
            c.args(["-w", "-m", "immediate", "-D"])
                .arg(&self.data)
                .arg("stop");
            let _ = run(c);
        }
    }
}

/// A primary archiving into a repository: what most tests start from.
pub struct Site {
    pub sb: Sandbox,
    pub repo: TestRepo,
    pub primary: Pg,
    /// The PostgreSQL major the primary (and every restore of it) runs.
    pub major: u32,
}

pub fn site(name: &str, backend: Backend, extra_conf: &str) -> Site {
    site_with(name, backend, extra_conf, "")
}

/// A site whose pitrkit config file gets `config_lines` too (encryption keys…) before the
/// primary starts archiving with it.
pub fn site_with(name: &str, backend: Backend, extra_conf: &str, config_lines: &str) -> Site {
    site_major(name, backend, DEFAULT_MAJOR, extra_conf, config_lines)
}

/// [`site_with`] on PostgreSQL `major`.
pub fn site_major(
    name: &str,
    backend: Backend,
    major: u32,
    extra_conf: &str,
    config_lines: &str,
) -> Site {
    let sb = Sandbox::new(&format!("{name}-{backend:?}").to_lowercase());
    let repo = TestRepo::new(&sb, backend);
    let mut config = fs::read_to_string(&repo.config).expect("config");
    config.push_str(config_lines);
    fs::write(&repo.config, config).expect("config");
    let mut primary = Pg::init_major(&sb, "primary", major);
    primary.configure(&format!("{}{extra_conf}", repo.archiving_conf(&sb)));
    primary.start();
    Site {
        sb,
        repo,
        primary,
        major,
    }
}

impl Site {
    pub fn tool(&self, tool: &str, args: &[&str]) -> Output {
        let mut c = self.sb.tool(tool);
        c.args(self.repo.args()).args(args);
        run(c)
    }

    pub fn backup(&self) -> serde_json::Value {
        let out = self.tool(
            "bb-push",
            &["--pgdata", self.primary.data.to_str().expect("UTF-8 path")],
        );
        out.assert_ok();
        serde_json::from_str(out.stdout.trim()).expect("bb-push prints its summary as JSON")
    }

    /// Restores into a fresh directory, starts it, and waits until recovery has ended.
    pub fn restore(&self, name: &str, args: &[&str]) -> Pg {
        let dir = self.sb.path().join(name);
        let mut all = vec!["--pgdata", dir.to_str().expect("UTF-8 path")];
        all.extend_from_slice(args);
        let out = self.tool("bb-restore", &all);
        out.assert_ok();
        let mut pg = Pg::at_major(&self.sb, name, self.major);
        pg.configure("");
        pg.start_recovery();
        pg.wait_promoted(Duration::from_secs(120));
        pg
    }

    /// Makes everything written so far reach the archive.
    pub fn archive_now(&self) {
        self.primary.switch_and_wait_archived();
    }
}

/// The cluster's clock, as a UTC timestamp a recovery target accepts.
pub fn now(pg: &Pg) -> String {
    pg.sql(
        "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
}

/// A TCP proxy on 127.0.0.1 that delays every byte by half a round trip in each direction,
/// as an object store in another zone or region would: tests run recovery "far" from its
/// store. Order is kept, throughput is not limited, a close reaches the other side after
/// the data before it.
pub struct LatencyProxy {
    pub port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl LatencyProxy {
    pub fn start(upstream: u16, rtt: Duration) -> Self {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy port");
        let port = listener.local_addr().expect("proxy addr").port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                std::thread::spawn(move || {
                    let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                        return;
                    };
                    let half = rtt / 2;
                    std::thread::spawn(move || delayed_pump(c2, s2, half));
                    delayed_pump(server, client, half);
                });
            }
        });
        LatencyProxy { port, stop }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies `from` to `to`, each chunk written `delay` after it was read.
fn delayed_pump(mut from: std::net::TcpStream, mut to: std::net::TcpStream, delay: Duration) {
    use std::io::{Read, Write};
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
    let writer = std::thread::spawn(move || {
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx
                    .send((Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.join();
}
