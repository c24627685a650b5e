//! Subflows, flattened: a flow's tree of entries becomes one list of tasks (depth first, so
//! file order) that the one scheduler runs, plus what the tree still decides — each level's
//! pattern, for the dependency graph, and each retry controller's scope.
//!
//! A task inside subflows is named by its path (`schedule/volume_cast`): names stay unique
//! across the tree and reports show where a task sits. Each entry of a level covers a
//! contiguous range of the flat tasks, which is what the level's pattern orders.

use std::ops::Range;

use serde_json::Value;

use super::Problem;
use crate::flow::{Controller, Entry, FlowSpec, Iterations, Map, Pattern, Strategy, TaskSpec};

/// One entry of a level: its name there, the entries it runs after, its flat tasks.
pub struct Node {
    /// The entry's path, as reports name it.
    pub path: String,
    /// Its name among its siblings, which `after` uses.
    pub local: String,
    /// The siblings it runs after (`after = [..]`), by local name.
    pub after: Vec<String>,
    /// Its flat tasks, as indices into [`Tree::tasks`].
    pub tasks: Range<usize>,
    /// "task" or "subflow", as messages name it.
    pub kind: &'static str,
}

/// The flow, or one subflow, as its pattern sees it.
pub struct Level {
    /// How the level orders its entries.
    pub pattern: Pattern,
    /// Its entries, in file order.
    pub nodes: Vec<Node>,
}

/// A subflow with a retry controller: the flat tasks it runs again.
#[derive(Debug, Clone)]
pub struct Scope {
    /// The subflow's path (`schedule`, `reserve/quota`).
    pub path: String,
    /// The flat tasks it runs again, as indices into [`Tree::tasks`].
    pub tasks: Range<usize>,
    /// How it tries again.
    pub controller: Controller,
    /// The enclosing scope, which takes a failure this one gives up on.
    pub parent: Option<usize>,
}

/// A subflow that maps over a list: the flat tasks each of its iterations runs, in order.
#[derive(Debug, Clone)]
pub struct MapScope {
    /// The subflow's path (`attach`).
    pub path: String,
    /// The flat tasks of one iteration, as indices into [`Tree::tasks`].
    pub tasks: Range<usize>,
    /// What it maps over, the name each element is given under, where the results go.
    pub map: Map,
}

/// The flow's tree, flattened.
pub struct Tree {
    /// Every task, named by its path, in file order.
    pub tasks: Vec<TaskSpec>,
    /// The flow's level first, then each subflow's.
    pub levels: Vec<Level>,
    /// The subflows with a retry controller, outermost first.
    pub scopes: Vec<Scope>,
    /// The subflows that map over a list, in file order.
    pub maps: Vec<MapScope>,
    /// Subflow entries' problems: a controller that is not one kind, or gives no iteration.
    pub problems: Vec<Problem>,
}

impl Tree {
    /// Flattens `flow`: every task by its path, each level and each scope.
    pub fn of(flow: &FlowSpec) -> Self {
        let mut tree = Tree {
            tasks: Vec::new(),
            levels: Vec::new(),
            scopes: Vec::new(),
            maps: Vec::new(),
            problems: Vec::new(),
        };
        tree.level(flow.pattern, &flow.tasks, "", None);
        tree
    }

    /// Whether every level is linear: file order is then the order tasks run in.
    pub fn all_linear(&self) -> bool {
        self.levels.iter().all(|l| l.pattern == Pattern::Linear)
    }

