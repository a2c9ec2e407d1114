//! A repository nobody should have to trust: manifests planted by whoever can write the
//! store (or, in an encrypted repository, by any database host, which holds the recipient)
//! and crafted tars on `bb-push -` are refused before anything is written, and nothing
//! appears outside the directories the user named; the recovery settings bb-restore writes
//! reach the same repository whatever characters its path holds.

#![allow(clippy::unwrap_used)] // tests: a panic with its message is the failure report

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pitrkit::repo::Repository;
use pitrkit::repo::manifest::{BackupManifest, Entry};
use pitrkit::settings::{RepoArgs, Settings};
use pitrkit::storage::PutMode;
use pitrkit_tests::{Backend, Pg, Sandbox, Site, TestRepo, run, site_with};

fn repo_of(config: &Path) -> Repository {
    let args = RepoArgs {
        config: Some(config.to_path_buf()),
        ..Default::default()
    };
    Settings::from_args(&args).unwrap().open_repo().unwrap()
}

/// Seals `m` as a manifest with the keys of `config` (in an encrypted repository, only the
/// recipient: what every database host has) and stores it over the real one.
fn plant(config: &Path, m: &BackupManifest) {
    let repo = repo_of(config);
    let sealed = repo.seal_manifest(m).unwrap();
    repo.store()
        .put(&m.backup_id.manifest_key(), &sealed, PutMode::Overwrite)
        .unwrap();
}

fn file(path: &str, mode: u32) -> Entry {
    Entry::file(path.into(), mode, 0, 0, vec![])
}

fn link(path: &str, target: &Path) -> Entry {
    Entry::Symlink {
        path: path.into(),
        target: target.display().to_string(),
    }
}

