//! PostgreSQL itself archives through `wal-push` and recovers through `wal-fetch`, on the
//! filesystem backend and on a real S3 server.

#![allow(clippy::unwrap_used)] // tests: a panic with its message is the failure report

use std::fs;
use std::time::Duration;

use pitrkit_tests::{Backend, Pg, Sandbox, TestRepo, run_with_stdin};

/// Segments PostgreSQL reports as archived (`archive_status/*.done`).
fn archived_segments(pg: &Pg) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(pg.data.join("pg_wal/archive_status"))
        .expect("archive_status")
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".done")
                .map(str::to_string)
        })
        .collect();
    v.sort();
    v
}

fn archive_and_recover(backend: Backend) {
    let sb = Sandbox::new(&format!("archive-{backend:?}").to_lowercase());
    let repo = TestRepo::new(&sb, backend);
    let mut primary = Pg::init(&sb, "primary");
    primary.configure(&repo.archiving_conf(&sb));
    primary.start();

    // A base backup without WAL: everything after it must come from the archive.
    primary
        .client(
            "pg_basebackup",
            &[
                "-D",
                sb.path().join("copy").to_str().unwrap(),
                "-X",
                "none",
                "-c",
                "fast",
            ],
        )
        .assert_ok();

    primary
        .client("pgbench", &["-i", "-s", "3", "-q", "postgres"])
        .assert_ok();
    primary
        .client("pgbench", &["-t", "300", "-c", "2", "postgres"])
        .assert_ok();
    primary.sql("create table marker(id int primary key, note text); insert into marker values (1, 'before the end')");
    let last = primary.switch_and_wait_archived();
    let expected = primary
        .sql("select count(*), sum(abalance), (select note from marker) from pgbench_accounts");
    assert_eq!(
        primary.sql("select failed_count from pg_stat_archiver"),
        "0",
        "{}",
        primary.log_text()
    );

    // Every segment PostgreSQL archived is stored and fetches back byte for byte.
    let segments = archived_segments(&primary);
    assert!(
        segments.len() >= 3 && segments.contains(&last),
        "{segments:?}"
    );
    for seg in &segments {
        let key = format!("wal/00000001/{seg}.zst");
        assert!(
            repo.object_path(&key).exists(),
            "{key} missing from the repository"
        );
        let mut c = sb.tool("wal-fetch");
        c.args(repo.args()).args([seg.as_str(), "-"]);
        let out = run_with_stdin(&mut c, None);
        out.assert_ok();
        let original = fs::read(primary.data.join("pg_wal").join(seg)).expect("segment in pg_wal");
        assert!(
            out.stdout_bytes == original,
            "{seg} differs after the round trip"
        );
    }

    // Recover the copy through restore_command to the end of the archive.
    let mut copy = Pg::at(&sb, "copy");
    copy.configure(&format!(
        "restore_command = '{}'\narchive_mode = off\n",
        repo.restore_command(&sb)
    ));
    fs::write(copy.data.join("recovery.signal"), "").expect("recovery.signal");
    sb.chown_to_pg(&copy.data);
    copy.start_recovery();
    copy.wait_promoted(Duration::from_secs(180));
    let got =
        copy.sql("select count(*), sum(abalance), (select note from marker) from pgbench_accounts");
    assert_eq!(got, expected, "recovered data differs\n{}", copy.log_text());
    let log = copy.log_text();
    assert!(
        log.contains(&format!("restored log file \"{last}\" from archive")),
        "{log}"
    );
    assert!(log.contains("archive recovery complete"), "{log}");
    assert_eq!(repo.log().matches("panicked").count(), 0);
}

#[test]
fn archive_and_recover_on_filesystem() {
    archive_and_recover(Backend::Fs);
}

#[test]
fn archive_and_recover_on_s3() {
    archive_and_recover(Backend::S3);
}
