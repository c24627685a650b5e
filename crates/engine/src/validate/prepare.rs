//! The loading and binding step of validation, in two halves: [`prepare`] walks the flow's
//! tree in order once, loads and describes each entry's plugin, builds its sandbox from the
//! flow's grants, binds its arguments and results to store names and runs every check that
//! holds whatever the initial store; [`check_run`] then runs, for each run, what depends on
//! that run: the checks against its initial store's names, and the sandboxes that read the
//! host when a run loads (granted directories pinned per run, `env` and secrets read then).
//! Separate from the checks because this is the part with effects (files read, components
//! compiled, warm pools made) and the order that decides what each check can know: a name
//! is a source only once an earlier entry or subflow provided it.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use flowhost_core::contract::TaskInfo;
use flowhost_core::flow::{FlowSpec, Instances, Iterations, Pattern, TaskSpec};
use flowhost_core::plan::graph::{self, Deps};
use flowhost_core::plan::tree::{MapScope, Scope, Tree};
use flowhost_core::plan::{Problem, ValidationError};
use flowhost_core::store::{Binding, Store};
use flowhost_runtime::{Plugin, PluginError, Runtime, Sandbox};

use super::checks::{
    Finding, Sources, check_arguments_known, check_condition, check_entry, check_flow,
    check_limits, check_list_source, check_map_start, check_map_task, check_memory_fits,
    check_name, check_on_failure, check_provides, check_renamed_provides, check_requirements,
    check_retry, check_wait,
};
use crate::condition::{Condition, Unparsable};
use crate::task::BoundTask;

/// Where a problem stands in the report: problems are listed in the order a walk of the
/// flow in file order finds them, whichever half found them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Place {
    /// 0 for the flow itself, `i + 1` for task `i` (`len + 1` for what closes after the last
    /// task), [`usize::MAX`] for the graph.
    at: usize,
    /// The step of that place's walk: the maps that close and open there, the entry as a
    /// task of a map, its subflow's list, the name, the grants, the entry and its plugin,
    /// then what the store decides.
    step: u8,
}

const FLOW: usize = 0;
const GRAPH: usize = usize::MAX;
const MAPS: u8 = 0;
const MAP_TASK: u8 = 1;
const LIST: u8 = 2;
const NAME: u8 = 3;
const GRANTS: u8 = 4;
const ENTRY: u8 = 5;
const STORE: u8 = 6;

fn task_at(index: usize) -> usize {
    index + 1
}

/// A problem and where it stands.
#[derive(Debug, Clone)]
pub(crate) struct Placed {
    place: Place,
    problem: Problem,
}

impl Placed {
    /// The findings of one check of entry `task` (none: of the flow), placed at (`at`, `step`).
    fn all(
        at: usize,
        step: u8,
        task: Option<&str>,
        found: Vec<Finding>,
    ) -> impl Iterator<Item = Placed> {
        found
            .into_iter()
            .map(move |Finding { field, message }| Placed {
                place: Place { at, step },
                problem: Problem {
                    task: task.map(str::to_owned),
                    field: field.map(str::to_owned),
                    message,
                },
            })
    }
}

/// One entry of a prepared flow.
pub(crate) struct Entry {
    /// The entry bound to its plugin (or, for a wait entry, to none), unless its plugin did
    /// not load.
    pub(crate) task: Option<Arc<BoundTask>>,
    /// Its sandbox reads the host when a run loads: granted directories (pinned per run),
    /// `env` variables, the flow's secrets. Rebuilt for every run; the one in `task` is the
    /// one preparation saw.
    pub(crate) per_run: bool,
}

/// What validation learns of a flow whatever the initial store.
pub(crate) struct Static {
    pub(crate) tree: Tree,
    pub(crate) entries: Vec<Entry>,
    pub(crate) problems: Vec<Placed>,
    pub(crate) host_unavailable: bool,
    /// What each entry waits for, by the flow's pattern (empty when an entry is unbound).
    pub(crate) deps: Deps,
    /// For each entry, the tasks whose IGNORE makes it IGNORE too.
    pub(crate) ignored_with: Deps,
    /// Every name a successful run's final store holds besides its initial store: what the
    /// entries and the controllers provide, less what a map's iterations keep to
    /// themselves, plus each map's `collect`.
    pub(crate) provided: HashSet<String>,
}

