//! The loading and binding step of validation: walks the flow's tree in order, loads and
//! describes each entry's plugin, builds its sandbox from the flow's grants, binds its
//! arguments and results to store names, and feeds what it learns to the checks
//! ([`super::checks`]), collecting every finding as a problem of the flow. Separate from the
//! checks because this is the part with effects (files read, components compiled, warm pools
//! made) and the order that decides what each check can know: a name is a source only once
//! an earlier entry or subflow provided it.

use std::collections::{HashMap, HashSet};

use flowhost_core::contract::TaskInfo;
use flowhost_core::flow::{FlowSpec, Instances, Iterations, Pattern, TaskSpec};
use flowhost_core::plan::graph::{self, Deps};
use flowhost_core::plan::tree::{MapScope, Scope, Tree};
use flowhost_core::plan::{Problem, ValidationError};
use flowhost_core::store::{Binding, Store};
use flowhost_runtime::{PluginError, Runtime, Sandbox};

use super::checks::{
    Finding, Sources, check_arguments_known, check_condition, check_entry, check_flow,
    check_limits, check_list_source, check_map_start, check_map_task, check_memory_fits,
    check_name, check_on_failure, check_provides, check_renamed_provides, check_requirements,
    check_retry, check_wait,
};
use crate::condition::{Condition, Unparsable};
use crate::task::BoundTask;

/// A flow that passed validation: its entries bound to their plugins, the initial store, and
/// every name a successful run's final store will hold.
pub(crate) struct Validated {
    pub(crate) tasks: Vec<BoundTask>,
    /// What each entry waits for, by the flow's pattern.
    pub(crate) deps: Deps,
    /// For each entry, the tasks whose IGNORE makes it IGNORE too.
    pub(crate) ignored_with: Deps,
    /// The subflows with a retry controller.
    pub(crate) scopes: Vec<Scope>,
    /// The subflows that map over a list.
    pub(crate) maps: Vec<MapScope>,
    pub(crate) initial: Store,
    pub(crate) provided: HashSet<String>,
}

