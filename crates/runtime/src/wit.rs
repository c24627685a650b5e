//! The generated WIT bindings of every contract version the host accepts, and the one
//! [`Guest`] that hides which version a plugin speaks: the rest of the host sees only the
//! contract's types (`flowhost_core::contract`).
//!
//! 0.2 (`wit/task.wit`) is 0.1 (`wit/v0.1/task.wit`) plus a result of `revert` and the
//! `host` import; a 0.1 plugin is called exactly as before and its revert has no result.

use flowhost_core::contract::{Outcome, TaskError, TaskInfo};

/// Contract 0.2: the current one.
pub(crate) mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "plugin",
        exports: { default: async },
    });
}

/// Contract 0.1: still accepted.
pub(crate) mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../../wit/v0.1",
        world: "plugin",
        exports: { default: async },
    });
}

pub(crate) use v0_2::flowhost::task::host as host_import;

/// Conversions between one version's generated types and the contract's; the same code for
/// every version, whose types have the same shape but are distinct.
macro_rules! conversions {
    ($version:ident) => {
        pub(crate) mod $version {
            use super::super::$version::exports::flowhost::task::task as wit;
            use flowhost_core::contract::{Outcome, TaskError, TaskInfo};

            pub(crate) fn error(error: wit::TaskError) -> TaskError {
                let details = error
                    .details
                    .map(|d| serde_json::from_str(&d).unwrap_or(serde_json::Value::String(d)));
                TaskError {
                    code: error.code,
                    message: error.message,
                    details,
                }
            }

            pub(crate) fn to_error(error: &TaskError) -> wit::TaskError {
                wit::TaskError {
                    code: error.code.clone(),
                    message: error.message.clone(),
                    details: error.details.as_ref().map(ToString::to_string),
                }
            }

            pub(crate) fn info(info: wit::TaskInfo) -> TaskInfo {
                TaskInfo {
                    name: info.name,
                    version: info.version,
                    description: info.description,
                    requires: info.requires,
                    optional: info.optional,
                    provides: info.provides,
                }
            }

            pub(crate) fn outcome(outcome: &Outcome) -> wit::Outcome {
                match outcome {
                    Outcome::Result(json) => wit::Outcome::Result(json.clone()),
                    Outcome::Error(e) => wit::Outcome::Error(to_error(e)),
                }
            }

            pub(crate) fn failures(failures: &[(String, TaskError)]) -> Vec<wit::FlowFailure> {
                failures
                    .iter()
                    .map(|(task, e)| wit::FlowFailure {
                        task: task.clone(),
                        error: to_error(e),
                    })
                    .collect()
            }
        }
    };
}

mod convert {
    conversions!(v0_1);
    conversions!(v0_2);
}

/// A component pre-linked for the contract version it exports.
pub(crate) enum GuestPre<T: 'static> {
    V0_1(v0_1::PluginPre<T>),
    V0_2(v0_2::PluginPre<T>),
}

impl<T: Send + 'static> GuestPre<T> {
    /// The newest version the component exports, or why it exports none the host accepts.
    pub(crate) fn new(pre: wasmtime::component::InstancePre<T>) -> wasmtime::Result<Self> {
        match v0_2::PluginPre::new(pre.clone()) {
            Ok(pre) => Ok(Self::V0_2(pre)),
            Err(newest) => v0_1::PluginPre::new(pre)
                .map(Self::V0_1)
                .map_err(|_| newest),
        }
    }

    pub(crate) fn engine(&self) -> &wasmtime::Engine {
        match self {
            Self::V0_1(pre) => pre.engine(),
            Self::V0_2(pre) => pre.engine(),
        }
    }

    /// The names of the component's imports.
    pub(crate) fn imports(&self) -> Vec<String> {
        let component = match self {
            Self::V0_1(pre) => pre.instance_pre().component(),
            Self::V0_2(pre) => pre.instance_pre().component(),
        };
        component
            .component_type()
            .imports(self.engine())
            .map(|(name, _)| name.to_owned())
            .collect()
    }

    /// The contract version the component speaks, as `major.minor`.
    pub(crate) fn version(&self) -> &'static str {
        match self {
            Self::V0_1(_) => "0.1",
            Self::V0_2(_) => "0.2",
        }
    }

    pub(crate) async fn instantiate_async(
        &self,
        store: &mut wasmtime::Store<T>,
    ) -> wasmtime::Result<Guest> {
        Ok(match self {
            Self::V0_1(pre) => Guest::V0_1(pre.instantiate_async(store).await?),
            Self::V0_2(pre) => Guest::V0_2(pre.instantiate_async(store).await?),
        })
    }
}

/// A live instance's exports, at its contract version.
pub(crate) enum Guest {
    V0_1(v0_1::Plugin),
    V0_2(v0_2::Plugin),
}

impl Guest {
    pub(crate) async fn describe<T: Send>(
        &self,
        store: &mut wasmtime::Store<T>,
    ) -> wasmtime::Result<TaskInfo> {
        Ok(match self {
            Self::V0_1(g) => {
                convert::v0_1::info(g.flowhost_task_task().call_describe(store).await?)
            }
            Self::V0_2(g) => {
                convert::v0_2::info(g.flowhost_task_task().call_describe(store).await?)
            }
        })
    }

    pub(crate) async fn execute<T: Send>(
        &self,
        store: &mut wasmtime::Store<T>,
        args: &str,
        config: &str,
    ) -> wasmtime::Result<Result<String, TaskError>> {
        Ok(match self {
            Self::V0_1(g) => g
                .flowhost_task_task()
                .call_execute(store, args, config)
                .await?
                .map_err(convert::v0_1::error),
            Self::V0_2(g) => g
                .flowhost_task_task()
                .call_execute(store, args, config)
                .await?
                .map_err(convert::v0_2::error),
        })
    }

    /// Calls `revert`; `Ok(None)` when it returned no result (always, for a 0.1 plugin).
    pub(crate) async fn revert<T: Send>(
        &self,
        store: &mut wasmtime::Store<T>,
        args: &str,
        config: &str,
        outcome: &Outcome,
        failures: &[(String, TaskError)],
    ) -> wasmtime::Result<Result<Option<String>, TaskError>> {
        Ok(match self {
            Self::V0_1(g) => {
                let (outcome, failures) = (
                    convert::v0_1::outcome(outcome),
                    convert::v0_1::failures(failures),
                );
                let called = g
                    .flowhost_task_task()
                    .call_revert(store, args, config, &outcome, &failures)
                    .await?;
                called.map(|()| None).map_err(convert::v0_1::error)
            }
            Self::V0_2(g) => {
                let (outcome, failures) = (
                    convert::v0_2::outcome(outcome),
                    convert::v0_2::failures(failures),
                );
                let called = g
                    .flowhost_task_task()
                    .call_revert(store, args, config, &outcome, &failures)
                    .await?;
                called.map_err(convert::v0_2::error)
            }
        })
    }
}