/// Walks `flow` once: loads and describes every plugin, binds every entry and runs every
/// check that no initial store can change.
pub(crate) async fn prepare(runtime: &Runtime, flow: &FlowSpec) -> Static {
    let tree = Tree::of(flow);
    let mut problems: Vec<Placed> = Vec::new();
    let mut report = |at: usize, step: u8, task: Option<&str>, found: Vec<Finding>| {
        problems.extend(Placed::all(at, step, task, found))
    };
    report(FLOW, 1, None, check_flow(flow));
    if !tree.all_linear() {
        for map in &tree.maps {
            let message = "a map runs in a flow whose levels are all `linear`";
            report(
                FLOW,
                1,
                Some(&map.path),
                vec![Finding::at("flow.map", message)],
            );
        }
    }
    let mut host_unavailable = false;
    // Each distinct plugin loads (read, checked, deserialized, described) side by side with
    // the others; the walk below takes each outcome once (a second entry of a plugin that
    // failed to load tries again, as it always did). A wait entry loads nothing.
    let mut paths: Vec<PathBuf> = tree
        .tasks
        .iter()
        .filter_map(plugin_of)
        .map(|plugin| flow.resolve(plugin))
        .collect();
    paths.sort();
    paths.dedup();
    let loads = futures_util::future::join_all(paths.iter().map(|path| runtime.load(path))).await;
    let mut loaded: HashMap<PathBuf, Result<Arc<Plugin>, PluginError>> =
        paths.into_iter().zip(loads).collect();
    let mut entries = Vec::with_capacity(tree.tasks.len());
    for (index, spec) in tree.tasks.iter().enumerate() {
        let (at, task) = (task_at(index), Some(spec.name.as_str()));
        if Tree::map_of(&tree.maps, index).is_some() {
            report(at, MAP_TASK, task, check_map_task(spec));
        }
        let local = spec.name.rsplit('/').next().unwrap_or_default();
        report(
            at,
            NAME,
            task,
            check_name("task", local)
                .map(|m| Finding::at("name", m))
                .into_iter()
                .collect(),
        );
        let per_run = reads_host(spec, flow);
        let (sandbox, grant_problems) = Sandbox::for_entry(spec, flow, runtime.protected());
        if !per_run {
            report(
                at,
                GRANTS,
                task,
                grant_problems.into_iter().map(Finding::anywhere).collect(),
            );
        }
        report(
            at,
            ENTRY,
            task,
            check_entry(spec, &sandbox, runtime.fuel_metering()),
        );
        report(at, ENTRY, task, check_limits(&sandbox));
        report(at, ENTRY, task, check_retry(spec.retry.as_ref()));
        report(
            at,
            ENTRY,
            task,
            check_on_failure(spec.on_failure.as_deref())
                .into_iter()
                .collect(),
        );
        let condition = match spec.when.as_deref().map(Condition::parse) {
            None => None,
            Some(Ok(condition)) => Some(condition),
            Some(Err(errors)) => {
                report(at, ENTRY, task, unparsable(errors));
                None
            }
        };
        let (wait, wait_problems) = check_wait(spec);
        report(at, ENTRY, task, wait_problems);
        if spec.wait.is_none() && spec.plugin.is_none() {
            report(
                at,
                ENTRY,
                task,
                vec![Finding::at(
                    "plugin",
                    "an entry needs a `plugin` (or a `wait`)",
                )],
            );
        }
        let outcome = match plugin_of(spec).map(|plugin| flow.resolve(plugin)) {
            None => None,
            Some(path) => Some(match loaded.remove(&path) {
                Some(outcome) => outcome,
                None => runtime.load(&path).await,
            }),
        };
        let plugin = match outcome {
            None => None,
            Some(Ok(plugin)) => Some(plugin),
            Some(Err(error)) => {
                host_unavailable |= matches!(error, PluginError::Unavailable { .. });
                report(
                    at,
                    ENTRY,
                    task,
                    vec![Finding::at("plugin", error.to_string())],
                );
                entries.push(Entry {
                    task: None,
                    per_run,
                });
                continue;
            }
        };
        let mut binding = match &plugin {
            Some(plugin) => {
                report(at, ENTRY, task, check_arguments_known(spec, plugin.info()));
                report(at, ENTRY, task, check_memory_fits(&sandbox, plugin));
                report(at, ENTRY, task, check_renamed_provides(spec, plugin.info()));
                bind(spec, plugin.info())
            }
            // A wait reads nothing; a signal's data goes whole under its `provides`.
            None => bind(spec, &nothing_declared()),
        };
        if let Some(condition) = &condition {
            binding.condition = condition.names.clone();
        }
        let warm = plugin
            .as_ref()
            .filter(|_| spec.instances == Instances::Reuse && !per_run)
            .map(|plugin| plugin.warm_pool(&sandbox));
        let mut bound = BoundTask::new(
            spec,
            plugin,
            binding,
            sandbox,
            warm,
            flow.retry_policy(spec),
            condition,
        )
        .waiting(wait);
        bound.suspends = flow.suspends_on_failure(spec);
        entries.push(Entry {
            task: Some(Arc::new(bound)),
            per_run,
        });
    }
    // Problems of the tree come first, as the walk finds them before anything else.
    let mut placed: Vec<Placed> = tree
        .problems
        .iter()
        .map(|problem| Placed {
            place: Place { at: FLOW, step: 0 },
            problem: problem.clone(),
        })
        .collect();
    placed.extend(problems);
    let mut deps = Deps::new();
    let bound: Option<Vec<&Binding>> = entries
        .iter()
        .map(|e| e.task.as_ref().map(|t| &t.binding))
        .collect();
    if let Some(bindings) = &bound {
        // Whatever the store, the graph's edges are the same; in a linear flow so are its
        // findings (requirements are checked in file order instead). Other patterns check
        // requirements here too: those findings are each run's (`check_run`).
        match graph::dependencies(&tree.levels, &tree.tasks, bindings, &|_| true) {
            Ok(found) => deps = found,
            Err(found) if tree.all_linear() => placed.extend(found.into_iter().map(at_graph)),
            Err(_) => {}
        }
    }
    let ignored_with = ignored_with(&tree, &entries);
    let provided = provided(&tree, &entries);
    Static {
        tree,
        entries,
        problems: placed,
        host_unavailable,
        deps,
        ignored_with,
        provided,
    }
}

