//! The checks of validation: each a small pure function of an entry (or the flow), its
//! sandbox, its plugin's declaration or its binding, returning what it found wrong as
//! [`Finding`]s. Separate from the loading and binding step so that each check is tested on
//! its own, without a runtime or a component, and so that one flow's problems are all found
//! and reported together rather than the first one stopping the walk.

use std::collections::{BTreeMap, HashSet};

use flowhost_core::contract::{TaskInfo, escape};
use flowhost_core::flow::{
    FlowSpec, Instances, Limits, MAX_DEADLINE_MS, Map, Net, ON_FAILURE_REVERT, ON_FAILURE_SUSPEND,
    Rate, Retry, Schedule, TaskSpec, WaitFor,
};
use flowhost_core::store::{Binding, Store, quoted};
use flowhost_runtime::{EPOCH_TICK, Plugin, Sandbox};

use crate::condition::Condition;

/// What one check found wrong with an entry: the field at fault, if one is, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Finding {
    pub(super) field: Option<&'static str>,
    pub(super) message: String,
}

impl Finding {
    pub(super) fn at(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field: Some(field),
            message: message.into(),
        }
    }

    pub(super) fn anywhere(message: impl Into<String>) -> Self {
        Self {
            field: None,
            message: message.into(),
        }
    }
}

/// Where each store name comes from, as validation walks the flow in order.
pub(super) struct Sources(BTreeMap<String, String>);

impl Sources {
    pub(super) fn new(initial: &Store) -> Self {
        Self(
            initial
                .names()
                .map(|n| (n.clone(), "the initial store".to_owned()))
                .collect(),
        )
    }

    pub(super) fn provide(&mut self, name: &str, task: &str) {
        self.0.insert(name.to_owned(), format!("task `{task}`"));
    }

    /// What a subflow's controller gives its tasks (the item of its list, say).
    pub(super) fn given_by_subflow(&mut self, name: &str, path: &str) {
        self.0.insert(name.to_owned(), format!("subflow `{path}`"));
    }

    /// A name no longer there for later entries: one a map's iterations kept to themselves.
    pub(super) fn forget(&mut self, name: &str) {
        self.0.remove(name);
    }

