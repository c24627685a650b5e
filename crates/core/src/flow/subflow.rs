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

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::{DirGrant, FlowSpec, Instances, Limits, Net, Pattern, Retry, TaskSpec, Wait};

/// One entry of a flow: a task, or a subflow of entries.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
#[expect(
    clippy::large_enum_variant,
    reason = "a flow holds a few entries, built once; boxing would only burden the builder"
)]
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
    /// Runs the subflow once per element of a list instead (a fan-out), collecting what
    /// each iteration provided last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<Map>,
}

/// `map`: the subflow's tasks run once per element of the store's array `over`, iterations
/// at once up to the flow's `max_parallel`; each iteration sees its element under `as`, and
/// the subflow provides `collect`, the array of what each iteration provided last, in
/// element order (TaskFlow's `MapFunctorTask` and `ReduceFunctorTask` in one entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Map {
    /// The store name of the array mapped over, read when the subflow starts.
    pub over: String,
    /// The store name each iteration's tasks read their element from.
    #[serde(rename = "as")]
    pub each: String,
    /// The store name the array of the iterations' last provided values is stored under.
    pub collect: String,
}

impl Map {
    /// Maps over the store's array `over`, each element given as `each`, collecting into
    /// `collect`.
    pub fn new(
        over: impl Into<String>,
        each: impl Into<String>,
        collect: impl Into<String>,
    ) -> Self {
        Self {
            over: over.into(),
            each: each.into(),
            collect: collect.into(),
        }
    }
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
        Self {
            times: Some(n),
            ..Self::default()
        }
    }

    /// Runs the subflow once per value of `values`, each given under `provides`.
    pub fn for_each(values: impl IntoIterator<Item = Value>, provides: impl Into<String>) -> Self {
        let for_each = ForEach {
            values: values.into_iter().collect(),
            provides: provides.into(),
        };
        Self {
            for_each: Some(for_each),
            ..Self::default()
        }
    }

    /// Runs the subflow once per value of the store's array `from`, each given under
    /// `provides`.
    pub fn parameterized_for_each(from: impl Into<String>, provides: impl Into<String>) -> Self {
        let each = ParameterizedForEach {
            from: from.into(),
            provides: provides.into(),
        };
        Self {
            parameterized_for_each: Some(each),
            ..Self::default()
        }
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
        Self {
            name: name.into(),
            flow: SubflowHead {
                pattern,
                retry: None,
                map: None,
            },
            after: Vec::new(),
            tasks: Vec::new(),
        }
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

    /// Runs this subflow once per element of a list ([`Map`]).
    pub fn map(mut self, map: Map) -> Self {
        self.flow.map = Some(map);
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

/// An entry as a flow file spells it: a task's keys, or a subflow's (`flow` and nested
/// `task`s). Read with one strict schema, so a misspelt key is reported at its line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: String,
    plugin: Option<PathBuf>,
    wait: Option<Wait>,
    #[serde(default)]
    rebind: BTreeMap<String, String>,
    #[serde(default)]
    inject: BTreeMap<String, Value>,
    config: Option<Value>,
    provides: Option<Vec<String>>,
    #[serde(default)]
    dirs: Vec<DirGrant>,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    env_set: BTreeMap<String, String>,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    instances: Instances,
    retry: Option<Retry>,
    #[serde(default)]
    after: Vec<String>,
    #[serde(default)]
    net: Net,
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default)]
    secrets_env: BTreeMap<String, String>,
    when: Option<String>,
    #[serde(default)]
    priority: i32,
    on_failure: Option<String>,
    flow: Option<SubflowHead>,
    task: Option<Vec<Entry>>,
}

