//! What can be said of a plugin without executing it: its file (when it did not load, which
//! exports and imports it has, read with wasmtime, so the report names the wrong contract or
//! every import the host cannot satisfy) and its `describe()` declaration. Separate from the
//! suite's calls because nothing here runs the plugin's code beyond `describe`.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use flowhost_core::contract::{CONTRACT, accepts_export};
use flowhost_runtime::{Plugin, PluginError};

use super::cases::Cases;
use super::report::{ConformReport, Status, list};

/// WASI 0.2 packages the host links (`wasmtime_wasi::p2::add_to_linker_async`); an import
/// from anywhere else cannot be satisfied.
const HOST_PACKAGES: [&str; 7] = [
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:filesystem/",
    "wasi:http/",
    "wasi:io/",
    "wasi:random/",
    "wasi:sockets/",
];

/// What the imports check says of a plugin that loaded: every import is the host's, and
/// which network interfaces it uses — they reach only what a task entry's `net` grants.
pub(super) fn imports_note(imports: &[String]) -> String {
    let network: Vec<String> = imports
        .iter()
        .filter(|i| i.starts_with("wasi:http/") || i.starts_with("wasi:sockets/"))
        .cloned()
        .collect();
    if network.is_empty() {
        "imports only what the host provides; no network interface".to_owned()
    } else {
        format!(
            "imports only what the host provides; network interfaces: {} (they reach only what the task entry's `net` grants)",
            list(&network)
        )
    }
}

/// What the contract check says of a plugin that loaded, by the version it speaks.
pub(super) fn contract_note(version: &str) -> String {
    if CONTRACT.ends_with(&format!("@{version}.0")) {
        format!("exports `{CONTRACT}` (contract {version}, the current one)")
    } else {
        format!(
            "exports contract {version}, which this host still accepts; the current one is `{CONTRACT}` \
             (revert results, progress, structured logs, the run id and attempt)"
        )
    }
}