fn crafted_manifests(encrypted: bool) {
    let (identity, recipient) = pitrkit::repo::crypto::generate();
    let lines = if encrypted {
        format!("encryption_recipients = ['{recipient}']\n")
    } else {
        String::new()
    };
    let s = site_with("crafted", Backend::Fs, "", &lines);
    s.primary
        .sql("create table t as select generate_series(1, 100) i");
    let id = s.backup()["backup_id"].as_str().unwrap().to_string();
    s.archive_now();
    // The site's config is what a database host has; the restore side also has the identity.
    let writer = s.repo.config.clone();
    let reader = if encrypted {
        let key = s.sb.path().join("identity.txt");
        fs::write(&key, identity).unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        let cfg = s.sb.path().join("reader.toml");
        let base = fs::read_to_string(&writer).unwrap();
        fs::write(
            &cfg,
            format!("{base}encryption_identity_file = '{}'\n", key.display()),
        )
        .unwrap();
        cfg
    } else {
        writer.clone()
    };
    let original = repo_of(&reader)
        .read_manifest(&id.parse().unwrap())
        .unwrap();

    let outside = s.sb.path().join("outside");
    let target = s.sb.path().join("restore");
    let work = s.sb.path().join("drills");
    fs::create_dir_all(&work).unwrap();
    let tool = |tool: &str, args: &[&str]| {
        let mut c = s.sb.tool(tool);
        c.arg("--config").arg(&reader).args(args);
        run(c)
    };
    let abs = format!("{}/planted", outside.display());
    let cases: [(Vec<Entry>, &str); 5] = [
        (vec![file(&abs, 0o600)], "absolute path"),
        (vec![file("../outside", 0o600)], "'..'"),
        (
            vec![
                link("base/evil", &outside),
                file("base/evil/planted", 0o600),
            ],
            "a link outside pg_tblspc/<oid>",
        ),
        (
            vec![
                link("pg_tblspc/99999", &outside),
                file("pg_tblspc/99999/planted", 0o600),
            ],
            "outside its PG_<major>_<catversion> directory",
        ),
        (vec![file("PG_VERSION/planted", 0o600)], "lies below a file"),
    ];
    for (extra, why) in cases {
        let mut m = original.clone();
        m.entries.extend(extra);
        plant(&writer, &m);
        let out = tool(
            "bb-restore",
            &["--pgdata", target.to_str().unwrap(), "--backup", &id],
        );
        out.assert_code(7)
            .stderr_has(&format!("backup {id} refused"))
            .stderr_has(why);
        assert!(!target.exists(), "{out}");
        let out = tool(
            "pitr-check",
            &[
                "drill",
                "--backup",
                &id,
                "--workdir",
                work.to_str().unwrap(),
            ],
        );
        out.assert_code(2);
        assert!(out.stdout.contains(why), "{out}");
        assert!(!outside.exists(), "{why}: {out}");
        assert_eq!(fs::read_dir(&work).unwrap().count(), 0, "{out}");
    }

    // Chosen without --backup, a newer backup whose manifest is planted is skipped, named,
    // and the older one restores.
    plant(&writer, &original);
    std::thread::sleep(Duration::from_millis(1100)); // backup ids are per second
    let newer = s.backup()["backup_id"].as_str().unwrap().to_string();
    let mut m = repo_of(&reader)
        .read_manifest(&newer.parse().unwrap())
        .unwrap();
    m.entries.push(file("../outside", 0o600));
    plant(&writer, &m);
    let out = tool("bb-restore", &["--pgdata", target.to_str().unwrap()]);
    out.assert_ok()
        .stderr_has(&format!("skipping backup {newer}"));
    assert!(
        out.stdout.contains(&format!("\"backup_id\":\"{id}\"")),
        "{out}"
    );
    assert!(!outside.exists());
    fs::remove_dir_all(&target).unwrap();

    // A backup without its control file does not start: not "restorable", refused.
    let mut m = original.clone();
    m.entries.retain(|e| e.path() != "global/pg_control");
    plant(&writer, &m);
    let out = tool(
        "bb-restore",
        &["--pgdata", target.to_str().unwrap(), "--backup", &id],
    );
    out.assert_code(7).stderr_has("lacks global/pg_control");
    assert!(!target.exists(), "{out}");
    let out = tool("pitr-check", &["status"]);
    out.assert_code(2);
    assert!(
        out.to_string().contains(&format!(
            "backup {id} can't start: it lacks global/pg_control"
        )),
        "{out}"
    );

    // Setuid, setgid, sticky and world-writable modes are restored as PostgreSQL's own
    // (group read kept: a cluster made with --allow-group-access).
    let mut m = original.clone();
    m.entries.push(file("planted-helper", 0o6777));
    m.entries.push(file("planted-private", 0o4700));
    m.entries.push(Entry::Dir {
        path: "planted-dir".into(),
        mode: 0o1777,
    });
    plant(&writer, &m);
    tool(
        "bb-restore",
        &["--pgdata", target.to_str().unwrap(), "--backup", &id],
    )
    .assert_ok();
    let mode = |p: &str| fs::metadata(target.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("planted-helper"), 0o640);
    assert_eq!(mode("planted-private"), 0o600);
    assert_eq!(mode("planted-dir"), 0o750);
    assert!(!outside.exists());
}

#[test]
fn planted_manifests_are_refused_in_a_plain_repository() {
    crafted_manifests(false);
}

#[test]
fn planted_manifests_are_refused_in_an_encrypted_repository() {
    crafted_manifests(true);
}

/// The bytes of a tar without its end-of-archive blocks.
fn without_end(mut tar: Vec<u8>) -> Vec<u8> {
    while tar.len() >= 512 && tar[tar.len() - 512..].iter().all(|b| *b == 0) {
        tar.truncate(tar.len() - 512);
    }
    tar
}

/// A ustar header for a regular file with an arbitrary name, checksum filled in.
fn raw_header(name: &str, size: usize, kind: u8, link: &str) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000600\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| *b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

