//! The one retry loop of every commit: a commit that lost the race to another writer reads the
//! table again and tries again after a short, growing pause, at most [`COMMIT_ATTEMPTS`] times.

use std::fmt::Display;
use std::time::Duration;

use datafusion::common::Result;

use super::unavailable;

/// How many times a commit is tried before it gives up to other writers.
pub(super) const COMMIT_ATTEMPTS: usize = 10;

/// The attempts of one commit.
pub(super) struct Retries<'a> {
    doing: &'a str,
    name: &'a str,
    attempt: usize,
}

impl<'a> Retries<'a> {
    /// The attempts of `doing` (e.g. "overwriting") table `name`.
    pub(super) fn new(doing: &'a str, name: &'a str) -> Self {
        Self {
            doing,
            name,
            attempt: 0,
        }
    }

    /// After a lost race: logs it and pauses before the next attempt, or fails (`UNAVAILABLE`)
    /// when the attempts are used up.
    pub(super) async fn lost(&mut self, why: impl Display) -> Result<()> {
        self.attempt += 1;
        if self.attempt >= COMMIT_ATTEMPTS {
            return Err(unavailable(format!(
                "{} {}: lost the race to other writers {COMMIT_ATTEMPTS} times: {why}",
                self.doing, self.name
            )));
        }
        tracing::info!(
            table = self.name,
            attempt = self.attempt,
            "{} lost a race, trying again: {why}",
            self.doing
        );
        tokio::time::sleep(Duration::from_millis(20 * self.attempt as u64)).await;
        Ok(())
    }
}