/// The contract versions this host accepts, for messages: "`flowhost:task/task@0.1.x`, …".
fn accepted() -> String {
    flowhost_core::contract::ACCEPTED_VERSIONS
        .iter()
        .map(|v| format!("`{v}x`"))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Names what is wrong with a component that did not load: not a component, the wrong
/// contract, or every import the host cannot satisfy.
pub(super) fn report_load_failure(report: &mut ConformReport, path: &Path, error: &PluginError) {
    match error {
        PluginError::Read { .. }
        | PluginError::NotAPluginFile { .. }
        | PluginError::Mismatch { .. }
        | PluginError::NotAComponent { .. } => {
            report.push("component", Status::Fail, error.to_string());
            report.push("contract", Status::Skip, "not a component");
            report.push("imports", Status::Skip, "not a component");
        }
        PluginError::UnsupportedImport { import, .. }
        | PluginError::NotATask { reason: import, .. } => {
            report.push("component", Status::Pass, "a valid WebAssembly component");
            let (imports, exports) = match component_world(path) {
                Ok(world) => world,
                Err(reason) => {
                    report.push("contract", Status::Fail, reason);
                    return;
                }
            };
            match exports.iter().find(|e| e.starts_with("flowhost:task/")) {
                Some(name) if accepts_export(name) => {
                    report.push("contract", Status::Pass, format!("exports `{name}`"))
                }
                Some(name) => report.push(
                    "contract",
                    Status::Fail,
                    format!(
                        "exports `{name}`, but this host accepts only {}",
                        accepted()
                    ),
                ),
                None => report.push(
                    "contract",
                    Status::Fail,
                    format!(
                        "does not export `{CONTRACT}`; it exports: {}",
                        list(&exports)
                    ),
                ),
            }
            let mut offending: Vec<String> = imports.into_iter().filter(|i| !provided(i)).collect();
            if matches!(error, PluginError::UnsupportedImport { .. }) {
                let named = import.split('#').next().unwrap_or(import).to_owned();
                if !offending.contains(&named) {
                    offending.push(named);
                }
            }
            if offending.is_empty() {
                report.push(
                    "imports",
                    Status::Pass,
                    "imports only what the host provides",
                );
            } else {
                report.push(
                    "imports",
                    Status::Fail,
                    format!(
                        "imports what the host does not provide: {}",
                        list(&offending)
                    ),
                );
            }
        }
        PluginError::Describe { reason, .. } => {
            report.push("component", Status::Pass, "a valid WebAssembly component");
            report.push(
                "contract",
                Status::Pass,
                "exports an accepted version of the task contract",
            );
            report.push(
                "imports",
                Status::Pass,
                "imports only what the host provides",
            );
            report.push(
                "describe",
                Status::Fail,
                format!("describe() failed: {reason}"),
            );
        }
        PluginError::Unavailable { .. } => {
            report.push("component", Status::Pass, "a valid WebAssembly component");
            report.push("describe", Status::Skip, error.to_string());
        }
    }
}

/// The component's top-level import and export names, read with a plain engine (only on
/// the failure path, so the runtime's compiled-component handling stays the only one).
fn component_world(path: &Path) -> Result<(Vec<String>, Vec<String>), String> {
    let engine = wasmtime::Engine::default();
    let component = wasmtime::component::Component::from_file(&engine, path)
        .map_err(|e| format!("cannot read the component's imports and exports: {e:#}"))?;
    let ty = component.component_type();
    let imports = ty
        .imports(&engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    let exports = ty
        .exports(&engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    Ok((imports, exports))
}

fn provided(import: &str) -> bool {
    (HOST_PACKAGES.iter().any(|p| import.starts_with(p)) && import.contains("@0.2."))
        || import.starts_with("flowhost:task/host@0.2.")
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

pub(super) fn check_describe(report: &mut ConformReport, plugin: &Plugin, cases: Option<&Cases>) {
    let info = plugin.info();
    let mut problems = Vec::new();
    if info.name.trim().is_empty() {
        problems.push("the name is empty".to_owned());
    }
    if info.version.trim().is_empty() {
        problems.push("the version is empty".to_owned());
    }
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (list, names) in [
        ("requires", &info.requires),
        ("optional", &info.optional),
        ("provides", &info.provides),
    ] {
        let mut in_list = HashSet::new();
        for name in names {
            if !valid_name(name) {
                problems.push(format!(
                    "{list} name `{name}` is not a valid name (a letter or `_`, then letters, digits, `_`, `-`, `.`)"
                ));
            }
            if !in_list.insert(name.as_str()) {
                problems.push(format!("{list} lists `{name}` twice"));
            } else if list != "provides"
                && let Some(other) = seen.insert(name, list)
            {
                problems.push(format!("`{name}` is in both {other} and {list}"));
            }
        }
    }
    if info.provides.is_empty() && !cases.is_some_and(|c| c.allow_no_provides) {
        problems.push(
            "provides is empty: the result would be dropped (set `allow_no_provides = true` in the cases file if the task works only by side effect)"
                .to_owned(),
        );
    }
    if problems.is_empty() {
        report.push(
            "describe",
            Status::Pass,
            format!(
                "{} {}: requires [{}], optional [{}], provides [{}]",
                info.name,
                info.version,
                info.requires.join(", "),
                info.optional.join(", "),
                info.provides.join(", ")
            ),
        );
    } else {
        report.push("describe", Status::Fail, problems.join("; "));
    }
}

#[cfg(test)]
mod tests {
    use super::imports_note;

    fn owned(imports: &[&str]) -> Vec<String> {
        imports.iter().map(|i| (*i).to_owned()).collect()
    }

    #[test]
    fn a_plugin_without_network_imports_is_said_to_have_none() {
        let note = imports_note(&owned(&[
            "wasi:cli/stdout@0.2.6",
            "flowhost:task/host@0.2.0",
        ]));
        assert_eq!(
            note,
            "imports only what the host provides; no network interface"
        );
    }

    #[test]
    fn network_imports_are_named_with_what_reaches_them() {
        let note = imports_note(&owned(&[
            "wasi:cli/stdout@0.2.6",
            "wasi:http/outgoing-handler@0.2.6",
            "wasi:sockets/tcp@0.2.6",
        ]));
        assert_eq!(
            note,
            "imports only what the host provides; network interfaces: `wasi:http/outgoing-handler@0.2.6`, \
             `wasi:sockets/tcp@0.2.6` (they reach only what the task entry's `net` grants)"
        );
    }
}