    /// The scopes holding task `index`, innermost first.
    pub fn scopes_of(scopes: &[Scope], index: usize) -> impl Iterator<Item = usize> + '_ {
        let innermost = scopes.iter().rposition(|s| s.tasks.contains(&index));
        std::iter::successors(innermost, |&s| scopes[s].parent)
    }

    fn level(&mut self, pattern: Pattern, entries: &[Entry], prefix: &str, scope: Option<usize>) {
        let mut nodes = Vec::with_capacity(entries.len());
        let at = self.levels.len();
        self.levels.push(Level {
            pattern,
            nodes: Vec::new(),
        });
        let mut names = std::collections::HashSet::new();
        for entry in entries {
            let path = format!("{prefix}{}", entry.name());
            if !names.insert(entry.name()) {
                self.problems.push(problem(
                    &path,
                    "name",
                    "duplicate task name; every entry needs its own name".into(),
                ));
            }
            if matches!(entry, Entry::Flow(_))
                && (entry.name().is_empty() || entry.name().contains('/'))
            {
                let message =
                    "a subflow's name names its tasks' paths: it is not empty and holds no `/`"
                        .into();
                self.problems.push(problem(&path, "name", message));
            }
            let start = self.tasks.len();
            match entry {
                Entry::Task(task) => {
                    let mut task = task.clone();
                    task.name.clone_from(&path);
                    self.tasks.push(task);
                }
                Entry::Flow(flow) => {
                    let inner = match &flow.flow.retry {
                        Some(controller) => {
                            self.check(&path, controller);
                            self.scopes.push(Scope {
                                path: path.clone(),
                                tasks: start..start,
                                controller: controller.clone(),
                                parent: scope,
                            });
                            Some(self.scopes.len() - 1)
                        }
                        None => scope,
                    };
                    if let Some(map) = &flow.flow.map {
                        self.check_map(&path, flow, map, scope.is_some());
                    }
                    if flow.tasks.is_empty() {
                        self.problems.push(problem(
                            &path,
                            "task",
                            "the subflow has no entries".into(),
                        ));
                    }
                    self.level(flow.flow.pattern, &flow.tasks, &format!("{path}/"), inner);
                    if inner != scope
                        && let Some(inner) = inner
                    {
                        self.scopes[inner].tasks.end = self.tasks.len();
                    }
                    if let Some(map) = &flow.flow.map {
                        self.maps.push(MapScope {
                            path: path.clone(),
                            tasks: start..self.tasks.len(),
                            map: map.clone(),
                        });
                    }
                }
            }
            let tasks = start..self.tasks.len();
            let kind = if matches!(entry, Entry::Task(_)) {
                "task"
            } else {
                "subflow"
            };
            nodes.push(Node {
                path,
                local: entry.name().to_owned(),
                after: entry.after().to_vec(),
                tasks,
                kind,
            });
        }
        self.levels[at].nodes = nodes;
    }

    /// A map names its three store names, holds only tasks run in order (so no map inside a
    /// map), and sits where nothing would run its iterations again: not beside a retry
    /// controller, not inside a subflow that has one.
    fn check_map(&mut self, path: &str, flow: &crate::flow::Subflow, map: &Map, in_scope: bool) {
        for (field, name) in [
            ("flow.map.over", &map.over),
            ("flow.map.as", &map.each),
            ("flow.map.collect", &map.collect),
        ] {
            if name.trim().is_empty() {
                let key = field.rsplit('.').next().unwrap_or(field);
                let message = format!("`map.{key}` must name a store key");
                self.problems.push(problem(path, field, message));
            }
        }
        if map.each == map.over || map.each == map.collect {
            let message = format!(
                "`map.as` (`{}`) must differ from `map.over` and `map.collect`",
                map.each
            );
            self.problems.push(problem(path, "flow.map.as", message));
        }
        if flow.flow.retry.is_some() {
            let message = "a subflow maps over a list or retries, not both".into();
            self.problems.push(problem(path, "flow.map", message));
        }
        if flow.flow.pattern != Pattern::Linear {
            let message =
                "a map's iterations run its tasks in file order: its `pattern` is `linear`".into();
            self.problems.push(problem(path, "flow.pattern", message));
        }
        if in_scope {
            let message = "a map cannot sit inside a subflow with a retry controller".into();
            self.problems.push(problem(path, "flow.map", message));
        }
        if flow.tasks.iter().any(|e| matches!(e, Entry::Flow(_))) {
            let message = "a map's entries are tasks, not subflows".into();
            self.problems.push(problem(path, "task", message));
        }
    }

    /// The map whose iterations run task `index`, if any.
    pub fn map_of(maps: &[MapScope], index: usize) -> Option<usize> {
        maps.iter().position(|m| m.tasks.contains(&index))
    }

    /// A controller of one kind that gives at least one iteration.
    fn check(&mut self, path: &str, controller: &Controller) {
        let found = match controller.iterations() {
            Err(message) => Some(("flow.retry", message)),
            Ok(Iterations::Times(0)) => {
                Some(("flow.retry.times", "`times` must be at least 1".into()))
            }
            Ok(Iterations::Values([], _)) => Some((
                "flow.retry.for_each.values",
                "`for_each.values` must hold at least one value".into(),
            )),
            Ok(Iterations::Values(_, "") | Iterations::FromStore { provides: "", .. }) => {
                Some(("flow.retry", "`provides` must name a store key".into()))
            }
            Ok(_) => None,
        };
        if let Some((field, message)) = found {
            self.problems.push(problem(path, field, message));
        }
    }
}

fn problem(task: &str, field: &str, message: String) -> Problem {
    Problem {
        task: Some(task.to_owned()),
        field: Some(field.to_owned()),
        message,
    }
}

impl Scope {
    /// How many iterations the controller gives, with the store as it stands (a
    /// `parameterized_for_each` list is read from it).
    pub fn iterations(&self, store: &crate::store::Store) -> u32 {
        match self.controller.iterations() {
            Ok(Iterations::Times(n)) => n,
            Ok(Iterations::Values(values, _)) => values.len() as u32,
            Ok(Iterations::FromStore { from, .. }) => store
                .fetch(from)
                .and_then(Value::as_array)
                .map_or(0, |list| list.len() as u32),
            Err(_) => 0,
        }
    }

    /// The store name and value iteration `iteration` (from 1) gives the scope's tasks, or
    /// why it cannot: the list is not in the store, or too short.
    pub fn given(
        &self,
        iteration: u32,
        store: &crate::store::Store,
    ) -> Result<Option<(&str, Value)>, String> {
        let at = iteration.saturating_sub(1) as usize;
        match self.controller.iterations() {
            Ok(Iterations::Values(values, provides)) => {
                Ok(values.get(at).map(|v| (provides, v.clone())))
            }
            Ok(Iterations::FromStore { from, provides }) => {
                match store.fetch(from).map(|v| v.as_array()) {
                    Some(Some(list)) => list
                        .get(at)
                        .map(|v| Some((provides, v.clone())))
                        .ok_or_else(|| {
                            format!(
                                "subflow `{}`: `{from}` holds no value {iteration}",
                                self.path
                            )
                        }),
                    Some(None) => Err(format!(
                        "subflow `{}`: `{from}` in the store is not a list",
                        self.path
                    )),
                    None => Err(format!("subflow `{}`: the store lacks `{from}`", self.path)),
                }
            }
            _ => Ok(None),
        }
    }

    /// Whether an exhausted controller reverts the whole flow.
    pub fn reverts_all(&self) -> bool {
        self.controller.strategy == Strategy::RevertAll
    }
}
