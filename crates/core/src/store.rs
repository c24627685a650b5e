//! The store: the run's named JSON values, and how a task's arguments are drawn from it and
//! its result written back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::contract::{HostFault, TaskError};

/// Named JSON values flowing through a run, like TaskFlow's storage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Store(BTreeMap<String, Value>);

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name`, replacing any earlier value.
    pub fn insert(&mut self, name: impl Into<String>, value: Value) -> Option<Value> {
        self.0.insert(name.into(), value)
    }

    /// The value stored under `name`: TaskFlow's `engine.storage.fetch(name)`.
    pub fn fetch(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// Whether `name` is stored.
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// Removes `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        self.0.remove(name)
    }

    /// Names and values in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.0.iter()
    }

    /// Stored names in order.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }

    /// Copies every value of `other` in, `other` winning on equal names.
    pub fn extend(&mut self, other: Store) {
        self.0.extend(other.0);
    }

    /// The store as one JSON object.
    pub fn to_json(&self) -> Value {
        Value::Object(self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

impl FromIterator<(String, Value)> for Store {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl From<BTreeMap<String, Value>> for Store {
    fn from(map: BTreeMap<String, Value>) -> Self {
        Self(map)
    }
}

/// How one task entry reads from and writes to the store, after rebind, inject and provides
/// are applied to what the plugin declares.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// `(argument, store name)` for each required argument not injected.
    pub required: Vec<(String, String)>,
    /// `(argument, store name)` for each optional argument not injected.
    pub optional: Vec<(String, String)>,
    /// Injected arguments.
    pub inject: BTreeMap<String, Value>,
    /// Store names the result is saved under.
    pub provides: Vec<String>,
    /// The names the plugin declares it provides. When the entry renames several of them
    /// (`provides = ["req_a", "req_b"]`), the result's keys are these names, stored under
    /// `provides` by position.
    pub declared: Vec<String>,
    /// The store names the entry's `when` reads: dependencies like required names, never
    /// arguments.
    pub condition: Vec<String>,
}

impl Binding {
    /// Builds the `args` object: exactly the required names (a missing one is an error naming
    /// argument and store key) plus the optional names present, injected values winning.
    pub fn arguments(&self, store: &Store) -> Result<Value, Vec<(String, String)>> {
        let mut args = Map::new();
        let mut missing = Vec::new();
        for (arg, key) in &self.required {
            match store.fetch(key) {
                Some(value) => {
                    args.insert(arg.clone(), value.clone());
                }
                None => missing.push((arg.clone(), key.clone())),
            }
        }
        for (arg, key) in &self.optional {
            if let Some(value) = store.fetch(key) {
                args.insert(arg.clone(), value.clone());
            }
        }
        for (arg, value) in &self.inject {
            args.insert(arg.clone(), value.clone());
        }
        if missing.is_empty() {
            Ok(Value::Object(args))
        } else {
            Err(missing)
        }
    }

    /// Splits a result into the values to store: one provided name takes the whole result,
    /// several take the keys of an object result. When the entry renames the plugin's
    /// declared names one for one, the result holds the declared names (the plugin does not
    /// know the entry's) and each is stored under the entry's name at the same position.
    pub fn outputs(&self, result: Value) -> Result<Vec<(String, Value)>, TaskError> {
        match self.provides.as_slice() {
            [] => Ok(Vec::new()),
            [only] => Ok(vec![(only.clone(), result)]),
            names => {
                let keys = if self.declared.len() == names.len() {
                    &self.declared
                } else {
                    &self.provides
                };
                let Value::Object(mut object) = result else {
                    return Err(HostFault::MissingProvides.error(format!(
                        "result must be a JSON object holding {}, got {}",
                        quoted(keys),
                        kind_of(&result)
                    )));
                };
                let missing: Vec<String> = keys
                    .iter()
                    .filter(|k| !object.contains_key(*k))
                    .cloned()
                    .collect();
                if !missing.is_empty() {
                    return Err(HostFault::MissingProvides.error(format!(
                        "result lacks provided name(s) {}",
                        quoted(&missing)
                    )));
                }
                Ok(keys
                    .iter()
                    .zip(names)
                    .map(|(key, name)| (name.clone(), object.remove(key).unwrap_or(Value::Null)))
                    .collect())
            }
        }
    }
}

/// Renders names as "`a`, `b`" for messages.
pub fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// "a number", "an object", … for messages about a value of the wrong kind.
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An integer in JSON text that fits neither an `i64` nor a `u64`: serde_json would hold it
/// as a float, silently rounding it (`18446744073709551617` becomes `18446744073709552000`),
/// and the run would see another number than was sent. Every way store values come in —
/// `--store`, `--store-file`, `run --batch` lines, the API's start body, a flow file's
/// `[store]` — refuses it with this one message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the integer {integer} does not fit in 64 bits, so it would become the inexact number {rounded}; write it as a string (\"{integer}\")"
)]
pub struct InexactInteger {
    /// The integer as written.
    pub integer: String,
    /// What it would have become.
    pub rounded: String,
}