/// An entry holding a `flow` table is a subflow, any other a task; each may hold only its
/// own keys.
impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawEntry::deserialize(deserializer)?;
        let name = raw.name;
        let Some(flow) = raw.flow else {
            if raw.task.is_some() {
                return Err(D::Error::custom(format!(
                    "task `{name}`: nested `task` entries make a subflow, which needs a `flow` table"
                )));
            }
            if raw.plugin.is_none() && raw.wait.is_none() {
                return Err(D::Error::custom(format!(
                    "task `{name}`: missing field `plugin` (or `wait`, for an entry that waits)"
                )));
            }
            let mut task = TaskSpec::new(name, PathBuf::new());
            task.plugin = raw.plugin;
            task.wait = raw.wait;
            task.rebind = raw.rebind;
            task.inject = raw.inject;
            task.config = raw.config.unwrap_or(task.config);
            task.provides = raw.provides;
            task.dirs = raw.dirs;
            task.env = raw.env;
            task.env_set = raw.env_set;
            task.limits = raw.limits;
            task.instances = raw.instances;
            task.retry = raw.retry;
            task.after = raw.after;
            task.net = raw.net;
            task.secrets = raw.secrets;
            task.secrets_env = raw.secrets_env;
            task.when = raw.when;
            task.priority = raw.priority;
            task.on_failure = raw.on_failure;
            return Ok(Entry::Task(task));
        };
        let task_keys = [
            ("plugin", raw.plugin.is_some()),
            ("wait", raw.wait.is_some()),
            ("rebind", !raw.rebind.is_empty()),
            ("inject", !raw.inject.is_empty()),
            ("config", raw.config.is_some()),
            ("provides", raw.provides.is_some()),
            ("dirs", !raw.dirs.is_empty()),
            ("env", !raw.env.is_empty()),
            ("env_set", !raw.env_set.is_empty()),
            ("limits", raw.limits != Limits::default()),
            ("instances", raw.instances != Instances::default()),
            ("retry", raw.retry.is_some()),
            ("net", raw.net != Net::default()),
            ("secrets", !raw.secrets.is_empty()),
            ("secrets_env", !raw.secrets_env.is_empty()),
            ("when", raw.when.is_some()),
            ("priority", raw.priority != 0),
            ("on_failure", raw.on_failure.is_some()),
        ];
        if let Some((key, _)) = task_keys.iter().find(|(_, set)| *set) {
            let hint = if *key == "retry" {
                " (a subflow's controller is `flow.retry`)"
            } else {
                ""
            };
            return Err(D::Error::custom(format!(
                "subflow `{name}`: `{key}` belongs to a task entry{hint}"
            )));
        }
        Ok(Entry::Flow(Subflow {
            name,
            flow,
            after: raw.after,
            tasks: raw.task.unwrap_or_default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_subflows_read_in_file_order_with_their_controllers() {
        let flow = FlowSpec::from_toml(
            r#"name = "f"
[[task]]
name = "reserve"
flow = { retry = { times = 2 } }
  [[task.task]]
  name = "lock"
  plugin = "lock.wasm"
  [[task.task]]
  name = "quota"
  flow = { pattern = "graph", retry = { parameterized_for_each = { from = "pools", provides = "pool" }, strategy = "revert_all" } }
    [[task.task.task]]
    name = "check"
    plugin = "check.wasm"
[[task]]
name = "done"
plugin = "done.wasm"
"#,
        )
        .unwrap();
        let names: Vec<&str> = flow.tasks.iter().map(Entry::name).collect();
        assert_eq!(names, ["reserve", "done"]);
        let Entry::Flow(reserve) = &flow.tasks[0] else {
            panic!("a subflow")
        };
        assert_eq!(reserve.flow.retry, Some(Controller::times(2)));
        let Entry::Flow(quota) = &reserve.tasks[1] else {
            panic!("a subflow")
        };
        assert_eq!(quota.flow.pattern, Pattern::Graph);
        let each =
            Controller::parameterized_for_each("pools", "pool").strategy(Strategy::RevertAll);
        assert_eq!(quota.flow.retry, Some(each));
        let tasks: Vec<&str> = flow.task_specs().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(tasks, ["lock", "check", "done"]);
    }

    #[test]
    fn a_map_reads_over_as_and_collect_and_names_its_tasks_after_it() {
        let flow = FlowSpec::from_toml(
            r#"name = "f"
[[task]]
name = "attach"
flow = { map = { over = "volumes", as = "volume", collect = "attachments" } }
  [[task.task]]
  name = "attach_one"
  plugin = "attach.wasm"
"#,
        )
        .unwrap();
        let Entry::Flow(attach) = &flow.tasks[0] else {
            panic!("a subflow")
        };
        assert_eq!(
            attach.flow.map,
            Some(Map::new("volumes", "volume", "attachments"))
        );
        let tree = crate::plan::tree::Tree::of(&flow);
        assert!(tree.problems.is_empty(), "{:?}", tree.problems);
        assert_eq!(
            (tree.maps[0].path.as_str(), tree.maps[0].tasks.clone()),
            ("attach", 0..1)
        );
        assert_eq!(tree.tasks[0].name, "attach/attach_one");
        let misspelt = FlowSpec::from_toml(
            "name = \"f\"\n[[task]]\nname = \"a\"\nflow = { map = { over = \"v\", each = \"x\", collect = \"c\" } }\n",
        );
        assert!(misspelt.unwrap_err().contains("each"));
    }

    #[test]
    fn a_map_with_a_controller_or_a_subflow_inside_is_refused_naming_the_field() {
        let flow = FlowSpec::linear("f").add(
            Subflow::linear("attach")
                .map(Map::new("volumes", "", "attachments"))
                .retry(Controller::times(2))
                .add(Subflow::linear("inner").add(TaskSpec::new("t", "t.wasm"))),
        );
        let tree = crate::plan::tree::Tree::of(&flow);
        let fields: Vec<&str> = tree
            .problems
            .iter()
            .filter_map(|p| p.field.as_deref())
            .collect();
        assert_eq!(fields, ["flow.map.as", "flow.map", "task"]);
    }

    #[test]
    fn a_flow_added_to_a_flow_is_a_subflow_without_controller() {
        let flow = FlowSpec::linear("outer")
            .add(TaskSpec::new("first", "first.wasm"))
            .add(FlowSpec::graph("inner").add(TaskSpec::new("t", "t.wasm")));
        let Entry::Flow(inner) = &flow.tasks[1] else {
            panic!("a subflow")
        };
        assert_eq!(
            (inner.name.as_str(), inner.flow.pattern, &inner.flow.retry),
            ("inner", Pattern::Graph, &None)
        );
        assert_eq!(inner.tasks, [Entry::Task(TaskSpec::new("t", "t.wasm"))]);
    }
}
