//! Validation: before anything runs, every plugin is loaded and described and every entry
//! checked against it. Each check is a small pure function returning the problems it found,
//! so that all problems of a flow are reported at once and each check is tested on its own.

use std::collections::{BTreeMap, HashSet};

use super::task::BoundTask;
use flowhost_core::contract::{TaskInfo, escape};
use flowhost_core::flow::{FlowSpec, Instances, Iterations, Retry, TaskSpec};
use flowhost_core::plan::graph::{self, Deps};
use flowhost_core::plan::tree::{Scope, Tree};
use flowhost_core::plan::{Problem, ValidationError};
use flowhost_core::store::{Binding, Store, quoted};
use flowhost_runtime::{EPOCH_TICK, Plugin, PluginError, Runtime, Sandbox};

/// What one check found wrong with an entry: the field at fault, if one is, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Finding {
    field: Option<&'static str>,
    message: String,
}

impl Finding {
    fn at(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field: Some(field),
            message: message.into(),
        }
    }

    fn anywhere(message: impl Into<String>) -> Self {
        Self {
            field: None,
            message: message.into(),
        }
    }
}

/// A flow that passed validation: its entries bound to their plugins, the initial store, and
/// every name a successful run's final store will hold.
pub(super) struct Validated {
    pub(super) tasks: Vec<BoundTask>,
    /// What each entry waits for, by the flow's pattern.
    pub(super) deps: Deps,
    /// The subflows with a retry controller.
    pub(super) scopes: Vec<Scope>,
    pub(super) initial: Store,
    pub(super) provided: HashSet<String>,
}

/// Where each store name comes from, as validation walks the flow in order.
struct Sources(BTreeMap<String, String>);

impl Sources {
    fn new(initial: &Store) -> Self {
        Self(
            initial
                .names()
                .map(|n| (n.clone(), "the initial store".to_owned()))
                .collect(),
        )
    }

    fn provide(&mut self, name: &str, task: &str) {
        self.0.insert(name.to_owned(), format!("task `{task}`"));
    }
}

