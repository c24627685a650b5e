//! Conditional tasks: an entry's `when`, a CEL expression (the Common Expression Language,
//! through the `cel` crate, `cel-interpreter` under its new name) over store names. It is parsed once at validation —
//! the names it reads become the entry's dependencies, like required arguments — and
//! evaluated on the store when the entry is about to start: false, and the task is IGNORE.
//!
//! CEL is small, total and side-effect free: an expression cannot loop, reach the host or
//! change the store, so a flow author's condition is as safe to evaluate as a comparison.

use cel::{Context, Program, Value as Cel};
use serde_json::Value;

use flowhost_core::contract::TaskError;
use flowhost_core::store::Store;

/// The error code of a task whose `when` could not be evaluated (a name of the wrong type,
/// an optional name that is absent, a result that is not a boolean): it fails without
/// being called.
pub const CONDITION_FAILED: &str = "condition-failed";

/// A parsed `when`: its text and the store names it reads.
#[derive(Debug, Clone)]
pub(crate) struct Condition {
    pub(crate) source: String,
    /// The store names the expression reads, sorted.
    pub(crate) names: Vec<String>,
}

/// Why a `when` is refused at validation: where in the expression, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unparsable {
    /// 1-based line and column in the expression.
    pub(crate) line: usize,
    pub(crate) column: usize,
    pub(crate) message: String,
}

impl Condition {
    /// Parses `source`, or says where it does not parse.
    pub(crate) fn parse(source: &str) -> Result<Self, Vec<Unparsable>> {
        let program = Program::compile(source).map_err(|errors| {
            errors
                .errors
                .iter()
                .map(|e| Unparsable {
                    line: usize::try_from(e.pos.0).unwrap_or(0).max(1),
                    column: usize::try_from(e.pos.1).unwrap_or(0) + 1,
                    message: e.msg.clone(),
                })
                .collect::<Vec<_>>()
        })?;
        let mut names: Vec<String> = program
            .references()
            .variables()
            .into_iter()
            .filter(|name| !bound_by_macro(source, name))
            .map(str::to_owned)
            .collect();
        names.sort();
        Ok(Self {
            source: source.to_owned(),
            names,
        })
    }

    /// Where `name` first appears in the expression as a whole word, as 1-based (line,
    /// column): what a validation message points at.
    pub(crate) fn position_of(&self, name: &str) -> (usize, usize) {
        let bytes = self.source.as_bytes();
        let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        let at = self
            .source
            .match_indices(name)
            .map(|(at, _)| at)
            .find(|&at| {
                let before = at == 0 || !word(bytes[at - 1]);
                let after = bytes.get(at + name.len()).is_none_or(|&c| !word(c));
                before && after
            })
            .unwrap_or(0);
        let line = self.source[..at].matches('\n').count() + 1;
        let column = at - self.source[..at].rfind('\n').map_or(0, |n| n + 1) + 1;
        (line, column)
    }

    /// Evaluates the expression on `store`: each name it reads that the store holds is a
    /// variable (an absent one fails the evaluation, naming it).
    pub(crate) fn holds(&self, store: &Store) -> Result<bool, TaskError> {
        let failed = |message: String| TaskError {
            code: CONDITION_FAILED.to_owned(),
            message,
            details: None,
        };
        let program = Program::compile(&self.source)
            .map_err(|e| failed(format!("`when` does not parse: {e}")))?;
        let mut context = Context::default();
        for name in &self.names {
            if let Some(value) = store.fetch(name) {
                context.add_variable_from_value(name.clone(), to_cel(value));
            }
        }
        match program.execute(&context) {
            Ok(Cel::Bool(holds)) => Ok(holds),
            Ok(other) => Err(failed(format!(
                "`when = \"{}\"` gave {other:?}, not a boolean",
                self.source
            ))),
            Err(error) => Err(failed(format!(
                "`when = \"{}\"` could not be evaluated: {error}",
                self.source
            ))),
        }
    }
}

/// Whether `name` is a variable a macro binds (`list.exists(x, x > 1)` binds `x`), not a
/// store name: it appears as the first argument of `all`, `exists`, `exists_one`, `map` or
/// `filter`.
fn bound_by_macro(source: &str, name: &str) -> bool {
    ["all", "exists", "exists_one", "map", "filter"]
        .iter()
        .any(|m| {
            source.match_indices(&format!(".{m}(")).any(|(at, text)| {
                source[at + text.len()..]
                    .trim_start()
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.trim_start().starts_with(','))
            })
        })
}

/// A JSON store value as a CEL value: numbers stay integers when they are, unsigned ones
/// beyond `i64` become `uint`.
fn to_cel(value: &Value) -> Cel {
    match value {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Cel::Int(i),
            (None, Some(u)) => Cel::UInt(u),
            _ => Cel::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Cel::String(s.clone().into()),
        Value::Array(items) => Cel::List(items.iter().map(to_cel).collect::<Vec<_>>().into()),
        Value::Object(map) => {
            let map: std::collections::HashMap<String, Cel> =
                map.iter().map(|(k, v)| (k.clone(), to_cel(v))).collect();
            Cel::Map(map.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn store(pairs: &[(&str, Value)]) -> Store {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn a_condition_reads_store_names_and_decides_on_them() {
        let when = Condition::parse("reservations.gigabytes > 0 && volume_type != 'ssd'").unwrap();
        assert_eq!(when.names, ["reservations", "volume_type"]);
        let s = store(&[
            ("reservations", json!({ "gigabytes": 10 })),
            ("volume_type", json!("hdd")),
        ]);
        assert_eq!(when.holds(&s), Ok(true));
        let s = store(&[
            ("reservations", json!({ "gigabytes": 0 })),
            ("volume_type", json!("hdd")),
        ]);
        assert_eq!(when.holds(&s), Ok(false));
        let lists = Condition::parse("zones.exists(z, z == 'nova') && size(zones) < 3").unwrap();
        assert_eq!(lists.names, ["zones"], "z is the macro's, not the store's");
        assert_eq!(
            lists.holds(&store(&[("zones", json!(["a", "nova"]))])),
            Ok(true)
        );
    }

    #[test]
    fn a_condition_that_cannot_decide_fails_naming_why() {
        let when = Condition::parse("size > 1").unwrap();
        let error = when.holds(&Store::new()).unwrap_err();
        assert_eq!(error.code, CONDITION_FAILED);
        assert!(error.message.contains("size > 1"), "{}", error.message);
        let error = when.holds(&store(&[("size", json!("big"))])).unwrap_err();
        assert_eq!(error.code, CONDITION_FAILED);
        let error = Condition::parse("size + 1")
            .unwrap()
            .holds(&store(&[("size", json!(1))]))
            .unwrap_err();
        assert!(error.message.contains("not a boolean"), "{}", error.message);
    }

    #[test]
    fn a_condition_that_does_not_parse_says_where() {
        let errors = Condition::parse("size > ").unwrap_err();
        assert_eq!(errors[0].line, 1);
        assert!(errors[0].column >= 7, "{errors:?}");
        let when = Condition::parse("a > 1 &&\n  volume_type == 'x'").unwrap();
        assert_eq!(when.position_of("volume_type"), (2, 3));
        assert_eq!(when.position_of("a"), (1, 1));
    }
}