#[test]
fn a_crafted_tar_on_stdin_is_refused_and_nothing_is_published() {
    let s = site_with("crafted-tar", Backend::Fs, "", "");
    let p = &s.primary;
    p.sql("create table t as select generate_series(1, 100) i");
    let mut c = pitrkit_tests::as_pg(&pitrkit_tests::pg_bin("pg_basebackup"));
    c.arg("-h")
        .arg(&p.sock)
        .args(["-p", &p.port.to_string(), "-U", "postgres"])
        .args(["-D", "-", "-Ft", "-X", "fetch", "-c", "fast"]);
    let out = c.output().unwrap();
    assert!(out.status.success());
    let real = without_end(out.stdout);
    let outside = s.sb.path().join("outside");
    let cases: [(Vec<u8>, &str); 3] = [
        (raw_header("../outside", 0, b'0', ""), "'..'"),
        (
            [
                raw_header("base/evil", 0, b'2', outside.to_str().unwrap()),
                raw_header("base/evil/planted", 0, b'0', ""),
            ]
            .concat(),
            "a link outside pg_tblspc/<oid>",
        ),
        (
            [raw_header("PG_VERSION/planted", 0, b'0', "")].concat(),
            "lies below a file",
        ),
    ];
    for (extra, why) in cases {
        let before = s.repo.snapshot();
        let tar = [real.clone(), extra, vec![0; 1024]].concat();
        let mut c = s.sb.tool("bb-push");
        c.args(s.repo.args()).arg("-");
        let out = pitrkit_tests::run_with_stdin(&mut c, Some(&tar));
        out.assert_code(3).stderr_has(why);
        let backups: Vec<_> = s
            .repo
            .snapshot()
            .into_iter()
            .filter(|(k, _)| k.starts_with("backups/"))
            .collect();
        let before_backups: Vec<_> = before
            .into_iter()
            .filter(|(k, _)| k.starts_with("backups/"))
            .collect();
        assert_eq!(backups, before_backups, "a refused tar published a backup");
        assert!(!outside.exists());
    }
    // Damaged headers anywhere in the first members (size, type, checksum, name bytes):
    // a documented status, never a panic.
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..12 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let mut tar = [real.clone(), vec![0; 1024]].concat();
        let member = (rng % 8) as usize * 512;
        let at = member + (rng >> 8) as usize % 512;
        tar[at] ^= (rng >> 20) as u8 | 1;
        let mut c = s.sb.tool("bb-push");
        c.args(s.repo.args()).arg("-");
        let out = pitrkit_tests::run_with_stdin(&mut c, Some(&tar));
        assert!(
            [0, 3, 4, 7].contains(&out.code) && !out.stderr.contains("panicked"),
            "byte {at}: {out}"
        );
    }
}

/// A repository directory whose path holds a space, quotes, a backslash and a command
/// substitution: the restore_command bb-restore writes reaches it intact through
/// PostgreSQL's config parser and /bin/sh, and nothing is executed.
#[test]
fn a_hostile_repository_path_round_trips_through_restore_command() {
    let sb = Sandbox::new("hostile-path");
    let marker = sb.path().join("pwned");
    let odd = format!(
        "it's a \\ \"repo\" $(touch {}) `touch {}`",
        marker.display(),
        marker.display()
    );
    let files = sb.path().join(&odd);
    fs::create_dir_all(&files).unwrap();
    sb.chown_to_pg(&files);
    let config = sb.path().join("pitrkit.toml");
    let toml_quoted = serde_json::to_string(files.to_str().unwrap()).unwrap();
    fs::write(&config, format!("repo = {toml_quoted}\n")).unwrap();
    sb.chown_to_pg(&config);
    let repo = TestRepo {
        backend: Backend::Fs,
        url: files.display().to_string(),
        files,
        config,
        s3: None,
    };
    let mut primary = Pg::init(&sb, "primary");
    let conf_quoted = format!(
        "'{} --config {} %p'",
        sb.bin("wal-push").display(),
        repo.config.display()
    );
    primary.configure(&format!(
        "archive_mode = on\narchive_command = {conf_quoted}\n"
    ));
    primary.start();
    let s = Site {
        sb,
        repo,
        primary,
        major: pitrkit_tests::DEFAULT_MAJOR,
    };
    s.primary
        .sql("create table t as select generate_series(1, 500) i");
    s.backup();
    s.primary.sql("insert into t values (501)");
    s.archive_now();
    // Through --repo rather than the config file, so the path itself is in restore_command.
    let dir = s.sb.path().join("r");
    let mut c = s.sb.tool("bb-restore");
    c.args(["--repo", s.repo.files.to_str().unwrap()]).args([
        "--pgdata",
        dir.to_str().unwrap(),
        "--archive-mode",
        "off",
    ]);
    run(c).assert_ok();
    let auto = fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
    assert!(!auto.contains("--config"), "{auto}");
    let mut r = Pg::at(&s.sb, "r");
    r.configure("");
    r.start_recovery();
    r.wait_promoted(Duration::from_secs(120));
    assert_eq!(r.sql("select count(*), max(i) from t"), "501|501");
    assert!(!marker.exists(), "a command in the repository path ran");
    assert!(
        r.log_text().contains("restored log file"),
        "{}",
        r.log_text()
    );
}

