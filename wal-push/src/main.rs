//! `wal-push`: PostgreSQL's `archive_command`. The logic lives in the library.

fn main() {
    pitrkit::runner::main("wal-push", pitrkit::runner::Role::Standard, wal_push::run)
}
