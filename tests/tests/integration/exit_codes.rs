//! One test per row of the exit-status table in README.md, each on both backends, and each
//! refusal checked to leave the repository exactly as it was.

#![allow(clippy::unwrap_used)] // tests: a panic with its message is the failure report

use std::fs;
use std::path::PathBuf;

use pitrkit_tests::{Backend, Output, Pg, Sandbox, TestRepo, run, run_with_stdin};

const BACKENDS: [Backend; 2] = [Backend::Fs, Backend::S3];

/// A repository holding the first segments of a real cluster, and that cluster's pg_wal.
struct Fixture {
    sb: Sandbox,
    repo: TestRepo,
    pg_wal: PathBuf,
    /// Archived segments, oldest first.
    segments: Vec<String>,
}

fn fixture(name: &str, backend: Backend) -> Fixture {
    let sb = Sandbox::new(&format!("{name}-{backend:?}").to_lowercase());
    let repo = TestRepo::new(&sb, backend);
    let mut pg = Pg::init(&sb, "pg");
    pg.configure(&repo.archiving_conf(&sb));
    pg.start();
    pg.sql("create table t as select generate_series(1, 20000) i");
    let a = pg.switch_and_wait_archived();
    pg.sql("insert into t select generate_series(1, 20000)");
    let b = pg.switch_and_wait_archived();
    // Keep copies: the shutdown checkpoint removes archived segments from pg_wal.
    let pg_wal = sb.path().join("wal-copy");
    fs::create_dir_all(&pg_wal).expect("wal-copy");
    for seg in [&a, &b] {
        fs::copy(pg.data.join("pg_wal").join(seg), pg_wal.join(seg)).expect("copy segment");
    }
    pg.stop();
    Fixture {
        sb,
        repo,
        pg_wal,
        segments: vec![a, b],
    }
}

impl Fixture {
    fn push(&self, args: &[&str]) -> Output {
        let mut c = self.sb.tool("wal-push");
        c.args(self.repo.args()).args(args);
        run(c)
    }
    fn fetch(&self, args: &[&str]) -> Output {
        let mut c = self.sb.tool("wal-fetch");
        c.args(self.repo.args()).args(args);
        run(c)
    }
    fn segment_path(&self, i: usize) -> String {
        self.pg_wal.join(&self.segments[i]).display().to_string()
    }
    /// A file with the given name and content in a scratch directory.
    fn scratch(&self, name: &str, data: &[u8]) -> String {
        let d = self.sb.path().join("scratch");
        fs::create_dir_all(&d).expect("scratch");
        let p = d.join(name);
        fs::write(&p, data).expect("scratch file");
        p.display().to_string()
    }
    /// A config like the fixture's that reaches the store through `proxy`, for the
    /// repository `repo`; `line` may rewrite or drop (None) any other line.
    fn config_via(
        &self,
        name: &str,
        proxy: &pitrkit_tests::proxy::Proxy,
        repo: &str,
        line: impl Fn(&str) -> Option<String>,
    ) -> String {
        let cfg: String = fs::read_to_string(&self.repo.config)
            .expect("config")
            .lines()
            .filter_map(|l| {
                if l.starts_with("s3_endpoint") {
                    Some(format!("s3_endpoint = '{}'\n", proxy.endpoint()))
                } else if l.starts_with("repo") {
                    Some(format!("repo = '{repo}'\n"))
                } else {
                    line(l).map(|l| format!("{l}\n"))
                }
            })
            .collect();
        self.scratch(name, cfg.as_bytes())
    }
    fn dest(&self) -> PathBuf {
        self.sb.path().join("restored")
    }
    fn key(&self, i: usize) -> String {
        format!("wal/00000001/{}.zst", self.segments[i])
    }
}