/// bb-restore given the S3 store only through the environment: the restore_command it
/// writes carries the endpoint and region, and the server (which has only the config file's
/// credentials) recovers from the same store.
#[test]
fn s3_settings_from_the_environment_reach_restore_command() {
    let s = site_with("s3-env", Backend::S3, "", "");
    s.primary
        .sql("create table t as select generate_series(1, 300) i");
    s.backup();
    s.primary.sql("insert into t values (301)");
    s.archive_now();
    let s3 = s.repo.s3.as_ref().unwrap();
    // A config with the credentials only, as a server's would be.
    let creds = s.sb.path().join("creds.toml");
    let text: String = fs::read_to_string(&s.repo.config)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("s3_access_key_id") || l.starts_with("s3_secret"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&creds, text).unwrap();
    s.sb.chown_to_pg(&creds);
    let dir: PathBuf = s.sb.path().join("r");
    let mut c = s.sb.tool("bb-restore");
    c.env("PITR_REPO", &s.repo.url)
        .env("AWS_ENDPOINT_URL", s3.endpoint())
        .env("AWS_REGION", "us-east-1")
        .args(["--config", creds.to_str().unwrap()])
        .args(["--pgdata", dir.to_str().unwrap(), "--archive-mode", "off"]);
    run(c).assert_ok();
    let auto = fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto.contains(&format!("--s3-endpoint {}", s3.endpoint())),
        "{auto}"
    );
    assert!(auto.contains("--s3-region us-east-1"), "{auto}");
    let mut r = Pg::at(&s.sb, "r");
    r.configure("");
    r.start_recovery();
    r.wait_promoted(Duration::from_secs(120));
    assert_eq!(r.sql("select count(*), max(i) from t"), "301|301");
}

/// One unreadable object is a finding that names it, not the end of every check: status
/// still reports the backups and the archive, CRITICAL (2) rather than UNKNOWN (3).
#[test]
fn an_unreadable_history_is_a_finding_not_a_failure() {
    let s = site_with("bad-history", Backend::Fs, "", "");
    s.primary
        .sql("create table t as select generate_series(1, 10) i");
    let id = s.backup()["backup_id"].as_str().unwrap().to_string();
    s.archive_now();
    let key = "wal/00000002/00000002.history.zst";
    let path = s.repo.object_path(key);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, b"not an object at all").unwrap();
    let out = s.tool("pitr-check", &["status", "--json"]);
    out.assert_code(2);
    assert!(
        out.stdout
            .contains(&format!("timeline history {key} can't be read")),
        "{out}"
    );
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let backup = &report["backups"][0];
    assert_eq!(backup["backup_id"], id.as_str(), "{report}");
    assert_eq!(backup["restorable"], true, "{report}");
}

