//! Nested flows and their retry controllers (TaskFlow's subflows and `Times`, `ForEach`,
//! `ParameterizedForEach`).
//!
//! A flow's entry is either a task or a subflow: a named group of entries with its own
//! pattern and, optionally, a controller that runs the whole group again when one of its
//! tasks fails for good. In a flow file a subflow is a `[[task]]` holding a `flow` table
//! instead of a `plugin`, its entries nested as `[[task.task]]`, so file order stays the
//! order of the flow:
//!
//! ```toml
//! [[task]]
//! name = "schedule"
//! flow = { pattern = "linear", retry = { for_each = { values = ["a", "b"], provides = "host" } } }
//!
//!   [[task.task]]
//!   name = "volume_cast"
//!   plugin = "volume_cast.wasm"
//! ```

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::{FlowSpec, Pattern, TaskSpec};

/// One entry of a flow: a task, or a subflow of entries.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Entry {
    /// A task running one plugin.
    Task(TaskSpec),
    /// A group of entries with its own pattern and retry controller.
    Flow(Subflow),
}

/// A flow nested in a flow: its entries run by its own pattern, and its controller may run
/// them all again after a failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subflow {
    /// The entry's name; its tasks are named after it (`schedule/volume_cast`).
    pub name: String,
    /// The subflow's own pattern and controller.
    pub flow: SubflowHead,
    /// Entries of the enclosing flow this subflow runs after (in a graph flow).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// The subflow's entries, in order.
    #[serde(default, rename = "task")]
    pub tasks: Vec<Entry>,
}

/// What makes an entry a subflow: how its entries are ordered and retried.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubflowHead {
    /// How the subflow's entries are ordered (linear by default).
    #[serde(default)]
    pub pattern: Pattern,
    /// Runs the subflow again after one of its tasks failed for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Controller>,
}

/// A subflow's retry controller: how many iterations it gets and what each one is given.
/// Exactly one of `times`, `for_each` and `parameterized_for_each` is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Controller {
    /// Runs the subflow up to this many times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
    /// Runs the subflow once per value, each iteration given the next one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<ForEach>,
    /// Runs the subflow once per value of a list read from the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameterized_for_each: Option<ParameterizedForEach>,
    /// What happens when the last iteration failed too.
    #[serde(default)]
    pub strategy: Strategy,
}

/// `for_each`: the values of the iterations and the store name they are given under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForEach {
    /// One value per iteration, in order.
    pub values: Vec<Value>,
    /// The store name the subflow's tasks read the iteration's value from.
    pub provides: String,
}

/// `parameterized_for_each`: the store name holding the list, and the name each value is
/// given under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParameterizedForEach {
    /// The store name of a JSON array, read when an iteration starts.
    pub from: String,
    /// The store name the subflow's tasks read the iteration's value from.
    pub provides: String,
}

/// What a controller does once its iterations are used up (TaskFlow's REVERT, REVERT_ALL).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Revert this subflow, then hand the failure to the enclosing subflow's controller;
    /// the whole flow reverts when none retries.
    #[default]
    Revert,
    /// Revert the whole flow, whatever enclosing controllers would do.
    RevertAll,
}

/// Which values the iterations of a controller get.
#[derive(Debug, Clone, PartialEq)]
pub enum Iterations<'a> {
    /// A number of iterations, given nothing.
    Times(u32),
    /// These values, under this name.
    Values(&'a [Value], &'a str),
    /// The array in the store under `from`, under `provides`.
    FromStore {
        /// Where the list is read.
        from: &'a str,
        /// Where each value is given.
        provides: &'a str,
    },
}

impl Controller {
    /// Runs the subflow up to `n` times.
    pub fn times(n: u32) -> Self {
        Self { times: Some(n), ..Self::default() }
    }

    /// Runs the subflow once per value of `values`, each given under `provides`.
    pub fn for_each(values: impl IntoIterator<Item = Value>, provides: impl Into<String>) -> Self {
        let for_each = ForEach { values: values.into_iter().collect(), provides: provides.into() };
        Self { for_each: Some(for_each), ..Self::default() }
    }