/// The plugin an entry calls: none for a wait entry (whose `plugin`, if any, is a problem
/// of it) or an entry that names none.
fn plugin_of(spec: &TaskSpec) -> Option<&std::path::Path> {
    spec.plugin.as_deref().filter(|_| spec.wait.is_none())
}

/// The names a successful run's final store holds besides its initial store, walking the
/// entries in file order as a run's store fills: what each entry and controller provides
/// (an unloaded entry's own `provides`), then, as each map closes, its element and what
/// its tasks provided leave and its `collect` comes.
fn provided(tree: &Tree, entries: &[Entry]) -> HashSet<String> {
    let mut names = HashSet::new();
    for index in 0..=tree.tasks.len() {
        for map in tree.maps.iter().filter(|m| m.tasks.end == index) {
            names.remove(&map.map.each);
            for entry in &entries[..index] {
                if let Some(task) = entry.task.as_ref().filter(|t| inside(map, t)) {
                    for name in &task.binding.provides {
                        names.remove(name);
                    }
                }
            }
            names.insert(map.map.collect.clone());
        }
        let Some(spec) = tree.tasks.get(index) else {
            break;
        };
        for map in tree.maps.iter().filter(|m| m.tasks.start == index) {
            names.insert(map.map.each.clone());
        }
        for scope in tree.scopes.iter().filter(|s| s.tasks.start == index) {
            if let Some((provides, _)) = scope_names(scope) {
                names.insert(provides.to_owned());
            }
        }
        match &entries[index].task {
            Some(task) => names.extend(task.binding.provides.iter().cloned()),
            None => names.extend(spec.provides.iter().flatten().cloned()),
        }
    }
    names
}