/// A corpus of crafted objects, each a way a shared bucket can hold poison: a WAL name with
/// a non-ASCII byte, a segment 2^40 positions ahead, a chunk that inflates from a few KB to
/// 128 MiB, a manifest claiming all WAL there is. Every tool answers with a documented
/// status within seconds, without a panic, and the good backup still restores.
#[test]
fn a_corpus_of_crafted_objects_is_survived() {
    let s = site_with("corpus", Backend::Fs, "", "");
    s.primary
        .sql("create table t as select generate_series(1, 100) i");
    let good = s.backup()["backup_id"].as_str().unwrap().to_string();
    s.archive_now();
    let repo = repo_of(&s.repo.config);
    let put = |key: &str, data: &[u8]| {
        let p = s.repo.object_path(key);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
    };
    // A real segment object under a name with a non-ASCII byte, and under a far name.
    let real = s
        .repo
        .snapshot()
        .into_iter()
        .map(|(k, _)| k)
        .find(|k| k.starts_with("wal/00000001/") && k.len() == "wal/00000001/".len() + 28)
        .unwrap();
    let bytes = fs::read(s.repo.object_path(&real)).unwrap();
    put("wal/00000001/0000000100000000000000é.zst", &bytes);
    put("wal/00000001/00000001FFFFFFFF000000FF.zst", &bytes);
    // A chunk bomb: 128 MiB of zeros in a few KB, under a chunk name.
    let zeros = vec![0u8; 128 << 20];
    let sealed = pitrkit::repo::object::Sealer::on_this_thread(1)
        .seal_reader(
            &mut &zeros[..],
            0,
            repo.keys(),
            pitrkit::repo::crypto::Class::Data,
        )
        .unwrap()
        .0;
    assert!(sealed.len() < 1 << 20);
    put(
        "chunks/ab/abababababababababababababababababababababababababababababababab.zst",
        &sealed,
    );
    // A newer manifest claiming WAL from 0/0 to FFFFFFFF/FFFFFFFF.
    let mut m = repo.read_manifest(&good.parse().unwrap()).unwrap();
    let newer: pitrkit::repo::manifest::BackupId = "20991231T235959Z".parse().unwrap();
    m.backup_id = newer.clone();
    m.start_lsn = "0/0".parse().unwrap();
    m.stop_lsn = "FFFFFFFF/FFFFFFFF".parse().unwrap();
    repo.store()
        .put(
            &newer.manifest_key(),
            &repo.seal_manifest(&m).unwrap(),
            PutMode::CreateNew,
        )
        .unwrap();

    // Each tool through GNU time, for its peak memory.
    let timed = |tool: &str, args: &[&str]| {
        let started = std::time::Instant::now();
        let mut c = std::process::Command::new("/usr/bin/time");
        c.args(["-f", "pitrkit-test-maxrss-kb=%M"])
            .arg(s.sb.bin(tool))
            .args(s.repo.args())
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .current_dir(s.sb.path());
        let out = pitrkit_tests::run(c);
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(60),
            "{tool} {args:?} took {took:?}"
        );
        assert!(
            !out.stderr.contains("panicked") && !out.stderr.contains("internal error"),
            "{out}"
        );
        let rss_kb: u64 = out
            .stderr
            .rsplit("pitrkit-test-maxrss-kb=")
            .next()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no peak memory reported: {out}"));
        println!(
            "{tool} {args:?}: exit {} in {took:?}, peak RSS {} MB",
            out.code,
            rss_kb / 1024
        );
        if tool != "pitr-check" || args[0] != "drill" {
            assert!(rss_kb < 256 << 10, "{tool} {args:?} peaked at {rss_kb} KB");
        }
        out
    };
    let out = timed("pitr-check", &["status", "--json"]);
    out.assert_code(2);
    assert!(out.stdout.contains("not an ordered range"), "{out}");
    assert!(
        out.stdout.contains("00000001FFFFFFFF000000FE"),
        "the gap up to the far segment: {out}"
    );
    let out = timed("pitr-check", &["verify"]);
    out.assert_code(2);
    assert!(
        out.to_string()
            .contains("more than an object of its kind holds"),
        "{out}"
    );
    let dir = s.sb.path().join("restored");
    timed("bb-restore", &["--pgdata", dir.to_str().unwrap()])
        .assert_ok()
        .stderr_has(&format!("skipping backup {newer}"));
    timed("bb-push", &["--expire", "--retain-full", "1", "--dry-run"]).assert_ok();
    // A drill replays the good backup, and recovery stops at the archive's end rather than
    // promote there: the far segment says the archive goes on (a hole), CRITICAL.
    let work = s.sb.path().join("drills");
    fs::create_dir_all(&work).unwrap();
    let out = timed(
        "pitr-check",
        &["drill", "--workdir", work.to_str().unwrap()],
    );
    out.assert_code(2);
    assert!(out.stdout.contains("a hole in the archive"), "{out}");
}
