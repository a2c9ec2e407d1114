//! `bb-push`: take a base backup into a pitrkit repository. The logic lives in the library.

fn main() {
    pitrkit::runner::main("bb-push", pitrkit::runner::Role::Standard, bb_push::run)
}
