//! `pitr-check drill`.

use pitrkit::error::{Error, Result};
use pitrkit::runner::Verdict;
use pitrkit::settings::RepoArgs;

use crate::DrillArgs;

pub fn run(_args: &DrillArgs, _repo: &RepoArgs) -> Result<Verdict> {
    Err(Error::Usage("not yet".into()))
}