/// The first integer literal in JSON text (outside strings) that fits neither an `i64` nor
/// a `u64`. The text is scanned as written, before parsing, because parsing is where the
/// integer would be rounded.
pub fn inexact_integer(json: &str) -> Option<InexactInteger> {
    let bytes = json.as_bytes();
    let (mut i, mut in_string) = (0, false);
    while i < bytes.len() {
        let byte = bytes[i];
        if in_string {
            match byte {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
        } else if byte == b'"' {
            in_string = true;
            i += 1;
        } else if byte == b'-' || byte.is_ascii_digit() {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_digit() || b"+-.eE".contains(&bytes[i])) {
                i += 1;
            }
            let token = &json[start..i];
            let integer = !token.contains(['.', 'e', 'E']);
            if integer && token.parse::<i64>().is_err() && token.parse::<u64>().is_err() {
                return Some(inexact(token));
            }
        } else {
            i += 1;
        }
    }
    None
}

/// The refusal of `integer` (digits, maybe signed), with the float it would have become.
pub fn inexact(integer: &str) -> InexactInteger {
    InexactInteger {
        integer: integer.to_owned(),
        rounded: integer
            .parse::<f64>()
            .map(|f: f64| f.to_string())
            .unwrap_or_else(|_| "a float".into()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn integers_beyond_64_bits_are_found_before_they_are_rounded() {
        assert_eq!(
            inexact_integer("{\"n\": 18446744073709551615, \"m\": -9223372036854775808}"),
            None
        );
        let found =
            inexact_integer("{\"s\": \"99999999999999999999\", \"n\": [1, 18446744073709551616]}")
                .unwrap();
        assert_eq!(found.integer, "18446744073709551616");
        let message = found.to_string();
        assert!(
            message.starts_with("the integer 18446744073709551616 does not fit in 64 bits, so it would become the inexact number 18446744073709552000;")
                && message.ends_with("write it as a string (\"18446744073709551616\")"),
            "{message}"
        );
        assert_eq!(
            inexact_integer("{\"f\": 1e400, \"g\": 1.5}"),
            None,
            "floats are left alone"
        );
        assert_eq!(
            inexact_integer("-9223372036854775809").unwrap().integer,
            "-9223372036854775809"
        );
    }
    use serde_json::json;

    use super::*;

    fn binding(provides: &[&str]) -> Binding {
        Binding {
            required: vec![("size".into(), "raw_size".into())],
            optional: vec![("zone".into(), "zone".into())],
            inject: [("kind".to_owned(), json!("ssd"))].into_iter().collect(),
            provides: provides.iter().map(|s| (*s).to_owned()).collect(),
            declared: provides.iter().map(|s| (*s).to_owned()).collect(),
            condition: vec![],
        }
    }

    #[test]
    fn arguments_hold_required_present_optional_and_injected_names_only() {
        let store: Store = [
            ("raw_size".to_owned(), json!(10)),
            ("other".to_owned(), json!(1)),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            binding(&[]).arguments(&store),
            Ok(json!({"size": 10, "kind": "ssd"}))
        );
    }

    #[test]
    fn a_missing_required_name_reports_argument_and_store_key() {
        assert_eq!(
            binding(&[]).arguments(&Store::new()),
            Err(vec![("size".into(), "raw_size".into())])
        );
    }

    #[test]
    fn one_provided_name_takes_the_whole_result() {
        assert_eq!(
            binding(&["volume"]).outputs(json!([1, 2])),
            Ok(vec![("volume".into(), json!([1, 2]))])
        );
    }

    #[test]
    fn several_provided_names_split_an_object_and_name_what_is_missing() {
        let split = binding(&["a", "b"]).outputs(json!({"a": 1, "b": 2, "c": 3}));
        assert_eq!(
            split,
            Ok(vec![("a".into(), json!(1)), ("b".into(), json!(2))])
        );
        let missing = binding(&["a", "b"]).outputs(json!({"a": 1})).unwrap_err();
        assert_eq!(missing.code, "missing-provides");
        assert!(missing.message.contains("`b`"), "{}", missing.message);
        let not_object = binding(&["a", "b"]).outputs(json!(5)).unwrap_err();
        assert!(
            not_object.message.contains("got a number"),
            "{}",
            not_object.message
        );
    }

    #[test]
    fn renamed_provides_take_the_declared_keys_by_position() {
        let renamed = Binding {
            provides: vec!["req_a".into(), "req_b".into()],
            declared: vec!["size".into(), "zone".into()],
            ..binding(&[])
        };
        assert_eq!(
            renamed.outputs(json!({"size": 1, "zone": "nova"})),
            Ok(vec![
                ("req_a".into(), json!(1)),
                ("req_b".into(), json!("nova"))
            ])
        );
        let missing = renamed.outputs(json!({"size": 1})).unwrap_err();
        assert!(
            missing.message.contains("`zone`"),
            "names the key the plugin had to return: {}",
            missing.message
        );
    }
}