#[test]
fn status_0_push_and_fetch_through_pipes() {
    for b in BACKENDS {
        let f = fixture("ok", b);
        let seg = fs::read(f.segment_path(1)).expect("segment");
        // Pushing again what PostgreSQL already archived is success, and uploads nothing.
        let before = f.repo.snapshot();
        let out = f.push(&[&f.segment_path(0)]);
        out.assert_ok();
        let report: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("JSON line");
        assert_eq!(report["status"], "already-archived", "{out}");
        assert_eq!(report["bytes"], 16 << 20);
        assert_eq!(f.repo.snapshot(), before);
        // A .history file goes in as it is, from stdin.
        let history = b"1\t0/3000000\tno recovery target specified\n";
        let mut c = f.sb.tool("wal-push");
        c.args(f.repo.args())
            .args(["--name", "00000002.history", "-"]);
        let out = run_with_stdin(&mut c, Some(history));
        out.assert_ok();
        let report: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("JSON line");
        assert_eq!(report["digest"], pitrkit_tests::blake3_hex(history));
        assert_eq!(report["digest_algorithm"], "blake3");
        let out = f.fetch(&["00000002.history", "-"]);
        out.assert_ok();
        assert_eq!(out.stdout_bytes, history);
        // A segment streams to stdout byte for byte.
        let out = f.fetch(&[&f.segments[1], "-"]);
        out.assert_ok();
        assert!(out.stdout_bytes == seg);

        // A segment archived by a pitrkit that digested with sha256 (envelope version 1):
        // fetched byte for byte, pushed again it is the same file, and other content under
        // its name is still refused.
        let seg2 = fs::read(f.segment_path(0)).expect("segment");
        let v1 = pitrkit::repo::object::Sealer::on_this_thread(3)
            .seal_known(
                &seg2,
                pitrkit::repo::object::ContentDigest::of(&seg2),
                &pitrkit::repo::crypto::Keys::none(),
                pitrkit::repo::crypto::Class::Data,
            )
            .expect("seal");
        assert_eq!(v1[16], 1, "envelope version 1");
        fs::write(f.repo.object_path(&f.key(0)), &v1).expect("old object");
        let out = f.fetch(&[&f.segments[0], "-"]);
        out.assert_ok();
        assert!(out.stdout_bytes == seg2);
        let before = f.repo.snapshot();
        let out = f.push(&[&f.segment_path(0)]);
        out.assert_ok();
        let report: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("JSON line");
        assert_eq!(report["status"], "already-archived", "{out}");
        assert_eq!(f.repo.snapshot(), before);
        let mut changed = seg2.clone();
        changed[200_000] ^= 1;
        let changed = f.scratch(&f.segments[0], &changed);
        f.push(&[&changed]).assert_code(4).stderr_has(&format!(
            "stored sha256 {}",
            pitrkit_tests::sha256_hex(&seg2)
        ));
        assert_eq!(f.repo.snapshot(), before);
    }
}

#[test]
fn status_1_not_in_the_archive() {
    for b in BACKENDS {
        let f = fixture("notfound", b);
        let dest = f.dest();
        for name in ["000000010000000000000099", "00000002.history"] {
            f.fetch(&[name, dest.to_str().unwrap()])
                .assert_code(1)
                .stderr_has("not found in the repository");
            assert!(!dest.exists());
        }
    }
}

#[test]
fn status_2_usage() {
    for b in BACKENDS {
        let f = fixture("usage", b);
        let before = f.repo.snapshot();
        f.push(&["--frobnicate", &f.segment_path(0)])
            .assert_code(2)
            .stderr_has("--frobnicate");
        f.fetch(&["--frobnicate", "x", "y"])
            .assert_code(130)
            .stderr_has("--frobnicate");
        f.push(&["-"]).assert_code(2).stderr_has("--name");
        f.push(&["--compress-level", "99", &f.segment_path(0)])
            .assert_code(2);
        for url in ["ftp://host/x", "s3://Bad_Bucket/x", "file://relative"] {
            let mut c = f.sb.tool("wal-push");
            c.args(["--repo", url, &f.segment_path(0)]);
            run(c).assert_code(2).stderr_has("bad repository URL");
            let mut c = f.sb.tool("wal-fetch");
            c.args(["--repo", url, &f.segments[0], "-"]);
            run(c).assert_code(130).stderr_has("bad repository URL");
        }
        let bad_config = f.scratch("bad.toml", b"repo = '/x'\nretires = 3\n");
        let mut c = f.sb.tool("wal-push");
        c.args(["--config", &bad_config, &f.segment_path(0)]);
        run(c).assert_code(2).stderr_has("retires");
        let mut c = f.sb.tool("wal-push");
        c.arg(f.segment_path(0));
        run(c).assert_code(2).stderr_has("no repository given");
        assert_eq!(f.repo.snapshot(), before);
    }
}

