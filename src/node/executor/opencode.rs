//! placeholder
use futures_util::future::BoxFuture;

use super::cli::OPENCODE;
use super::{Executor, Run, RunOutcome};

pub struct OpenCode;

impl Executor for OpenCode {
    fn name(&self) -> &'static str {
        "opencode"
    }

    fn run<'a>(&'a self, _run: Run<'a>) -> BoxFuture<'a, RunOutcome> {
        Box::pin(async { RunOutcome::Failed(OPENCODE.missing()) })
    }
}
