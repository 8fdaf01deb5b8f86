//! placeholder
use futures_util::future::BoxFuture;

use super::cli::CODEX;
use super::{Executor, Run, RunOutcome};

pub struct Codex;

impl Executor for Codex {
    fn name(&self) -> &'static str {
        "codex"
    }

    fn run<'a>(&'a self, _run: Run<'a>) -> BoxFuture<'a, RunOutcome> {
        Box::pin(async { RunOutcome::Failed(CODEX.missing()) })
    }
}