    /// Runs the subflow once per value of the store's array `from`, each given under
    /// `provides`.
    pub fn parameterized_for_each(from: impl Into<String>, provides: impl Into<String>) -> Self {
        let each = ParameterizedForEach { from: from.into(), provides: provides.into() };
        Self { parameterized_for_each: Some(each), ..Self::default() }
    }

    /// Sets what happens once the iterations are used up.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The controller's kind, or why it has none: exactly one kind must be set.
    pub fn iterations(&self) -> Result<Iterations<'_>, String> {
        match (&self.times, &self.for_each, &self.parameterized_for_each) {
            (Some(n), None, None) => Ok(Iterations::Times(*n)),
            (None, Some(each), None) => Ok(Iterations::Values(&each.values, &each.provides)),
            (None, None, Some(each)) => Ok(Iterations::FromStore { from: &each.from, provides: &each.provides }),
            _ => Err("a subflow's `retry` sets exactly one of `times`, `for_each` and `parameterized_for_each`".into()),
        }
    }
}

impl Subflow {
    /// An empty subflow of `pattern` named `name`, without controller.
    pub fn new(name: impl Into<String>, pattern: Pattern) -> Self {
        Self { name: name.into(), flow: SubflowHead { pattern, retry: None }, after: Vec::new(), tasks: Vec::new() }
    }

    /// An empty linear subflow.
    pub fn linear(name: impl Into<String>) -> Self {
        Self::new(name, Pattern::Linear)
    }

    /// Appends an entry (a task or a subflow).
    #[allow(clippy::should_implement_trait)]
    pub fn add(mut self, entry: impl Into<Entry>) -> Self {
        self.tasks.push(entry.into());
        self
    }

    /// Sets the retry controller.
    pub fn retry(mut self, controller: Controller) -> Self {
        self.flow.retry = Some(controller);
        self
    }

    /// Runs this subflow after the entries named (in a graph flow).
    pub fn after<I: IntoIterator<Item = S>, S: Into<String>>(mut self, entries: I) -> Self {
        self.after.extend(entries.into_iter().map(Into::into));
        self
    }
}

impl Entry {
    /// The entry's name within its flow.
    pub fn name(&self) -> &str {
        match self {
            Entry::Task(task) => &task.name,
            Entry::Flow(flow) => &flow.name,
        }
    }

    /// The entries it orders itself after.
    pub fn after(&self) -> &[String] {
        match self {
            Entry::Task(task) => &task.after,
            Entry::Flow(flow) => &flow.after,
        }
    }
}

impl From<TaskSpec> for Entry {
    fn from(task: TaskSpec) -> Self {
        Entry::Task(task)
    }
}

impl From<Subflow> for Entry {
    fn from(flow: Subflow) -> Self {
        Entry::Flow(flow)
    }
}

/// A flow built on its own becomes a subflow without controller: its name, pattern and
/// entries (its store defaults, limits and retry default belong to a whole run and are
/// not carried).
impl From<FlowSpec> for Entry {
    fn from(flow: FlowSpec) -> Self {
        let mut sub = Subflow::new(flow.name, flow.pattern);
        sub.tasks = flow.tasks;
        Entry::Flow(sub)
    }
}

/// An entry holding a `flow` table is a subflow, any other a task. Each is read with its
/// own strict schema, so a misspelt key is reported with the entry's name.
impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let table = toml::Table::deserialize(deserializer)?;
        let name = table.get("name").and_then(toml::Value::as_str).unwrap_or("?").to_owned();
        let subflow = table.contains_key("flow");
        let value = toml::Value::Table(table);
        let parsed = if subflow { value.try_into().map(Entry::Flow) } else { value.try_into().map(Entry::Task) };
        parsed.map_err(|e| {
            let kind = if subflow { "subflow" } else { "task" };
            D::Error::custom(format!("{kind} `{name}`: {}", e.message()))
        })
    }
}
