//! The order a flow's entries run in, as a dependency graph: TaskFlow's compiler step.
//!
//! Every pattern becomes a graph the scheduler walks: a linear flow is a chain (each entry
//! depends on the one before), an unordered flow has no edges, and a graph flow has an edge
//! from the entry providing each name an entry reads, and from each entry it names in
//! `after`. The scheduler starts an entry once all it depends on succeeded, and reverts an
//! entry once all that depend on it are reverted — so one scheduler serves every pattern.

use std::collections::BTreeMap;

use super::Problem;
use super::tree::{Level, Node};
use crate::flow::{Pattern, TaskSpec};
use crate::store::{Binding, quoted};

/// For each entry, the entries it depends on (indices into the flow's entries).
pub type Deps = Vec<Vec<usize>>;

/// The dependencies of the flat `tasks` (with their `bindings`, in file order) under each
/// level's pattern, or every problem: a name no one provides, a task reading another's
/// result in an unordered flow, `after` naming no sibling entry (or used outside a graph),
/// and cycles, naming their tasks. An entry's dependencies are those of every task in it: a
/// subflow waits for what precedes it in its parent, and what follows it waits for all of
/// it. When every level is linear, requirements are checked in file order by validation
/// itself; otherwise here, against `available` (the initial store and what controllers give).
pub fn dependencies(
    levels: &[Level],
    tasks: &[TaskSpec],
    bindings: &[&Binding],
    available: &dyn Fn(&str) -> bool,
) -> Result<Deps, Vec<Problem>> {
    let mut problems = Vec::new();
    let problem = |task: &str, field: &str, message: String| Problem {
        task: Some(task.to_owned()),
        field: Some(field.to_owned()),
        message,
    };
    let mut deps: Deps = vec![Vec::new(); tasks.len()];
    let depend = |nodes: &[Node], i: usize, on: usize, deps: &mut Deps| {
        for task in nodes[i].tasks.clone() {
            for dep in nodes[on].tasks.clone() {
                if !deps[task].contains(&dep) {
                    deps[task].push(dep);
                }
            }
        }
    };
    for level in levels {
        let (pattern, nodes) = (level.pattern, &level.nodes[..]);
        for node in nodes {
            if pattern != Pattern::Graph && !node.after.is_empty() {
                problems.push(problem(
                    &node.path,
                    "after",
                    format!(
                        "`after` orders entries of a graph flow; this flow is {} (set `pattern = \"graph\"`)",
                        pattern.as_str()
                    ),
                ));
            }
        }
        if pattern == Pattern::Linear {
            for i in 1..nodes.len() {
                depend(nodes, i, i - 1, &mut deps);
            }
            continue;
        }
        let providers: BTreeMap<&str, usize> = nodes
            .iter()
            .enumerate()
            .flat_map(|(n, node)| {
                node.tasks
                    .clone()
                    .flat_map(move |t| bindings[t].provides.iter().map(move |p| (p.as_str(), n)))
            })
            .collect();
        let index: BTreeMap<&str, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.local.as_str(), i))
            .collect();
        for (i, node) in nodes.iter().enumerate() {
            for t in node.tasks.clone() {
                let binding = bindings[t];
                // What the entry reads: its arguments' store names and its `when`'s names.
                let reads = binding
                    .required
                    .iter()
                    .chain(&binding.optional)
                    .map(|(arg, key)| (if arg == key { "name" } else { "rebind" }, key))
                    .chain(binding.condition.iter().map(|key| ("when", key)));
                for (field, key) in reads {
                    // A name provided inside the same entry is that entry's own business.
                    let Some(&from) = providers.get(key.as_str()).filter(|&&from| from != i) else {
                        continue;
                    };
                    if pattern == Pattern::Unordered {
                        problems.push(problem(
                            &tasks[t].name,
                            field,
                            format!(
                                "reads `{key}`, which {} `{}` provides: entries of an unordered flow may not depend on each other's results (use `pattern = \"graph\"`)",
                                nodes[from].kind,
                                nodes[from].path
                            ),
                        ));
                    } else {
                        depend(nodes, i, from, &mut deps);
                    }
                }
            }
            for name in &node.after {
                match index.get(name.as_str()) {
                    Some(&from) if from == i => problems.push(problem(
                        &node.path,
                        "after",
                        "an entry cannot run after itself".into(),
                    )),
                    Some(&from) => depend(nodes, i, from, &mut deps),
                    None => problems.push(problem(
                        &node.path,
                        "after",
                        format!("`after` names `{name}`, which is no entry of this flow"),
                    )),
                }
            }
        }
    }
    if !levels.iter().all(|l| l.pattern == Pattern::Linear) {
        let provided: BTreeMap<&str, usize> = bindings
            .iter()
            .enumerate()
            .flat_map(|(i, b)| b.provides.iter().map(move |n| (n.as_str(), i)))
            .collect();
        for (i, (task, binding)) in tasks.iter().zip(bindings).enumerate() {
            // A task's own result is not an input of it: the initial store must hold it.
            let missing: Vec<String> = binding
                .required
                .iter()
                .map(|(_, key)| key)
                .filter(|key| {
                    provided.get(key.as_str()).is_none_or(|&from| from == i) && !available(key)
                })
                .cloned()
                .collect();
            if !missing.is_empty() {
                problems.push(Problem {
                    task: Some(task.name.clone()),
                    field: None,
                    message: format!(
                        "requires {}, which neither the initial store nor any task provides",
                        quoted(&missing)
                    ),
                });
            }
        }
    }
    if let Some(cycle) = find_cycle(&deps) {
        let names: Vec<String> = cycle
            .iter()
            .map(|&i| format!("`{}`", tasks[i].name))
            .collect();
        problems.push(Problem {
            task: Some(tasks[cycle[0]].name.clone()),
            field: None,
            message: format!(
                "the flow has a cycle: {} -> `{}`; each needs the one before it to succeed first",
                names.join(" -> "),
                tasks[cycle[0]].name
            ),
        });
    }
    if problems.is_empty() {
        Ok(deps)
    } else {
        Err(problems)
    }
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