#[test]
fn status_3_not_a_valid_wal_file() {
    for b in BACKENDS {
        let f = fixture("invalid", b);
        let before = f.repo.snapshot();
        let seg = fs::read(f.segment_path(1)).expect("segment");
        let next = format!(
            "{}{:08X}",
            &f.segments[1][..16],
            u32::from_str_radix(&f.segments[1][16..], 16).unwrap() + 1
        );
        // A file whose name is no WAL name.
        f.push(&[&f.scratch("notes.txt", b"hello")])
            .assert_code(3)
            .stderr_has("not a WAL file name");
        // Something that is not WAL under a WAL name.
        f.push(&[&f.scratch(&next, &vec![b'x'; 16 << 20])])
            .assert_code(3)
            .stderr_has("not a WAL segment");
        // A segment of a major newer than this build knows (the next page magic): refused,
        // never stored, and the message says a newer pitrkit is needed.
        let mut newer = seg.clone();
        newer[0..2].copy_from_slice(&0xD119u16.to_le_bytes());
        f.push(&[&f.scratch(&next, &newer)])
            .assert_code(3)
            .stderr_has("supports (13, 14, 15, 16, 17 and 18)")
            .stderr_has("needs a newer pitrkit");
        // A truncated segment.
        f.push(&[&f.scratch(&next, &seg[..1 << 20])])
            .assert_code(3)
            .stderr_has("truncated");
        // A real segment under the name of the next one.
        f.push(&[&f.scratch(&next, &seg)])
            .assert_code(3)
            .stderr_has("header is for the segment at");
        assert_eq!(
            f.repo.snapshot(),
            before,
            "a refused push changed the repository"
        );
    }
}

