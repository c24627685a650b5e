//! The cases file: known inputs of a plugin with the outcome each must have. Separate from
//! the suite because it is the author's side of the bargain — read and checked for
//! contradictions (a case named twice, one expecting both a result and an error) before any
//! plugin is called, with errors of its own that the CLI classifies as bad input.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use flowhost_core::class::{Classify, ErrorClass};

/// The cases file: known inputs with their expected outcome. Without one the suite still
/// checks the component, `describe()` and malformed input, but skips what needs a valid input.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cases {
    /// Set when the task deliberately provides no name (it works only by side effect).
    #[serde(default)]
    pub allow_no_provides: bool,
    /// The cases, in file order.
    #[serde(default, rename = "case")]
    pub cases: Vec<Case>,
}

/// One known input of the cases file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Names the case in the report.
    pub name: String,
    /// The `args` object handed to `execute`.
    #[serde(default)]
    pub args: Map<String, Value>,
    /// The `config` object handed to `execute`.
    #[serde(default)]
    pub config: Map<String, Value>,
    /// The exact result expected, when the result is known in advance.
    pub expect: Option<Value>,
    /// The error code expected instead of a result.
    pub expect_error: Option<String>,
    /// False for tasks whose result differs between runs (e.g. they mint ids): the repeat
    /// check is skipped for this case.
    #[serde(default = "yes")]
    pub deterministic: bool,
}

fn yes() -> bool {
    true
}

/// The cases file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CasesError {
    /// The file could not be read.
    #[error("cannot read cases file {}: {source}", path.display())]
    Read {
        /// The cases file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed, holds unknown keys, or a case contradicts itself.
    #[error("invalid cases file {}: {message}", path.display())]
    Parse {
        /// The cases file.
        path: PathBuf,
        /// What is wrong, with line and column where the parser gave them.
        message: String,
    },
}

impl Cases {
    /// Reads a cases file (TOML, one `[[case]]` table per case).
    pub fn from_file(path: &Path) -> Result<Self, CasesError> {
        let text = std::fs::read_to_string(path).map_err(|source| CasesError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let parse = |message: String| CasesError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let cases: Self = toml::from_str(&text).map_err(|e| parse(e.to_string()))?;
        let mut names = HashSet::new();
        for case in &cases.cases {
            if !names.insert(case.name.as_str()) {
                return Err(parse(format!("case `{}` appears twice", case.name)));
            }
            if case.expect.is_some() && case.expect_error.is_some() {
                return Err(parse(format!(
                    "case `{}` sets both `expect` and `expect_error`",
                    case.name
                )));
            }
        }
        Ok(cases)
    }
}

impl Classify for CasesError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Read { .. } => ErrorClass::Unreadable,
            _ => ErrorClass::Invalid,
        }
    }
}