/// What a run starts from: its initial store and its bound tasks.
pub(crate) type RunStart = (Store, Arc<[Arc<BoundTask>]>);

/// A run's own part of validation: `store` over the flow's `[store]` defaults is checked
/// against what each entry reads (and what each map reads its list from, gives its
/// elements as and collects into), and the entries whose sandbox reads the host get
/// theirs now. Returns the run's initial store and its tasks, or every problem of the flow.
pub(crate) fn check_run(
    runtime: &Runtime,
    flow: &FlowSpec,
    prepared: &Static,
    tasks: &Arc<[Arc<BoundTask>]>,
    store: Store,
) -> Result<RunStart, ValidationError> {
    let mut initial: Store = flow.store.clone().into();
    initial.extend(store);
    let tree = &prepared.tree;
    let mut problems = prepared.problems.clone();
    let mut report = |at: usize, step: u8, task: Option<&str>, found: Vec<Finding>| {
        problems.extend(Placed::all(at, step, task, found))
    };
    let mut sources = Sources::new(&initial);
    // Without a plugin's declaration, later "missing name" findings could be false.
    let mut blind = false;
    let mut own: Vec<(usize, Arc<BoundTask>)> = Vec::new();
    for (index, (spec, entry)) in tree.tasks.iter().zip(&prepared.entries).enumerate() {
        let (at, task) = (task_at(index), Some(spec.name.as_str()));
        for map in tree.maps.iter().filter(|m| m.tasks.end == index) {
            let found = close_map(map, &prepared.entries[..index], &mut sources);
            report(at, MAPS, Some(&map.path), found);
        }
        for map in tree.maps.iter().filter(|m| m.tasks.start == index) {
            if !blind {
                report(
                    at,
                    MAPS,
                    Some(&map.path),
                    check_map_start(&map.map, &sources),
                );
            }
            sources.given_by_subflow(&map.map.each, &map.path);
        }
        // What a controller gives its scope is there from the scope's first task on.
        for scope in tree.scopes.iter().filter(|s| s.tasks.start == index) {
            if let Some((provides, from)) = scope_names(scope) {
                if let Some(from) = from
                    && !blind
                {
                    report(
                        at,
                        LIST,
                        Some(&scope.path),
                        check_list_source(from, &sources),
                    );
                }
                sources.given_by_subflow(provides, &scope.path);
            }
        }
        if entry.per_run {
            let (sandbox, grant_problems) = Sandbox::for_entry(spec, flow, runtime.protected());
            report(
                at,
                GRANTS,
                task,
                grant_problems.into_iter().map(Finding::anywhere).collect(),
            );
            if let Some(bound) = &entry.task {
                let warm = bound
                    .plugin
                    .as_ref()
                    .filter(|_| spec.instances == Instances::Reuse)
                    .map(|plugin| plugin.warm_pool(&sandbox));
                own.push((index, Arc::new(bound.with_sandbox(sandbox, warm))));
            }
        }
        let Some(bound) = &entry.task else {
            match &spec.provides {
                Some(provides) => provides.iter().for_each(|n| sources.provide(n, &spec.name)),
                None => blind = true,
            }
            continue;
        };
        // Other patterns do not read file order: their requirements are checked with the graph.
        if !blind && tree.all_linear() {
            report(
                at,
                STORE,
                task,
                check_requirements(&bound.binding, &sources, &tree.tasks[index + 1..]),
            );
            if let Some(condition) = &bound.condition {
                let known = |name: &str| sources.has(name);
                let whence = "neither the initial store nor an earlier task provides";
                report(at, STORE, task, check_condition(condition, &known, whence));
            }
        }
        report(
            at,
            STORE,
            task,
            check_provides(&bound.binding, &spec.name, &mut sources),
        );
    }
    let end = tree.tasks.len();
    for map in tree.maps.iter().filter(|m| m.tasks.end == end) {
        let found = close_map(map, &prepared.entries, &mut sources);
        report(task_at(end), MAPS, Some(&map.path), found);
    }
    if !tree.all_linear() && tasks.len() == tree.tasks.len() {
        let given: HashSet<&str> = tree
            .scopes
            .iter()
            .filter_map(|s| scope_names(s).map(|(p, _)| p))
            .collect();
        let available = |key: &str| initial.contains(key) || given.contains(key);
        let bindings: Vec<&Binding> = tasks.iter().map(|t| &t.binding).collect();
        if let Err(found) = graph::dependencies(&tree.levels, &tree.tasks, &bindings, &available) {
            problems.extend(found.into_iter().map(at_graph));
        }
        // In any order: a `when` may read what any other task provides.
        let providers: HashMap<&str, usize> = bindings
            .iter()
            .enumerate()
            .flat_map(|(i, b)| b.provides.iter().map(move |n| (n.as_str(), i)))
            .collect();
        for (index, task) in tasks.iter().enumerate() {
            let Some(condition) = &task.condition else {
                continue;
            };
            let known =
                |name: &str| available(name) || providers.get(name).is_some_and(|&p| p != index);
            let whence = "neither the initial store nor any other task provides";
            let found = check_condition(condition, &known, whence);
            problems.extend(Placed::all(GRAPH, 1, Some(&task.name), found));
        }
    }
    if !problems.is_empty() {
        // Stable: within one place, in the order found.
        problems.sort_by_key(|p| p.place);
        return Err(ValidationError {
            flow: flow.name.clone(),
            problems: problems.into_iter().map(|p| p.problem).collect(),
            host_unavailable: prepared.host_unavailable,
        });
    }
    let tasks = if own.is_empty() {
        tasks.clone()
    } else {
        let mut mine: Vec<Arc<BoundTask>> = tasks.to_vec();
        for (index, task) in own {
            mine[index] = task;
        }
        mine.into()
    };
    Ok((initial, tasks))
}