#[test]
fn status_4_wrong_repository_or_conflicting_content() {
    for b in BACKENDS {
        let f = fixture("conflict", b);
        let before = f.repo.snapshot();
        // A segment of another cluster (a fresh initdb) under a name already archived.
        let other = Pg::init(&f.sb, "other");
        let foreign = other.data.join("pg_wal/000000010000000000000001");
        f.push(&[foreign.to_str().unwrap()])
            .assert_code(4)
            .stderr_has("belongs to database system");
        // The same name with different content: refused, both checksums named.
        let mut seg = fs::read(f.segment_path(0)).expect("segment");
        seg[100_000] ^= 0xFF;
        let changed = f.scratch(&f.segments[0], &seg);
        let out = f.push(&[&changed]);
        out.assert_code(4)
            .stderr_has("already exists with different content");
        let stored_sum = pitrkit_tests::blake3_hex(&fs::read(f.segment_path(0)).expect("segment"));
        out.stderr_has(&format!("stored blake3 {stored_sum}"))
            .stderr_has(&format!(
                "this file blake3 {}",
                pitrkit_tests::blake3_hex(&seg)
            ));
        assert_eq!(
            f.repo.snapshot(),
            before,
            "a refused push changed the repository"
        );
        // wal-fetch against a location that is not this repository (wrong prefix or
        // directory) must not answer "not found": that would end recovery early.
        let wrong = match b {
            Backend::Fs => {
                let d = f.sb.path().join("empty-repo");
                fs::create_dir_all(&d).expect("dir");
                d.display().to_string()
            }
            Backend::S3 => "s3://pitr-test/wrong-prefix".to_string(),
        };
        let mut c = f.sb.tool("wal-fetch");
        c.args(f.repo.args())
            .args(["--repo", &wrong, &f.segments[0], "-"]);
        run(c)
            .assert_code(132)
            .stderr_has("is not a pitrkit repository");

        // A segment missing while a later one of its timeline is stored is a hole: recovery
        // must stop (above 125), not end early and promote. Past the last stored segment,
        // or for a standby, it is "not found".
        let last = f.segments[1].clone();
        let plus = |n: u32| {
            let seg = u32::from_str_radix(&last[16..], 16).unwrap() + n;
            format!("{}{seg:08X}", &last[..16])
        };
        let key = |name: &str| format!("wal/{}/{name}.zst", &name[..8]);
        fs::copy(
            f.repo.object_path(&key(&last)),
            f.repo.object_path(&key(&plus(2))),
        )
        .expect("plant a later segment");
        let dest = f.dest();
        f.fetch(&[&plus(1), dest.to_str().unwrap()])
            .assert_code(132)
            .stderr_has(&format!("{} is missing", plus(1)))
            .stderr_has(&format!("goes on with {}", plus(2)));
        assert!(!dest.exists());
        f.fetch(&[&plus(3), dest.to_str().unwrap()]).assert_code(1);
        let standby = f.sb.path().join("standby");
        fs::create_dir_all(&standby).unwrap();
        fs::write(standby.join("standby.signal"), "").unwrap();
        let mut c = f.sb.tool("wal-fetch");
        c.current_dir(&standby)
            .args(f.repo.args())
            .args([&plus(1), dest.to_str().unwrap()]);
        run(c).assert_code(1);
    }
}

#[test]
fn status_5_store_unavailable_and_standby_keeps_polling() {
    for b in BACKENDS {
        let mut f = fixture("unavailable", b);
        let dest = f.dest();
        match b {
            Backend::S3 => f.repo.s3.as_mut().expect("s3").stop(),
            Backend::Fs => {
                fs::rename(&f.repo.files, f.sb.path().join("unmounted")).expect("rename")
            }
        }
        let started = std::time::Instant::now();
        f.fetch(&[&f.segments[0], dest.to_str().unwrap()])
            .assert_code(133)
            .stderr_has("repository unreachable");
        assert!(!dest.exists());
        // The bounded retries of the test config (3 attempts, 3 s) end well before a minute.
        assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
        if b == Backend::S3 {
            let next = f.scratch(
                &f.segments[1],
                &fs::read(f.segment_path(1)).expect("segment"),
            );
            f.push(&[&next])
                .assert_code(5)
                .stderr_has("repository unreachable");
        }
        // A standby (standby.signal in the working directory) gets 1 so it keeps polling.
        fs::write(f.sb.path().join("standby.signal"), "").expect("standby.signal");
        f.fetch(&[&f.segments[0], dest.to_str().unwrap()])
            .assert_code(1)
            .stderr_has("standby.signal");
        assert!(!dest.exists());
        match b {
            Backend::S3 => f.repo.s3.as_mut().expect("s3").restart(),
            Backend::Fs => {
                fs::rename(f.sb.path().join("unmounted"), &f.repo.files).expect("rename")
            }
        }
        f.fetch(&[&f.segments[0], dest.to_str().unwrap()])
            .assert_ok();
    }
}

