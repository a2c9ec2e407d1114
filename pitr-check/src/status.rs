//! `pitr-check status`.

use pitrkit::error::{Error, Result};
use pitrkit::runner::Verdict;
use pitrkit::settings::RepoArgs;

use crate::StatusArgs;

pub fn run(_args: &StatusArgs, _repo: &RepoArgs) -> Result<Verdict> {
    Err(Error::Usage("not yet".into()))
}
