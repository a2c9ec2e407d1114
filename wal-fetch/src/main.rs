//! `wal-fetch`: PostgreSQL's `restore_command`. The logic lives in the library.

fn main() {
    pitrkit::runner::main(
        "wal-fetch",
        pitrkit::runner::Role::RestoreCommand,
        wal_fetch::run,
    )
}