    /// Where `name` comes from, when the walk found a source for it so far.
    pub(super) fn source(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Whether the walk found a source for `name` so far.
    pub(super) fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// Checks of the flow itself, before any entry: it has tasks, an allowed name, a workable
/// retry policy, and room for at least one call at a time.
pub(super) fn check_flow(flow: &FlowSpec) -> Vec<Finding> {
    let mut problems = Vec::new();
    if flow.tasks.is_empty() {
        problems.push(Finding::anywhere("the flow has no tasks"));
    }
    problems.extend(check_name("flow", &flow.name).map(|m| Finding::at("name", m)));
    problems.extend(check_retry(flow.retry.as_ref()));
    problems.extend(check_timeout(flow.timeout_ms));
    problems.extend(check_on_failure(flow.on_failure.as_deref()));
    problems.extend(check_schedules(&flow.schedule));
    problems.extend(check_queue_limits(flow.concurrency, flow.rate));
    if flow.max_parallel == Some(0) {
        problems.push(Finding::at(
            "max_parallel",
            "`max_parallel` must be at least 1",
        ));
    }
    problems
}

/// A `parameterized_for_each` controller reads its list from the store name `from`, which
/// must be there when its subflow starts: in the initial store or provided earlier.
pub(super) fn check_list_source(from: &str, sources: &Sources) -> Vec<Finding> {
    if sources.0.contains_key(from) {
        return Vec::new();
    }
    let message = format!(
        "reads its list from `{from}`, which neither the initial store nor an earlier task provides"
    );
    vec![Finding::at(
        "flow.retry.parameterized_for_each.from",
        message,
    )]
}

/// A map reads its list from `over`, which must be there when it starts, and gives each
/// element under `as`, which must not hide a name already there (its tasks could no
/// longer read it, and which one they meant would be unclear).
pub(super) fn check_map_start(map: &Map, sources: &Sources) -> Vec<Finding> {
    let mut problems = Vec::new();
    if !map.over.is_empty() && !sources.has(&map.over) {
        problems.push(Finding::at(
            "flow.map.over",
            format!(
                "maps over `{}`, which neither the initial store nor an earlier task provides",
                map.over
            ),
        ));
    }
    if let Some(source) = sources.source(&map.each) {
        problems.push(Finding::at(
            "flow.map.as",
            format!(
                "gives each element as `{}`, which would shadow the `{}` {source} provides; choose another name",
                map.each, map.each
            ),
        ));
    }
    problems
}

/// A task inside a map runs once per element, exactly once: no retry policy, no condition.
pub(super) fn check_map_task(spec: &TaskSpec) -> Vec<Finding> {
    let mut problems = Vec::new();
    if spec.retry.is_some() {
        problems.push(Finding::at(
            "retry",
            "a task inside a map runs once per element: it takes no `retry` (a failed element reverts the map)",
        ));
    }
    if spec.when.is_some() {
        problems.push(Finding::at(
            "when",
            "a task inside a map runs for every element: it takes no `when`",
        ));
    }
    problems
}

/// Longest flow or task name.
const MAX_NAME: usize = 128;

/// Flow and task names appear in logs, terminals, file names and URLs: they start with a
/// letter or digit and hold only ASCII letters, digits, `_`, `-` and `.`, at most
/// [`MAX_NAME`] of them. `kind` is "flow" or "task".
pub(super) fn check_name(kind: &str, name: &str) -> Option<String> {
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
pub(super) fn check_entry(spec: &TaskSpec, sandbox: &Sandbox, fuel_metering: bool) -> Vec<Finding> {
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

/// A run deadline that cannot be kept or holds a run too long: zero or negative (the run
/// would be stopped before it starts), or over the 24 h cap every deadline shares.
pub(super) fn check_timeout(timeout_ms: Option<i64>) -> Option<Finding> {
    let ms = timeout_ms?;
    if ms <= 0 {
        return Some(Finding::at(
            "timeout_ms",
            format!(
                "`timeout_ms` = {ms} must be positive: the run's deadline, in milliseconds from its creation"
            ),
        ));
    }
    (ms.unsigned_abs() > MAX_DEADLINE_MS).then(|| {
        Finding::at(
            "timeout_ms",
            format!(
                "`timeout_ms` = {ms} is over the cap of {MAX_DEADLINE_MS} ms (24 h): a run that may take longer holds its executor as long; use at most {MAX_DEADLINE_MS}"
            ),
        )
    })
}

/// An `on_failure` (on an entry or the flow) that is neither `"revert"` nor `"suspend"`.
pub(super) fn check_on_failure(value: Option<&str>) -> Option<Finding> {
    let value = value?;
    if [ON_FAILURE_REVERT, ON_FAILURE_SUSPEND].contains(&value) {
        return None;
    }
    Some(Finding::at(
        "on_failure",
        format!(
            "`on_failure` = \"{}\" is not known: it is \"{ON_FAILURE_REVERT}\" (the default: revert what ran) or \"{ON_FAILURE_SUSPEND}\" (suspend the run, reverting nothing)",
            escape(value)
        ),
    ))
}

/// Schedule entries whose cron expression does not parse, each named by its position (from
/// 1, as people count) and its expression.
pub(super) fn check_schedules(schedules: &[Schedule]) -> Vec<Finding> {
    schedules
        .iter()
        .enumerate()
        .filter_map(|(index, schedule)| schedule.problem(index))
        .map(|message| Finding::at("schedule.cron", message))
        .collect()
}

/// Queue limits no run could ever pass: a `concurrency` or a `rate` below one run, or a
/// rate period below one millisecond.
pub(super) fn check_queue_limits(concurrency: Option<i64>, rate: Option<Rate>) -> Vec<Finding> {
    let mut problems = Vec::new();
    if let Some(n) = concurrency.filter(|n| *n < 1) {
        problems.push(Finding::at(
            "concurrency",
            format!("`concurrency` = {n} must be at least 1: the most runs of this flow executing at once"),
        ));
    }
    if let Some(rate) = rate {
        if rate.runs < 1 {
            problems.push(Finding::at(
                "rate.runs",
                format!(
                    "`rate.runs` = {} must be at least 1: the most runs started per period",
                    rate.runs
                ),
            ));
        }
        if rate.per_ms < 1 {
            problems.push(Finding::at(
                "rate.per_ms",
                format!(
                    "`rate.per_ms` = {} must be at least 1: the period, in milliseconds",
                    rate.per_ms
                ),
            ));
        }
    }
    problems
}

/// A retry policy that cannot work as written (no attempt, a shrinking backoff, `on` and
/// `except` together), on an entry or the flow.
pub(super) fn check_retry(retry: Option<&Retry>) -> Vec<Finding> {
    retry
        .map(Retry::problems)
        .unwrap_or_default()
        .into_iter()
        .map(|(field, message)| Finding::at(field, message))
        .collect()
}

/// Limits under which no call can succeed — not even a revert, so a run would fail and then
/// fail to undo itself. Refused here rather than at the first call.
pub(super) fn check_limits(sandbox: &Sandbox) -> Vec<Finding> {
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
    if limits.deadline_ms > MAX_DEADLINE_MS {
        problems.push(Finding::at(
            "limits.deadline_ms",
            format!(
                "`limits.deadline_ms` = {} is over the cap of {MAX_DEADLINE_MS} ms (24 h): a call that may take longer holds its run, and a draining worker, as long; use at most {MAX_DEADLINE_MS}",
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
pub(super) fn check_memory_fits(sandbox: &Sandbox, plugin: &Plugin) -> Vec<Finding> {
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
pub(super) fn check_renamed_provides(spec: &TaskSpec, info: &TaskInfo) -> Vec<Finding> {
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
pub(super) fn check_arguments_known(spec: &TaskSpec, info: &TaskInfo) -> Vec<Finding> {
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

/// Every required name must come from the initial store or an earlier task; a later task
/// providing it earns a hint.
pub(super) fn check_requirements(
    binding: &Binding,
    sources: &Sources,
    later: &[TaskSpec],
) -> Vec<Finding> {
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

/// A `when` may read only names that will be in the store when it is evaluated (`known`;
/// `whence` says where they would have come from): each other name is refused with where
/// the expression reads it.
pub(super) fn check_condition(
    condition: &Condition,
    known: &dyn Fn(&str) -> bool,
    whence: &str,
) -> Vec<Finding> {
    condition
        .names
        .iter()
        .filter(|name| !known(name))
        .map(|name| {
            let (line, column) = condition.position_of(name);
            Finding::at(
                "when",
                format!("`when` reads `{name}` at line {line}, column {column}, which {whence}"),
            )
        })
        .collect()
}

/// A name is written once: an entry may not provide a name twice, nor one the initial store
/// or an earlier task provides. Records the entry's names as provided.
pub(super) fn check_provides(binding: &Binding, task: &str, sources: &mut Sources) -> Vec<Finding> {
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
/// A wait entry (`wait = { … }`): what it waits for, or every problem with it. It calls no
/// plugin, so the keys that configure a plugin's call are problems, each named; a signal's
/// data is stored whole under at most one `provides` name, and a timer stores nothing.
pub(super) fn check_wait(spec: &TaskSpec) -> (Option<WaitFor>, Vec<Finding>) {
    let Some(wait) = &spec.wait else {
        return (None, Vec::new());
    };
    let mut problems = Vec::new();
    let calls = [
        ("plugin", spec.plugin.is_some()),
        ("rebind", !spec.rebind.is_empty()),
        ("inject", !spec.inject.is_empty()),
        (
            "config",
            spec.config.as_object().is_none_or(|c| !c.is_empty()),
        ),
        ("dirs", !spec.dirs.is_empty()),
        ("env", !spec.env.is_empty()),
        ("env_set", !spec.env_set.is_empty()),
        ("limits", spec.limits != Limits::default()),
        ("instances", spec.instances != Instances::default()),
        ("retry", spec.retry.is_some()),
        ("net", spec.net != Net::default()),
        ("secrets", !spec.secrets.is_empty()),
        ("secrets_env", !spec.secrets_env.is_empty()),
    ];
    for (key, _) in calls.iter().filter(|(_, set)| *set) {
        problems.push(Finding::at(
            key,
            format!("a `wait` entry calls no plugin, so it has no `{key}`"),
        ));
    }
    let resolved = match wait.resolve() {
        Ok(resolved) => Some(resolved),
        Err(found) => {
            problems.extend(found.into_iter().map(|(field, m)| Finding::at(field, m)));
            None
        }
    };
    let provides = spec.provides.as_deref().unwrap_or_default();
    match &wait.signal {
        Some(_) if provides.len() > 1 => problems.push(Finding::at(
            "provides",
            format!(
                "a signal's data is stored whole under one name; `provides` lists {}",
                provides.len()
            ),
        )),
        None if !provides.is_empty() => problems.push(Finding::at(
            "provides",
            "a timer (`for_ms`, `until`) stores nothing; only a signal wait `provides`",
        )),
        _ => {}
    }
    (resolved.filter(|_| problems.is_empty()), problems)
}

#[cfg(test)]
pub(super) mod tests {
    use serde_json::json;

    use super::*;
    use crate::validate::prepare::bind;

    pub(crate) fn info(requires: &[&str], optional: &[&str], provides: &[&str]) -> TaskInfo {
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
    fn a_flow_needs_tasks_an_allowed_name_and_room_for_one_call() {
        let mut flow = FlowSpec::linear("two words");
        flow.max_parallel = Some(0);
        let found = check_flow(&flow);
        assert_eq!(
            found.iter().map(|f| f.field).collect::<Vec<_>>(),
            [None, Some("name"), Some("max_parallel")]
        );
        assert_eq!(found[0].message, "the flow has no tasks");
        let flow = FlowSpec::linear("f").add(TaskSpec::new("t", "p.wasm"));
        assert!(check_flow(&flow).is_empty());
    }

    #[test]
    fn a_subflow_list_must_be_in_the_store_when_the_subflow_starts() {
        let mut sources = initial(&["seed"]);
        let found = check_list_source("sizes", &sources);
        assert_eq!(
            found[0].field,
            Some("flow.retry.parameterized_for_each.from")
        );
        assert!(found[0].message.starts_with("reads its list from `sizes`"));
        sources.provide("sizes", "t");
        assert!(check_list_source("sizes", &sources).is_empty());
        assert!(check_list_source("seed", &sources).is_empty());
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
            condition: vec![],
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
    fn on_failure_is_revert_or_suspend_and_anything_else_is_named() {
        for known in [None, Some("revert"), Some("suspend")] {
            assert_eq!(check_on_failure(known), None, "{known:?}");
        }
        let found = check_on_failure(Some("pause")).expect("refused");
        assert_eq!(found.field, Some("on_failure"));
        assert!(
            found
                .message
                .contains("`on_failure` = \"pause\" is not known"),
            "{}",
            found.message
        );
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
        sandbox.limits.deadline_ms = MAX_DEADLINE_MS + 1;
        let found = check_limits(&sandbox);
        assert_eq!(found[0].field, Some("limits.deadline_ms"));
        assert!(
            found[0].message.contains("over the cap of 86400000 ms"),
            "{}",
            found[0].message
        );
        sandbox.limits.deadline_ms = MAX_DEADLINE_MS;
        assert!(
            check_limits(&sandbox)
                .iter()
                .all(|f| f.field != Some("limits.deadline_ms"))
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
