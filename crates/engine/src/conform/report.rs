//! What the suite reports: one [`Check`] per part of the contract, each passed, failed or
//! skipped with a reason. Separate from the checks so that the report is a plain value a
//! plugin author can assert on in `cargo test` and `flowhost conform` prints, whatever
//! produced it.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use flowhost_core::contract::escape;

/// How one check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The plugin honours this part of the contract.
    Pass,
    /// It does not; the reason says how.
    Fail,
    /// The check could not run (no cases file, or an earlier check failed).
    Skip,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pass => "pass",
            Self::Fail => "FAIL",
            Self::Skip => "skip",
        })
    }
}

/// One check of the suite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable identifier, e.g. `imports`, `input.args-not-json`, `revert.small-order`.
    pub id: String,
    /// How it ended.
    pub status: Status,
    /// Why, in a sentence an author can act on.
    pub reason: String,
}

/// Everything the suite found about one plugin.
#[derive(Debug, Clone, Serialize)]
pub struct ConformReport {
    /// The plugin file.
    pub plugin: PathBuf,
    /// Every check, in the order run.
    pub checks: Vec<Check>,
}

impl ConformReport {
    /// True when no check failed (skipped checks do not fail the plugin).
    pub fn passed(&self) -> bool {
        !self.checks.iter().any(|c| c.status == Status::Fail)
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.status == Status::Fail)
    }

    /// The check with this id, to assert on in tests.
    pub fn check(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }

    pub(super) fn push(
        &mut self,
        id: impl Into<String>,
        status: Status,
        reason: impl Into<String>,
    ) {
        self.checks.push(Check {
            id: id.into(),
            status,
            reason: reason.into(),
        });
    }
}

impl fmt::Display for ConformReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
        for check in &self.checks {
            // Reasons quote the plugin's own errors: escaped, one line per check.
            writeln!(
                f,
                "{:<4}  {:<width$}  {}",
                check.status,
                escape(&check.id),
                escape(&check.reason)
            )?;
        }
        let count = |s| self.checks.iter().filter(|c| c.status == s).count();
        write!(
            f,
            "{}: {} passed, {} failed, {} skipped",
            self.plugin.display(),
            count(Status::Pass),
            count(Status::Fail),
            count(Status::Skip)
        )
    }
}

/// Names for a reason, each quoted: "`a`, `b`", or "nothing".
pub(super) fn list(names: &[String]) -> String {
    if names.is_empty() {
        return "nothing".into();
    }
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