#[test]
fn status_6_store_refuses_access() {
    let f = fixture("denied", Backend::S3);
    let before = f.repo.snapshot();
    let endpoint = f.repo.s3.as_ref().expect("s3").endpoint();
    let with_env = |tool: &str, repo: &str, secret: &str, args: &[&str]| {
        let mut c = f.sb.tool(tool);
        c.env("AWS_ACCESS_KEY_ID", pitrkit_tests::S3_KEY)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_ENDPOINT_URL", &endpoint)
            .args(["--repo", repo, "--retries", "2"])
            .args(args);
        run(c)
    };
    let seg = f.segment_path(1);
    with_env(
        "wal-push",
        "s3://pitr-test/cluster-a",
        "wrong-secret",
        &[&seg],
    )
    .assert_code(6)
    .stderr_has("SignatureDoesNotMatch");
    with_env(
        "wal-fetch",
        "s3://pitr-test/cluster-a",
        "wrong-secret",
        &[&f.segments[0], "-"],
    )
    .assert_code(134)
    .stderr_has("refused access");
    // s3s-fs answers NoSuchKey (not NoSuchBucket) for a missing bucket, and creates buckets
    // on PUT; the root-document check still keeps restore_command from reading "missing".
    with_env(
        "wal-fetch",
        "s3://no-such-bucket/x",
        pitrkit_tests::S3_SECRET,
        &[&f.segments[0], "-"],
    )
    .assert_code(132)
    .stderr_has("not a pitrkit repository");
    // Flags beat the environment: the environment names another repository and an
    // endpoint where nothing listens, the flags the right ones.
    let mut c = f.sb.tool("wal-fetch");
    c.env("AWS_ACCESS_KEY_ID", pitrkit_tests::S3_KEY)
        .env("AWS_SECRET_ACCESS_KEY", pitrkit_tests::S3_SECRET)
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("PITR_REPO", "s3://no-such-bucket/x")
        .args([
            "--repo",
            "s3://pitr-test/cluster-a",
            "--s3-endpoint",
            &endpoint,
        ])
        .args(["--retries", "2", &f.segments[0], "-"]);
    run(c).assert_ok();
    assert_eq!(f.repo.snapshot(), before);
}

#[test]
fn status_7_corrupt_object() {
    for b in BACKENDS {
        let f = fixture("corrupt", b);
        let dest = f.dest();
        let obj = f.repo.object_path(&f.key(0));
        let mut stored = fs::read(&obj).expect("object");
        let at = stored.len() / 2;
        stored[at] ^= 0x01;
        fs::write(&obj, &stored).expect("flip a byte");
        f.fetch(&[&f.segments[0], dest.to_str().unwrap()])
            .assert_code(135)
            .stderr_has("corrupt object");
        assert!(!dest.exists(), "a corrupt object reached the destination");
        // A truncated object, too.
        let obj = f.repo.object_path(&f.key(1));
        let stored = fs::read(&obj).expect("object");
        fs::write(&obj, &stored[..stored.len() - 10]).expect("truncate");
        f.fetch(&[&f.segments[1], dest.to_str().unwrap()])
            .assert_code(135)
            .stderr_has("corrupt object");
        assert!(!dest.exists());
        // PostgreSQL re-pushing the original repairs a copy whose envelope still records
        // exactly that content...
        let out = f.push(&[&f.segment_path(1)]);
        out.assert_ok().stderr_has("rewriting it");
        assert!(out.stdout.contains("\"status\":\"repaired\""), "{out}");
        assert_eq!(fs::read(&obj).expect("object"), stored);
        f.fetch(&[&f.segments[1], dest.to_str().unwrap()])
            .assert_ok();
        // ...but an object whose envelope is unreadable is never overwritten.
        let obj = f.repo.object_path(&f.key(0));
        let mut damaged = fs::read(&obj).expect("object");
        damaged[10] ^= 0xFF;
        fs::write(&obj, &damaged).expect("damage envelope");
        f.push(&[&f.segment_path(0)])
            .assert_code(7)
            .stderr_has("envelope");
        assert_eq!(fs::read(&obj).expect("object"), damaged);
    }
}

#[test]
fn status_8_local_files() {
    for b in BACKENDS {
        let f = fixture("localio", b);
        let missing = f.pg_wal.join("000000010000000000000077");
        f.push(&[missing.to_str().unwrap()])
            .assert_code(8)
            .stderr_has("000000010000000000000077");
        let nowhere = f.sb.path().join("no/such/dir/x");
        f.fetch(&[&f.segments[0], nowhere.to_str().unwrap()])
            .assert_code(136)
            .stderr_has("no/such/dir");
    }
}