/// Validates `flow` with `store` over the flow's `[store]` defaults.
pub(super) async fn validate(
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
    if flow.tasks.is_empty() {
        report(None, vec![Finding::anywhere("the flow has no tasks")]);
    }
    report(
        None,
        check_name("flow", &flow.name)
            .map(|m| Finding::at("name", m))
            .into_iter()
            .collect(),
    );
    report(None, check_retry(flow.retry.as_ref()));
    if flow.max_parallel == Some(0) {
        report(
            None,
            vec![Finding::at(
                "max_parallel",
                "`max_parallel` must be at least 1",
            )],
        );
    }
    let mut host_unavailable = false;
    let mut sources = Sources::new(&initial);
    // Without a plugin's declaration, later "missing name" findings could be false.
    let mut blind = false;
    let mut tasks = Vec::with_capacity(tree.tasks.len());
    for (index, spec) in tree.tasks.iter().enumerate() {
        // What a controller gives its scope is there from the scope's first task on.
        for scope in tree.scopes.iter().filter(|s| s.tasks.start == index) {
            if let Some((provides, from)) = scope_names(scope) {
                if let Some(from) = from.filter(|from| !sources.0.contains_key(*from) && !blind) {
                    let message = format!(
                        "reads its list from `{from}`, which neither the initial store nor an earlier task provides"
                    );
                    report(
                        Some(&scope.path),
                        vec![Finding::at(
                            "flow.retry.parameterized_for_each.from",
                            message,
                        )],
                    );
                }
                sources
                    .0
                    .insert(provides.to_owned(), format!("subflow `{}`", scope.path));
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
        let plugin = match runtime.load(&flow.resolve(&spec.plugin)).await {
            Ok(plugin) => plugin,
            Err(error) => {
                host_unavailable |= matches!(error, PluginError::Unavailable { .. });
                report(task, vec![Finding::at("plugin", error.to_string())]);
                match &spec.provides {
                    Some(provides) => provides.iter().for_each(|n| sources.provide(n, &spec.name)),
                    None => blind = true,
                }
                continue;
            }
        };
        report(task, check_arguments_known(spec, plugin.info()));
        report(task, check_memory_fits(&sandbox, &plugin));
        report(task, check_renamed_provides(spec, plugin.info()));
        let binding = bind(spec, plugin.info());
        // Other patterns do not read file order: their requirements are checked with the graph.
        if !blind && tree.all_linear() {
            report(
                task,
                check_requirements(&binding, &sources, &tree.tasks[index + 1..]),
            );
        }
        report(task, check_provides(&binding, &spec.name, &mut sources));
        let warm = (spec.instances == Instances::Reuse).then(|| plugin.warm_pool(&sandbox));
        tasks.push(BoundTask::new(
            spec,
            plugin,
            binding,
            sandbox,
            warm,
            flow.retry_policy(spec),
        ));
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
    }
    if !problems.is_empty() {
        return Err(ValidationError {
            flow: flow.name.clone(),
            problems,
            host_unavailable,
        });
    }
    Ok(Validated {
        tasks,
        deps,
        scopes: tree.scopes,
        initial,
        provided: sources.0.into_keys().collect(),
    })
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

/// Longest flow or task name.
const MAX_NAME: usize = 128;

/// Flow and task names appear in logs, terminals, file names and URLs: they start with a
/// letter or digit and hold only ASCII letters, digits, `_`, `-` and `.`, at most
/// [`MAX_NAME`] of them. `kind` is "flow" or "task".
fn check_name(kind: &str, name: &str) -> Option<String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    let starts_well = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if starts_well && name.len() <= MAX_NAME && name.chars().all(allowed) {
        return None;
    }
    Some(format!(
        "{kind} name `{}` is not allowed: a {kind} name starts with a letter or digit and holds only ASCII letters, digits, `_`, `-` and `.` (at most {MAX_NAME})",
        escape(name)
    ))
}

/// Checks of an entry that need no plugin: its config and whether the engine can meter fuel.
fn check_entry(spec: &TaskSpec, sandbox: &Sandbox, fuel_metering: bool) -> Vec<Finding> {
    let mut problems = Vec::new();
    if sandbox.limits.fuel.is_some() && !fuel_metering {
        problems.push(Finding::at(
            "limits.fuel",
            "`limits.fuel` needs an engine with fuel metering (`EngineConfig::default().fuel(true)`); the CLI turns it on when a flow sets fuel",
        ));
    }
    if !spec.config.is_object() {
        problems.push(Finding::at(
            "config",
            "`config` must be a table (a JSON object)",
        ));
    }
    problems
}

/// A retry policy that cannot work as written (no attempt, a shrinking backoff, `on` and
/// `except` together), on an entry or the flow.
fn check_retry(retry: Option<&Retry>) -> Vec<Finding> {
    retry
        .map(Retry::problems)
        .unwrap_or_default()
        .into_iter()
        .map(|(field, message)| Finding::at(field, message))
        .collect()
}

/// Limits under which no call can succeed — not even a revert, so a run would fail and then
/// fail to undo itself. Refused here rather than at the first call.
fn check_limits(sandbox: &Sandbox) -> Vec<Finding> {
    let limits = &sandbox.limits;
    let tick = EPOCH_TICK.as_millis();
    let mut problems = Vec::new();
    if u128::from(limits.deadline_ms) < tick {
        problems.push(Finding::at(
            "limits.deadline_ms",
            format!(
                "`limits.deadline_ms` = {} is below {tick} ms, the interval at which deadlines are checked, so it cannot be kept; use at least {tick}",
                limits.deadline_ms
            ),
        ));
    }
    for (field, value, unit) in [
        (
            "limits.memory_mib",
            limits.memory_mib,
            "MiB of linear memory",
        ),
        (
            "limits.result_kib",
            limits.result_kib,
            "KiB of result (even `{}` is 2 bytes)",
        ),
        (
            "limits.args_kib",
            limits.args_kib,
            "KiB of arguments (even `{}` is 2 bytes)",
        ),
    ] {
        if value == 0 {
            problems.push(Finding::at(
                field,
                format!("`{field}` = 0 allows no {unit}: every call would fail; use at least 1"),
            ));
        }
    }
    if limits.fuel == Some(0) {
        problems.push(Finding::at(
            "limits.fuel",
            "`limits.fuel` = 0 allows not a single instruction: every call would fail; set a budget, or leave `fuel` unset for none",
        ));
    }
    problems
}

/// The memory cap must hold the plugin's initial linear memory, or no instance can even be
/// created (the cap is per memory, like the plugin's declared initial size).
fn check_memory_fits(sandbox: &Sandbox, plugin: &Plugin) -> Vec<Finding> {
    let cap = sandbox.limits.memory_bytes() as u64;
    match plugin.initial_memory_bytes() {
        Some(needed) if cap > 0 && needed > cap => vec![Finding::at(
            "limits.memory_mib",
            format!(
                "`limits.memory_mib` = {} is below the {:.1} MiB of linear memory plugin `{}` starts with: every call would fail; use at least {}",
                sandbox.limits.memory_mib,
                needed as f64 / f64::from(1 << 20),
                plugin.info().name,
                needed.div_ceil(1 << 20)
            ),
        )],
        _ => Vec::new(),
    }
}

/// An entry that renames a plugin's several results needs one name per declared name (they
/// are mapped by position), or a single name to store the whole result under.
fn check_renamed_provides(spec: &TaskSpec, info: &TaskInfo) -> Vec<Finding> {
    match &spec.provides {
        Some(given)
            if given.len() > 1 && info.provides.len() > 1 && given.len() != info.provides.len() =>
        {
            vec![Finding::at(
                "provides",
                format!(
                    "`provides` gives {} names but plugin `{}` returns {} ({}), which are stored under the given names by position; give {} names, or one to store the whole result",
                    given.len(),
                    info.name,
                    info.provides.len(),
                    quoted(&info.provides),
                    info.provides.len()
                ),
            )]
        }
        _ => Vec::new(),
    }
}

/// `rebind` and `inject` may only name arguments the plugin takes.
fn check_arguments_known(spec: &TaskSpec, info: &TaskInfo) -> Vec<Finding> {
    let accepts = |arg: &String| info.requires.contains(arg) || info.optional.contains(arg);
    let named = [
        ("rebind", spec.rebind.keys().collect::<Vec<_>>()),
        ("inject", spec.inject.keys().collect()),
    ];
    named
        .into_iter()
        .flat_map(|(field, args)| args.into_iter().filter(|a| !accepts(a)).map(move |arg| (field, arg)))
        .map(|(field, arg)| {
            Finding::at(
                field,
                format!(
                    "`{field}` names argument `{arg}`, which plugin `{}` neither requires nor accepts (it takes: {})",
                    info.name,
                    takes(info)
                ),
            )
        })
        .collect()
}

fn takes(info: &TaskInfo) -> String {
    let all: Vec<String> = info
        .requires
        .iter()
        .chain(&info.optional)
        .cloned()
        .collect();
    if all.is_empty() {
        "no arguments".into()
    } else {
        quoted(&all)
    }
}

/// How the entry reads its arguments and writes its result, after rebind, inject and provides.
fn bind(spec: &TaskSpec, info: &TaskInfo) -> Binding {
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
    }
}

/// Every required name must come from the initial store or an earlier task; a later task
/// providing it earns a hint.
fn check_requirements(binding: &Binding, sources: &Sources, later: &[TaskSpec]) -> Vec<Finding> {
    binding
        .required
        .iter()
        .filter(|(_, key)| !sources.0.contains_key(key))
        .map(|(arg, key)| {
            let via = if arg == key { String::new() } else { format!(" (rebound from `{arg}`)") };
            let provider = later.iter().find(|t| t.provides.as_ref().is_some_and(|p| p.contains(key)));
            let hint = provider.map(|t| format!("; task `{}` provides it but runs later", t.name)).unwrap_or_default();
            let message = format!(
                "argument `{arg}` needs store key `{key}`{via}, which neither the initial store nor an earlier task provides{hint}"
            );
            if arg == key { Finding::anywhere(message) } else { Finding::at("rebind", message) }
        })
        .collect()
}

/// A name is written once: an entry may not provide a name twice, nor one the initial store
/// or an earlier task provides. Records the entry's names as provided.
fn check_provides(binding: &Binding, task: &str, sources: &mut Sources) -> Vec<Finding> {
    let mut problems = Vec::new();
    let mut own = HashSet::new();
    for name in &binding.provides {
        if !own.insert(name) {
            problems.push(Finding::at("provides", format!("provides `{name}` twice")));
        } else if let Some(source) = sources.0.get(name) {
            problems.push(Finding::at("provides", format!(
                "provides `{name}`, which {source} already provides; set `provides` on this entry to store the result under another name"
            )));
        } else {
            sources.provide(name, task);
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn info(requires: &[&str], optional: &[&str], provides: &[&str]) -> TaskInfo {
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect();
        TaskInfo {
            name: "plug".into(),
            version: "1".into(),
            description: String::new(),
            requires: names(requires),
            optional: names(optional),
            provides: names(provides),
        }
    }

    fn messages(found: Vec<Finding>) -> Vec<String> {
        found.into_iter().map(|f| f.message).collect()
    }

    fn initial(names: &[&str]) -> Sources {
        Sources::new(&names.iter().map(|n| ((*n).to_owned(), json!(1))).collect())
    }

    #[test]
    fn rebind_and_inject_of_an_unknown_argument_name_the_field_and_what_the_plugin_takes() {
        let spec = TaskSpec::new("t", "p.wasm")
            .rebind("size", "raw")
            .inject("colour", json!("red"));
        let found = check_arguments_known(&spec, &info(&["volume"], &["zone"], &["out"]));
        assert_eq!(
            found.iter().map(|f| f.field).collect::<Vec<_>>(),
            [Some("rebind"), Some("inject")]
        );
        let problems = messages(found);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with("`rebind` names argument `size`"),
            "{}",
            problems[0]
        );
        assert!(
            problems[1].contains("`inject` names argument `colour`"),
            "{}",
            problems[1]
        );
        assert!(
            problems[1].contains("it takes: `volume`, `zone`"),
            "{}",
            problems[1]
        );
    }

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

    #[test]
    fn a_missing_requirement_names_argument_key_and_a_later_provider() {
        let spec = TaskSpec::new("t", "p.wasm").rebind("size", "raw_size");
        let binding = bind(&spec, &info(&["size"], &[], &[]));
        let later = [TaskSpec::new("sizer", "s.wasm").provides(["raw_size"])];
        let problems = check_requirements(&binding, &initial(&["other"]), &later);
        assert_eq!(
            problems[0].field,
            Some("rebind"),
            "the rebound argument's field is at fault"
        );
        assert_eq!(
            messages(problems),
            vec![
                "argument `size` needs store key `raw_size` (rebound from `size`), which neither the initial store nor an earlier task provides; task `sizer` provides it but runs later"
            ]
        );
        assert!(check_requirements(&binding, &initial(&["raw_size"]), &[]).is_empty());
    }

    #[test]
    fn a_name_is_provided_once_and_becomes_a_source_for_later_tasks() {
        let mut sources = initial(&["seed"]);
        let twice = Binding {
            required: vec![],
            optional: vec![],
            inject: BTreeMap::new(),
            provides: vec!["a".into(), "a".into()],
            declared: vec![],
        };
        assert_eq!(
            check_provides(&twice, "t", &mut sources),
            vec![Finding::at("provides", "provides `a` twice")]
        );
        let clash = Binding {
            provides: vec!["seed".into()],
            ..twice.clone()
        };
        let problems = messages(check_provides(&clash, "u", &mut sources));
        assert!(
            problems[0].contains("which the initial store already provides"),
            "{problems:?}"
        );
        let again = Binding {
            provides: vec!["a".into()],
            ..twice
        };
        assert!(
            messages(check_provides(&again, "v", &mut sources))[0]
                .contains("which task `t` already provides")
        );
    }

    #[test]
    fn flow_and_task_names_are_letters_digits_and_a_few_marks() {
        for good in ["volume_create_api", "step-1", "v1.2", "A"] {
            assert_eq!(check_name("task", good), None, "{good}");
        }
        for bad in [
            "",
            "-lead",
            "two words",
            "new\nline",
            "\u{1b}[2J",
            "é",
            &"x".repeat(MAX_NAME + 1),
        ] {
            let problem = check_name("flow", bad).unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(problem.starts_with("flow name `"), "{problem}");
            assert!(
                !problem.contains(['\n', '\u{1b}']),
                "the bad name is shown escaped: {problem}"
            );
        }
    }

    #[test]
    fn config_must_be_an_object_and_fuel_needs_metering() {
        let spec = TaskSpec::new("t", "p.wasm").config(json!([1]));
        let flow = FlowSpec::linear("f");
        let (mut sandbox, _) = Sandbox::for_entry(&spec, &flow, &[]);
        sandbox.limits.fuel = Some(10);
        let problems = check_entry(&spec, &sandbox, false);
        assert_eq!(
            problems.iter().map(|f| f.field).collect::<Vec<_>>(),
            [Some("limits.fuel"), Some("config")]
        );
        assert!(check_entry(&TaskSpec::new("t", "p.wasm"), &sandbox, true).is_empty());
    }

    #[test]
    fn limits_under_which_no_call_can_succeed_are_refused_naming_the_field() {
        let (mut sandbox, _) =
            Sandbox::for_entry(&TaskSpec::new("t", "p.wasm"), &FlowSpec::linear("f"), &[]);
        assert!(
            check_limits(&sandbox).is_empty(),
            "the defaults are workable"
        );
        sandbox.limits.deadline_ms = 5;
        sandbox.limits.memory_mib = 0;
        sandbox.limits.result_kib = 0;
        sandbox.limits.args_kib = 0;
        sandbox.limits.fuel = Some(0);
        let found = check_limits(&sandbox);
        let fields: Vec<_> = found.iter().filter_map(|f| f.field).collect();
        assert_eq!(
            fields,
            [
                "limits.deadline_ms",
                "limits.memory_mib",
                "limits.result_kib",
                "limits.args_kib",
                "limits.fuel"
            ]
        );
        assert!(
            found[0].message.contains("below 10 ms"),
            "{}",
            found[0].message
        );
        sandbox.limits.deadline_ms = 10;
        sandbox.limits.memory_mib = 1;
        sandbox.limits.result_kib = 1;
        sandbox.limits.args_kib = 1;
        sandbox.limits.fuel = Some(1);
        assert!(check_limits(&sandbox).is_empty());
    }

    #[test]
    fn renaming_several_results_needs_one_name_per_declared_name_or_just_one() {
        let plugin = info(&[], &[], &["size", "zone", "kind"]);
        assert!(
            check_renamed_provides(
                &TaskSpec::new("t", "p.wasm").provides(["a", "b", "c"]),
                &plugin
            )
            .is_empty()
        );
        assert!(
            check_renamed_provides(&TaskSpec::new("t", "p.wasm").provides(["whole"]), &plugin)
                .is_empty()
        );
        let found =
            check_renamed_provides(&TaskSpec::new("t", "p.wasm").provides(["a", "b"]), &plugin);
        assert_eq!(found[0].field, Some("provides"));
        assert!(
            found[0]
                .message
                .contains("gives 2 names but plugin `plug` returns 3"),
            "{}",
            found[0].message
        );
    }
}
