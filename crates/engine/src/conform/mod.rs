//! The plugin conformance suite: does a component honour the `flowhost:task` contract?
//!
//! A plugin author's promise is checked the way the engine will rely on it, by calling the
//! plugin through the same runtime, sandbox and limits a flow uses:
//!
//! 1. the file is a component exporting the contract at a version the host accepts, and it
//!    imports nothing the host does not provide (every offending import is named);
//! 2. `describe()` gives a name, a version, valid and distinct argument names and at least
//!    one provided name (unless the cases file allows none);
//! 3. malformed input (arguments that are not JSON, lack a required name or hold a wrong
//!    type; config that is not an object) comes back as a `task-error`, never a trap;
//! 4. each case of the cases file returns JSON holding every provided name and matching the
//!    expectation, or fails with the expected error code;
//! 5. the same input twice gives the same result (unless the case says it is not
//!    deterministic);
//! 6. `revert` succeeds after a success, again for the same outcome (idempotence), and
//!    with a failure outcome;
//! 7. every call finishes within the default limits.
//!
//! [`conform`] returns a [`ConformReport`], so a plugin author can run the suite from
//! `cargo test`; `flowhost conform` prints the same report.
//!
//! Every call gets a writable scratch directory at [`SCRATCH`], fresh for each case and
//! shared by that case's `execute` and `revert` calls, so a task with file side effects can
//! show that its revert undoes them and can run twice.
//!
//! The pieces, one job each: `cases` reads the cases file ([`Cases`]), `report` holds what
//! the checks found ([`ConformReport`]), `inspect` judges the file and its declaration
//! without running the plugin (checks 1 and 2), `suite` makes the calls (checks 3 to 7).
//! This module only orders them.

mod cases;
mod inspect;
mod report;
mod suite;

use std::path::Path;

use crate::Engine;

pub use cases::{Case, Cases, CasesError};
pub use report::{Check, ConformReport, Status};

use inspect::{check_describe, contract_note, imports_note, report_load_failure};
use suite::Suite;

/// Where the scratch directory appears inside the plugin during the suite.
pub const SCRATCH: &str = "/scratch";

/// Runs the whole suite on the plugin at `path`, with `cases` when given. Never fails: a
/// plugin that cannot even be loaded gets a report naming why, with the later checks skipped.
pub async fn conform(engine: &Engine, path: &Path, cases: Option<&Cases>) -> ConformReport {
    let mut report = ConformReport {
        plugin: path.to_path_buf(),
        checks: Vec::new(),
    };
    let plugin = match engine.plugin(path).await {
        Ok(plugin) => plugin,
        Err(error) => {
            report_load_failure(&mut report, path, &error);
            for id in ["describe", "input", "cases", "revert", "limits"] {
                report.push(id, Status::Skip, "the plugin did not load");
            }
            return report;
        }
    };
    report.push("component", Status::Pass, "a valid WebAssembly component");
    report.push(
        "contract",
        Status::Pass,
        contract_note(plugin.contract_version()),
    );
    report.push("imports", Status::Pass, imports_note(&plugin.imports()));
    check_describe(&mut report, &plugin, cases);
    let mut suite = Suite::new(&plugin);
    suite
        .check_inputs(
            &mut report,
            cases.and_then(|c| c.cases.iter().find(|c| c.expect_error.is_none())),
        )
        .await;
    match cases {
        Some(cases) if !cases.cases.is_empty() => {
            for case in &cases.cases {
                suite.check_case(&mut report, case).await;
            }
        }
        _ => {
            report.push(
                "cases",
                Status::Skip,
                "no cases file: give one with --cases to check results",
            );
            report.push(
                "revert",
                Status::Skip,
                "no cases file: revert needs the outcome of a known input",
            );
        }
    }
    suite.check_limits(&mut report);
    report
}