#[test]
fn large_objects_go_up_in_parts() {
    let mut f = fixture("multipart", Backend::S3);
    f.repo.s3.as_mut().expect("S3").log_requests();
    let cfg = fs::read_to_string(&f.repo.config).expect("config");
    fs::write(
        &f.repo.config,
        format!("{cfg}s3_multipart_threshold = 5242880\ns3_part_size = 5242880\n"),
    )
    .expect("config");
    let seg = fs::read(f.segment_path(1)).expect("segment");
    // Uncompressed, the object is 16 MiB: four parts.
    let next = format!(
        "{}{:08X}",
        &f.segments[1][..16],
        u32::from_str_radix(&f.segments[1][16..], 16).unwrap() + 1
    );
    let mut partial = seg.clone();
    partial.truncate(12 << 20);
    let name = format!("{}.partial", f.segments[1]);
    let path = f.scratch(&name, &partial);
    let out = f.push(&["--compress-level", "0", &path]);
    out.assert_ok();
    let report: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("JSON");
    assert!(
        report["stored_bytes"].as_u64().unwrap_or(0) > 12 << 20,
        "{out}"
    );
    // 12 MiB and its envelope in 5 MiB parts: three parts, one completed upload.
    let log = f.repo.log();
    for n in 1..=3 {
        assert!(
            log.contains("UploadPartInput")
                && log.contains(&format!("part_number: {n}, upload_id")),
            "part {n} was not uploaded: {log}"
        );
    }
    assert!(!log.contains("part_number: 4, upload_id"), "{log}");
    assert!(log.contains("CompleteMultipartUploadInput"), "{log}");
    let out = f.fetch(&[&name, "-"]);
    out.assert_ok();
    assert!(out.stdout_bytes == partial, "multipart object differs");
    let _ = next;
}

#[test]
fn status_9_database_unreachable_and_3_unbackupable_cluster() {
    let sb = Sandbox::new("bbpush-errors");
    let repo = TestRepo::new(&sb, Backend::Fs);
    let mut pg = Pg::init(&sb, "pg");
    pg.start();
    let data = pg.data.to_str().unwrap().to_string();
    let mut c = sb.tool("bb-push");
    c.args(repo.args()).args([
        "--pgdata",
        &data,
        "--dbname",
        "host=/nonexistent port=1 user=postgres dbname=postgres",
    ]);
    run(c).assert_code(9).stderr_has("cannot connect");
    // archive_mode is off: the backup could never be restored, so it is not taken.
    let mut c = sb.tool("bb-push");
    c.args(repo.args()).args(["--pgdata", &data]);
    run(c).assert_code(3).stderr_has("archive_mode is off");
    assert!(
        repo.snapshot()
            .iter()
            .all(|(k, _)| !k.starts_with("backups/")),
        "{:?}",
        repo.snapshot()
    );
}

#[test]
fn status_10_internal_error() {
    let f = fixture("internal", Backend::Fs);
    let before = f.repo.snapshot();
    let dest = f.dest();
    let faulty = |tool: &str, args: &[&str]| {
        let mut c = f.sb.tool(tool);
        c.env("PITRKIT_FAULT", "panic")
            .args(f.repo.args())
            .args(args);
        run(c)
    };
    let seg = f.segment_path(0);
    faulty("wal-push", &[&seg]).assert_code(10).stderr_has(
        "internal error (a bug in pitrkit, please report it): panic: PITRKIT_FAULT=panic",
    );
    // As restore_command, above 125: recovery stops rather than ending early.
    faulty("wal-fetch", &[&f.segments[0], dest.to_str().unwrap()])
        .assert_code(138)
        .stderr_has("internal error");
    assert!(!dest.exists());
    faulty("pitr-check", &["status"])
        .assert_code(3)
        .stderr_has("UNKNOWN: internal error");
    assert_eq!(f.repo.snapshot(), before);
}

