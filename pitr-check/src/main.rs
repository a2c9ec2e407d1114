//! `pitr-check`: prove the archive can restore. The logic lives in the library.

fn main() {
    pitrkit::runner::main_check("pitr-check", pitr_check::run)
}
