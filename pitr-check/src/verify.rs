//! `pitr-check verify`.

use pitrkit::error::{Error, Result};
use pitrkit::runner::Verdict;
use pitrkit::settings::RepoArgs;

use crate::VerifyArgs;

pub fn run(_args: &VerifyArgs, _repo: &RepoArgs) -> Result<Verdict> {
    Err(Error::Usage("not yet".into()))
}
