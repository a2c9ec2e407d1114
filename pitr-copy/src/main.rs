//! `pitr-copy`: keep a verified second copy of a repository. The logic lives in the library.

fn main() {
    pitrkit::runner::main("pitr-copy", pitrkit::runner::Role::Standard, pitr_copy::run)
}
