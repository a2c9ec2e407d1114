//! `bb-restore`: restore a base backup and configure recovery. The logic lives in the library.

fn main() {
    pitrkit::runner::main(
        "bb-restore",
        pitrkit::runner::Role::Standard,
        bb_restore::run,
    )
}