/// A bucket policy without s3:ListBucket: S3 answers 403 for a missing object. Archiving
/// still works (the create-only write tells "missing" from "there"), and wal-fetch at the
/// archive's end stays an error above 125 that names the permission, never "not found".
#[test]
fn without_s3_list_bucket_archiving_works_and_the_end_is_an_error() {
    use pitrkit_tests::proxy::{Misbehaviour, Proxy};
    let f = fixture("nolist", Backend::S3);
    let s3 = f.repo.s3.as_ref().expect("s3");
    let proxy = Proxy::start(s3.port, &[Misbehaviour::ForbidMissing]);
    let cfg_path = f.config_via("nolist.toml", &proxy, "s3://pitr-test/nolist", |l| {
        Some(l.to_string())
    });
    let tool = |tool: &str, args: &[&str]| {
        let mut c = f.sb.tool(tool);
        c.args(["--config", &cfg_path]).args(args);
        run(c)
    };
    // A new repository: the root document and the segment both answer 403 while missing.
    let out = tool("wal-push", &[&f.segment_path(0)]);
    out.assert_ok();
    assert!(out.stdout.contains("\"status\":\"stored\""), "{out}");
    tool("wal-push", &[&f.segment_path(0)])
        .assert_ok()
        .stderr_has("already-archived");
    tool("wal-push", &[&f.segment_path(1)]).assert_ok();
    let out = tool("wal-fetch", &[&f.segments[0], "-"]);
    out.assert_ok();
    assert!(out.stdout_bytes == fs::read(f.segment_path(0)).expect("segment"));
    let last = &f.segments[1];
    let next = format!(
        "{}{:08X}",
        &last[..16],
        u32::from_str_radix(&last[16..], 16).unwrap() + 1
    );
    tool("wal-fetch", &[&next, f.dest().to_str().unwrap()])
        .assert_code(134)
        .stderr_has("s3:ListBucket");
    assert!(!f.dest().exists());
}

/// A store that ignores `If-None-Match: *` is found out when the repository is made and
/// recorded in its root document; then every create-only write is read back, so two
/// promoted standbys pushing different `00000002.history` files can't both succeed.
#[test]
fn a_store_that_ignores_if_none_match_is_found_out() {
    use pitrkit_tests::proxy::{Misbehaviour, Proxy};
    let f = fixture("ifnonematch", Backend::S3);
    let s3 = f.repo.s3.as_ref().expect("s3");
    let root = fs::read_to_string(f.repo.object_path("pitrkit.json")).expect("root");
    assert!(root.contains("\"conditional_create\": true"), "{root}");
    let via = |name: &str, how: &[Misbehaviour]| {
        let proxy = Proxy::start(s3.port, how);
        let cfg = f.config_via(name, &proxy, "s3://pitr-test/ignoring", |l| {
            Some(l.to_string())
        });
        (proxy, cfg)
    };
    let push = |cfg: &str, path: &str| {
        let mut c = f.sb.tool("wal-push");
        c.args(["--config", cfg, path]);
        run(c)
    };
    let (_ignoring, cfg) = via("ignoring.toml", &[Misbehaviour::IgnorePreconditions]);
    push(&cfg, &f.segment_path(0))
        .assert_ok()
        .stderr_has("ignores create-only writes");
    let root = fs::read_to_string(s3.data.join("pitr-test/ignoring/pitrkit.json")).expect("root");
    assert!(root.contains("\"conditional_create\": false"), "{root}");

    let history = |dir: &str, text: &str| {
        let d = f.sb.path().join(dir);
        fs::create_dir_all(&d).expect("dir");
        let p = d.join("00000002.history");
        fs::write(&p, text).expect("history");
        p.display().to_string()
    };
    let a = history("standby-a", "1\t0/5000000\tno recovery target specified\n");
    let b = history("standby-b", "1\t0/6000000\tno recovery target specified\n");
    push(&cfg, &a).assert_ok();
    push(&cfg, &b)
        .assert_code(4)
        .stderr_has("already exists with different content");
    // Even when the existence check misses the first standby's file (a read that lags the
    // write) and the store lets the second write "succeed", the read-back refuses it.
    let (_stale, cfg) = via(
        "stale.toml",
        &[
            Misbehaviour::IgnorePreconditions,
            Misbehaviour::StaleFirstRead,
        ],
    );
    push(&cfg, &b)
        .assert_code(4)
        .stderr_has("already exists with different content");
}

