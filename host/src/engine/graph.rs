//! The order a flow's entries run in, as a dependency graph: TaskFlow's compiler step.
//!
//! Every pattern becomes a graph the scheduler walks: a linear flow is a chain (each entry
//! depends on the one before), an unordered flow has no edges, and a graph flow has an edge
//! from the entry providing each name an entry reads, and from each entry it names in
//! `after`. The scheduler starts an entry once all it depends on succeeded, and reverts an
//! entry once all that depend on it are reverted — so one scheduler serves every pattern.

use std::collections::BTreeMap;

use super::validate::Problem;
use crate::flow::{Pattern, TaskSpec};
use crate::store::{Binding, Store, quoted};

/// For each entry, the entries it depends on (indices into the flow's entries).
pub(super) type Deps = Vec<Vec<usize>>;

/// The dependencies of `specs` (with their `bindings`, in flow order) under `pattern`, or
/// every problem: a name no one provides, a task reading another's result in an unordered
/// flow, `after` naming no entry (or used outside a graph), and cycles, naming their tasks.
/// Linear flows' requirements are checked in file order by validation itself.
pub(super) fn dependencies(
    pattern: Pattern,
    specs: &[TaskSpec],
    bindings: &[&Binding],
    initial: &Store,
) -> Result<Deps, Vec<Problem>> {
    let mut problems = Vec::new();
    let problem = |task: &str, field: &str, message: String| Problem {
        task: Some(task.to_owned()),
        field: Some(field.to_owned()),
        message,
    };
    for spec in specs {
        if pattern != Pattern::Graph && !spec.after.is_empty() {
            problems.push(problem(
                &spec.name,
                "after",
                format!(
                    "`after` orders entries of a graph flow; this flow is {} (set `pattern = \"graph\"`)",
                    pattern.as_str()
                ),
            ));
        }
    }
    if pattern == Pattern::Linear {
        return if problems.is_empty() {
            Ok((0..specs.len()).map(|i| i.checked_sub(1).into_iter().collect()).collect())
        } else {
            Err(problems)
        };
    }
    let providers: BTreeMap<&str, usize> =
        bindings.iter().enumerate().flat_map(|(i, b)| b.provides.iter().map(move |name| (name.as_str(), i))).collect();
    let index: BTreeMap<&str, usize> = specs.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
    let mut deps: Deps = vec![Vec::new(); specs.len()];
    for (i, (spec, binding)) in specs.iter().zip(bindings).enumerate() {
        let reads = binding.required.iter().map(|r| (r, true)).chain(binding.optional.iter().map(|o| (o, false)));
        let mut missing = Vec::new();
        for ((arg, key), required) in reads {
            match providers.get(key.as_str()) {
                // A task's own result is not an input of it: the initial store must hold it.
                Some(&from) if from != i => {
                    if pattern == Pattern::Unordered {
                        let field = if arg == key { "name" } else { "rebind" };
                        problems.push(problem(
                            &spec.name,
                            field,
                            format!(
                                "reads `{key}`, which task `{}` provides: tasks of an unordered flow may not depend on each other's results (use `pattern = \"graph\"`)",
                                specs[from].name
                            ),
                        ));
                    } else if !deps[i].contains(&from) {
                        deps[i].push(from);
                    }
                }
                _ if required && !initial.contains(key) => missing.push(key.clone()),
                _ => {}
            }
        }
        if !missing.is_empty() {
            problems.push(Problem {
                task: Some(spec.name.clone()),
                field: None,
                message: format!(
                    "requires {}, which neither the initial store nor any task provides",
                    quoted(&missing)
                ),
            });
        }
        for name in &spec.after {
            match index.get(name.as_str()) {
                Some(&from) if from == i => {
                    problems.push(problem(&spec.name, "after", "an entry cannot run after itself".into()))
                }
                Some(&from) => {
                    if !deps[i].contains(&from) {
                        deps[i].push(from);
                    }
                }
                None => problems.push(problem(
                    &spec.name,
                    "after",
                    format!("`after` names `{name}`, which is no entry of this flow"),
                )),
            }
        }
    }
    if let Some(cycle) = find_cycle(&deps) {
        let names: Vec<String> = cycle.iter().map(|&i| format!("`{}`", specs[i].name)).collect();
        problems.push(Problem {
            task: Some(specs[cycle[0]].name.clone()),
            field: None,
            message: format!(
                "the flow has a cycle: {} -> `{}`; each needs the one before it to succeed first",
                names.join(" -> "),
                specs[cycle[0]].name
            ),
        });
    }
    if problems.is_empty() { Ok(deps) } else { Err(problems) }
}

/// One cycle of the graph, as the entries along it, when there is one.
fn find_cycle(deps: &Deps) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut marks = vec![Mark::New; deps.len()];
    for start in 0..deps.len() {
        if marks[start] != Mark::New {
            continue;
        }
        // Depth-first along dependencies, iteratively: (node, next dependency to look at).
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        marks[start] = Mark::OnPath;
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            if let Some(&dep) = deps[node].get(*next) {
                *next += 1;
                match marks[dep] {
                    Mark::New => {
                        marks[dep] = Mark::OnPath;
                        path.push((dep, 0));
                    }
                    Mark::OnPath => {
                        let from = path.iter().position(|&(n, _)| n == dep).unwrap_or(0);
                        // Dependencies point backwards; read the cycle in running order.
                        let mut cycle: Vec<usize> = path[from..].iter().map(|&(n, _)| n).collect();
                        cycle.reverse();
                        return Some(cycle);
                    }
                    Mark::Done => {}
                }
            } else {
                marks[node] = Mark::Done;
                path.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cycle_is_found_and_read_in_running_order() {
        // a <- b <- c <- a (each depends on the one before), d alone.
        let deps: Deps = vec![vec![2], vec![0], vec![1], vec![]];
        let cycle = find_cycle(&deps).unwrap();
        assert_eq!(cycle.len(), 3);
        for (k, &node) in cycle.iter().enumerate() {
            let next = cycle[(k + 1) % cycle.len()];
            assert!(deps[next].contains(&node), "{next} depends on {node}");
        }
        assert_eq!(find_cycle(&vec![vec![], vec![0], vec![0, 1]]), None);
    }
}