fn at_graph(problem: Problem) -> Placed {
    Placed {
        place: Place { at: GRAPH, step: 0 },
        problem,
    }
}

/// Whether the entry's sandbox reads the host when a run loads, so that each run needs its
/// own: a granted directory is pinned per run, `env` is read then, and every entry of a flow
/// with secrets carries the run's secrets (to cut them out of what it returns).
fn reads_host(spec: &TaskSpec, flow: &FlowSpec) -> bool {
    !spec.dirs.is_empty() || !spec.env.is_empty() || !flow.secrets.is_empty()
}

/// Whether `task` is one of `map`'s tasks (or of a subflow inside it).
fn inside(map: &MapScope, task: &BoundTask) -> bool {
    task.name
        .strip_prefix(map.path.as_str())
        .is_some_and(|rest| rest.starts_with('/'))
}

/// After a map's last task (`before` are the entries up to there): its element and what
/// its tasks provided stay inside its iterations; what follows sees `collect`, which must
/// be a new name. A run's check: whether `collect` is new depends on its initial store.
fn close_map(map: &MapScope, before: &[Entry], sources: &mut Sources) -> Vec<Finding> {
    sources.forget(&map.map.each);
    for task in before.iter().filter_map(|e| e.task.as_deref()) {
        if inside(map, task) {
            for name in &task.binding.provides {
                sources.forget(name);
            }
        }
    }
    if let Some(source) = sources.source(&map.map.collect) {
        let message = format!(
            "collects into `{}`, which {source} already provides; choose another name",
            map.map.collect
        );
        return vec![Finding::at("flow.map.collect", message)];
    }
    sources.given_by_subflow(&map.map.collect, &map.path);
    Vec::new()
}