/// `timeout` limits waiting, not transferring: with the default settings (a 10 s timeout), a
/// 16 MiB segment stored uncompressed crosses a 500 KB/s link — 34 s each way — up and down.
#[test]
fn a_slow_link_still_transfers_a_whole_segment() {
    use pitrkit_tests::proxy::{Misbehaviour, Proxy};
    let f = fixture("slowlink", Backend::S3);
    let s3 = f.repo.s3.as_ref().expect("s3");
    let proxy = Proxy::start(s3.port, &[Misbehaviour::Throttle(500_000)]);
    let cfg = f.config_via("slow.toml", &proxy, "s3://pitr-test/slow", |l| {
        if l.starts_with("retries") {
            // One attempt: a retry must not be what makes it pass.
            Some("retries = 1".to_string())
        } else if l.starts_with("timeout") || l.starts_with("retry_time") {
            // The defaults.
            None
        } else {
            Some(l.to_string())
        }
    });
    let seg = f.segment_path(0);
    let mut c = f.sb.tool("wal-push");
    c.args(["--config", &cfg, "--compress-level", "0", &seg]);
    let out = run(c);
    out.assert_ok();
    assert!(out.stdout.contains("\"stored_bytes\":167772"), "{out}");
    let mut c = f.sb.tool("wal-fetch");
    c.args(["--config", &cfg, &f.segments[0], "-"]);
    let out = run(c);
    out.assert_ok();
    assert!(out.stdout_bytes == fs::read(&seg).expect("segment"));
}

/// "Already archived" is only said of a durable object: a wal-push killed between linking
/// the object into place and fsyncing its directory leaves a name a power loss could take
/// back, and the next wal-push of the same file, which PostgreSQL runs because the first
/// never answered, fsyncs that directory before it exits 0 (seen through strace).
#[test]
fn a_push_killed_after_linking_is_made_durable_by_the_next() {
    let f = fixture("killed", Backend::Fs);
    let repo = f.sb.path().join("fresh-repo");
    fs::create_dir_all(&repo).expect("repo dir");
    let repo = repo.display().to_string();
    // The repository exists (its root document made by another segment's push).
    let mut c = f.sb.tool("wal-push");
    c.args(["--repo", &repo, &f.segment_path(1)]);
    run(c).assert_ok();
    let seg = f.segment_path(0);
    let mut c = f.sb.tool("wal-push");
    // The segment's link, not its summary's (written at the same time).
    c.env("PITRKIT_FAULT", "die-after-link@/wal/")
        .args(["--repo", &repo, &seg]);
    let out = run(c);
    assert_eq!(out.code, -1, "killed by SIGABRT: {out}");
    let object = format!("{repo}/wal/00000001/{}.zst", f.segments[0]);
    assert!(
        std::path::Path::new(&object).exists(),
        "linked before the kill"
    );

    let trace = f.sb.path().join("strace.log");
    let mut c = std::process::Command::new("strace");
    c.args(["-f", "-y", "-e", "trace=fsync,fdatasync", "-o"])
        .arg(&trace)
        .arg(f.sb.bin("wal-push"))
        .args(["--repo", &repo, &seg])
        .env_clear()
        .env("PATH", "/usr/bin:/bin");
    run(c).assert_ok().stderr_has("already-archived");
    let calls = fs::read_to_string(&trace).expect("strace log");
    assert!(
        calls
            .lines()
            .any(|l| l.contains("fsync(") && l.contains(&format!("<{repo}/wal/00000001>"))),
        "the object's directory was not fsynced:\n{calls}"
    );
}