/// Validates `flow` with `store` over the flow's `[store]` defaults.
pub(crate) async fn validate(
    runtime: &Runtime,
    flow: &FlowSpec,
    store: Store,
) -> Result<Validated, ValidationError> {
    let mut initial: Store = flow.store.clone().into();
    initial.extend(store);
    let tree = Tree::of(flow);
    let mut problems = tree.problems.clone();
    let mut report = |task: Option<&str>, found: Vec<Finding>| {
        problems.extend(found.into_iter().map(|Finding { field, message }| Problem {
            task: task.map(str::to_owned),
            field: field.map(str::to_owned),
            message,
        }))
    };
    report(None, check_flow(flow));
    let mut host_unavailable = false;
    let mut sources = Sources::new(&initial);
    // Without a plugin's declaration, later "missing name" findings could be false.
    let mut blind = false;
    let mut tasks = Vec::with_capacity(tree.tasks.len());
    if !tree.all_linear() {
        for map in &tree.maps {
            let message = "a map runs in a flow whose levels are all `linear`";
            report(Some(&map.path), vec![Finding::at("flow.map", message)]);
        }
    }
    for (index, spec) in tree.tasks.iter().enumerate() {
        for map in tree.maps.iter().filter(|m| m.tasks.end == index) {
            close_map(map, &tasks, &mut sources, &mut report);
        }
        for map in tree.maps.iter().filter(|m| m.tasks.start == index) {
            if !blind {
                report(Some(&map.path), check_map_start(&map.map, &sources));
            }
            sources.given_by_subflow(&map.map.each, &map.path);
        }
        if Tree::map_of(&tree.maps, index).is_some() {
            report(Some(spec.name.as_str()), check_map_task(spec));
        }
        // What a controller gives its scope is there from the scope's first task on.
        for scope in tree.scopes.iter().filter(|s| s.tasks.start == index) {
            if let Some((provides, from)) = scope_names(scope) {
                if let Some(from) = from
                    && !blind
                {
                    report(Some(&scope.path), check_list_source(from, &sources));
                }
                sources.given_by_subflow(provides, &scope.path);
            }
        }
        let task = Some(spec.name.as_str());
        let local = spec.name.rsplit('/').next().unwrap_or_default();
        report(
            task,
            check_name("task", local)
                .map(|m| Finding::at("name", m))
                .into_iter()
                .collect(),
        );
        let (sandbox, grant_problems) = Sandbox::for_entry(spec, flow, runtime.protected());
        report(
            task,
            grant_problems.into_iter().map(Finding::anywhere).collect(),
        );
        report(task, check_entry(spec, &sandbox, runtime.fuel_metering()));
        report(task, check_limits(&sandbox));
        report(task, check_retry(spec.retry.as_ref()));
        report(
            task,
            check_on_failure(spec.on_failure.as_deref())
                .into_iter()
                .collect(),
        );
        let condition = match spec.when.as_deref().map(Condition::parse) {
            None => None,
            Some(Ok(condition)) => Some(condition),
            Some(Err(errors)) => {
                report(task, unparsable(errors));
                None
            }
        };
        let (wait, wait_problems) = check_wait(spec);
        let waits = spec.wait.is_some();
        report(task, wait_problems);
        if !waits && spec.plugin.is_none() {
            report(
                task,
                vec![Finding::at(
                    "plugin",
                    "an entry needs a `plugin` (or a `wait`)",
                )],
            );
        }
        let loading = match (&spec.plugin, waits) {
            (Some(path), false) => Some(runtime.load(&flow.resolve(path)).await),
            _ => None,
        };
        let plugin = match loading {
            None => None,
            Some(Ok(plugin)) => Some(plugin),
            Some(Err(error)) => {
                host_unavailable |= matches!(error, PluginError::Unavailable { .. });
                report(task, vec![Finding::at("plugin", error.to_string())]);
                match &spec.provides {
                    Some(provides) => provides.iter().for_each(|n| sources.provide(n, &spec.name)),
                    None => blind = true,
                }
                continue;
            }
        };
        let mut binding = match &plugin {
            Some(plugin) => {
                report(task, check_arguments_known(spec, plugin.info()));
                report(task, check_memory_fits(&sandbox, plugin));
                report(task, check_renamed_provides(spec, plugin.info()));
                bind(spec, plugin.info())
            }
            // A wait reads nothing; a signal's data goes whole under its `provides`.
            None => bind(spec, &nothing_declared()),
        };
        if let Some(condition) = &condition {
            binding.condition = condition.names.clone();
        }
        // Other patterns do not read file order: their requirements are checked with the graph.
        if !blind && tree.all_linear() {
            report(
                task,
                check_requirements(&binding, &sources, &tree.tasks[index + 1..]),
            );
            if let Some(condition) = &condition {
                let known = |name: &str| sources.has(name);
                let whence = "neither the initial store nor an earlier task provides";
                report(task, check_condition(condition, &known, whence));
            }
        }
        report(task, check_provides(&binding, &spec.name, &mut sources));
        let warm = plugin
            .as_ref()
            .filter(|_| spec.instances == Instances::Reuse)
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
        tasks.push(bound);
    }
    for map in tree.maps.iter().filter(|m| m.tasks.end == tree.tasks.len()) {
        close_map(map, &tasks, &mut sources, &mut report);
    }
    // The graph needs every entry's binding; without one its findings could be false.
    let mut deps = Deps::new();
    if tasks.len() == tree.tasks.len() {
        let bindings: Vec<&Binding> = tasks.iter().map(|t| &t.binding).collect();
        let given: HashSet<&str> = tree
            .scopes
            .iter()
            .filter_map(|s| scope_names(s).map(|(p, _)| p))
            .collect();
        let available = |key: &str| initial.contains(key) || given.contains(key);
        match graph::dependencies(&tree.levels, &tree.tasks, &bindings, &available) {
            Ok(found) => deps = found,
            Err(found) => problems.extend(found),
        }
        if !tree.all_linear() {
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
                let known = |name: &str| {
                    available(name) || providers.get(name).is_some_and(|&p| p != index)
                };
                let whence = "neither the initial store nor any other task provides";
                let found = check_condition(condition, &known, whence);
                problems.extend(found.into_iter().map(|Finding { field, message }| Problem {
                    task: Some(task.name.clone()),
                    field: field.map(str::to_owned),
                    message,
                }));
            }
        }
    }
    if !problems.is_empty() {
        return Err(ValidationError {
            flow: flow.name.clone(),
            problems,
            host_unavailable,
        });
    }
    let ignored_with = ignored_with(&tree, &tasks);
    Ok(Validated {
        tasks,
        deps,
        ignored_with,
        scopes: tree.scopes,
        maps: tree.maps,
        initial,
        provided: sources.into_names(),
    })
}

/// After a map's last task: its element and what its tasks provided stay inside its
/// iterations; what follows sees `collect`, which must be a new name.
fn close_map(
    map: &MapScope,
    tasks: &[BoundTask],
    sources: &mut Sources,
    report: &mut impl FnMut(Option<&str>, Vec<Finding>),
) {
    sources.forget(&map.map.each);
    for task in tasks
        .iter()
        .filter(|t| t.name.starts_with(&format!("{}/", map.path)))
    {
        for name in &task.binding.provides {
            sources.forget(name);
        }
    }
    if let Some(source) = sources.source(&map.map.collect) {
        let message = format!(
            "collects into `{}`, which {source} already provides; choose another name",
            map.map.collect
        );
        report(
            Some(&map.path),
            vec![Finding::at("flow.map.collect", message)],
        );
    } else {
        sources.given_by_subflow(&map.map.collect, &map.path);
    }
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
/// nothing (a task after an ignored one runs, unless it needs its results).
fn ignored_with(tree: &Tree, tasks: &[BoundTask]) -> Deps {
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