/// The store name a controller gives its scope's tasks and, for `parameterized_for_each`,
/// the name its list is read from.
fn scope_names(scope: &Scope) -> Option<(&str, Option<&str>)> {
    match scope.controller.iterations() {
        Ok(Iterations::Values(_, provides)) => Some((provides, None)),
        Ok(Iterations::FromStore { from, provides }) => Some((provides, Some(from))),
        _ => None,
    }
}

/// The findings of a `when` that does not parse, each naming where.
fn unparsable(errors: Vec<Unparsable>) -> Vec<Finding> {
    errors
        .into_iter()
        .map(|e| {
            Finding::at(
                "when",
                format!(
                    "`when` does not parse at line {}, column {}: {}",
                    e.line, e.column, e.message
                ),
            )
        })
        .collect()
}

/// For each task, the tasks whose IGNORE makes it IGNORE too: those providing a name it
/// requires or its `when` reads, and in a graph the entries it names in `after`. A name
/// read only as optional is simply absent; the order of a linear flow alone carries
/// nothing (a task after an ignored one runs, unless it needs its results). Empty when an
/// entry is unbound (the flow does not run then).
fn ignored_with(tree: &Tree, entries: &[Entry]) -> Deps {
    let Some(tasks): Option<Vec<&BoundTask>> = entries.iter().map(|e| e.task.as_deref()).collect()
    else {
        return Deps::new();
    };
    let providers: HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .flat_map(|(i, t)| t.binding.provides.iter().map(move |n| (n.as_str(), i)))
        .collect();
    let mut with: Deps = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let reads = t.binding.required.iter().map(|(_, key)| key);
            reads
                .chain(&t.binding.condition)
                .filter_map(|key| providers.get(key.as_str()).copied())
                .filter(|&p| p != i)
                .collect()
        })
        .collect();
    for level in tree.levels.iter().filter(|l| l.pattern == Pattern::Graph) {
        let by_name: HashMap<&str, &std::ops::Range<usize>> = level
            .nodes
            .iter()
            .map(|n| (n.local.as_str(), &n.tasks))
            .collect();
        for node in &level.nodes {
            for before in node.after.iter().filter_map(|a| by_name.get(a.as_str())) {
                for t in node.tasks.clone() {
                    with[t].extend((*before).clone());
                }
            }
        }
    }
    for list in &mut with {
        list.sort_unstable();
        list.dedup();
    }
    with
}

/// What a wait entry declares, having no plugin: nothing read, nothing provided but what
/// the entry's `provides` says.
fn nothing_declared() -> TaskInfo {
    TaskInfo {
        name: String::new(),
        version: String::new(),
        description: String::new(),
        requires: Vec::new(),
        optional: Vec::new(),
        provides: Vec::new(),
    }
}

/// How the entry reads its arguments and writes its result, after rebind, inject and provides.
pub(super) fn bind(spec: &TaskSpec, info: &TaskInfo) -> Binding {
    let bind = |args: &[String]| -> Vec<(String, String)> {
        args.iter()
            .filter(|a| !spec.inject.contains_key(*a))
            .map(|a| (a.clone(), spec.rebind.get(a).unwrap_or(a).clone()))
            .collect()
    };
    Binding {
        required: bind(&info.requires),
        optional: bind(&info.optional),
        inject: spec.inject.clone(),
        provides: spec
            .provides
            .clone()
            .unwrap_or_else(|| info.provides.clone()),
        declared: info.provides.clone(),
        condition: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::validate::checks::tests::info;

    #[test]
    fn binding_applies_rebind_and_leaves_injected_arguments_out_of_the_store() {
        let spec = TaskSpec::new("t", "p.wasm")
            .rebind("size", "raw_size")
            .inject("zone", json!("a"));
        let binding = bind(&spec, &info(&["size", "zone"], &["extra"], &["out"]));
        assert_eq!(
            binding.required,
            vec![("size".to_owned(), "raw_size".to_owned())]
        );
        assert_eq!(
            binding.optional,
            vec![("extra".to_owned(), "extra".to_owned())]
        );
        assert_eq!(binding.provides, vec!["out".to_owned()]);
    }
}
