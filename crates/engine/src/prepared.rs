//! Prepared flows: a flow validated once, its plugins loaded, described and bound once, then
//! run many times — every run of a batch, every POST of a known flow to `serve`, every
//! claimed run of a worker. Each run re-checks only what depends on it: its initial store's
//! names against what the entries read, and the sandboxes that read the host when a run
//! loads (a granted directory is pinned per run, as before; `env` and secrets are read per
//! run). The rest — the tree, the bound tasks with their configs and bindings, the graph,
//! the names provided — is shared by every run through one `Arc`, so a run in flight holds
//! little more than its own store and records.
//!
//! The engine keeps the flows it prepared in a small cache ([`PREPARED_FLOWS`] of them, the
//! least recently used dropped first), found by the flow's content (every field of its
//! `FlowSpec`, which is what its file says, and the folder its paths resolve against) and
//! kept only while each plugin it bound is still the one the engine holds for its path (a
//! worker that replaced a plugin file prepares again). A changed flow file is another flow.

use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowhost_core::flow::FlowSpec;
use flowhost_core::plan::ValidationError;
use flowhost_core::plan::graph::Deps;
use flowhost_core::plan::tree::{MapScope, Scope};
use flowhost_core::store::Store;
use flowhost_runtime::Runtime;

use crate::task::BoundTask;
use crate::validate::{self, RunStart, Static};

/// Prepared flows an engine keeps; a process running more distinct flows than this at once
/// prepares some again (correct, only slower).
pub const PREPARED_FLOWS: usize = 64;

/// A flow prepared for many runs: validated as far as no run's store matters, its plugins
/// loaded and described, its entries bound. Made by [`crate::Engine::prepare`]; each run is
/// loaded from it with [`crate::Engine::load_prepared`].
pub struct Prepared {
    pub(crate) flow: Arc<FlowSpec>,
    /// The content key the cache finds it by.
    key: u64,
    pub(crate) checks: Static,
    /// Every entry bound (empty when a plugin did not load: no run starts then).
    pub(crate) tasks: Arc<[Arc<BoundTask>]>,
    pub(crate) deps: Arc<Deps>,
    pub(crate) ignored_with: Arc<Deps>,
    pub(crate) scopes: Arc<[Scope]>,
    /// The subflows that map over a list.
    pub(crate) maps: Arc<[MapScope]>,
    /// The names the entries and controllers provide (a run adds its initial store's).
    pub(crate) provided: Arc<HashSet<String>>,
    pub(crate) max_parallel: usize,
    pub(crate) timeout: Option<Duration>,
}

impl Prepared {
    pub(crate) async fn new(runtime: &Runtime, flow: &FlowSpec) -> Self {
        let checks = validate::prepare(runtime, flow).await;
        let tasks: Option<Vec<Arc<BoundTask>>> =
            checks.entries.iter().map(|e| e.task.clone()).collect();
        Self {
            flow: Arc::new(flow.clone()),
            key: content_key(flow),
            tasks: tasks.unwrap_or_default().into(),
            deps: Arc::new(checks.deps.clone()),
            ignored_with: Arc::new(checks.ignored_with.clone()),
            scopes: checks.tree.scopes.clone().into(),
            maps: checks.tree.maps.clone().into(),
            provided: Arc::new(checks.provided.clone()),
            max_parallel: flow
                .max_parallel
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            timeout: flow
                .timeout_ms
                .and_then(|ms| u64::try_from(ms).ok())
                .map(Duration::from_millis),
            checks,
        }
    }

    /// The flow it was prepared from.
    pub fn flow(&self) -> &FlowSpec {
        &self.flow
    }

    /// A run's own checks and sandboxes: its initial store and tasks, or every problem of
    /// the flow with this store.
    pub(crate) fn check_run(
        &self,
        runtime: &Runtime,
        store: Store,
    ) -> Result<RunStart, ValidationError> {
        validate::check_run(runtime, &self.flow, &self.checks, &self.tasks, store)
    }

    /// Whether every plugin it bound is still the one `runtime` holds for its path.
    fn is_current(&self, runtime: &Runtime) -> bool {
        self.checks.entries.iter().all(|entry| match &entry.task {
            Some(task) => match &task.plugin {
                Some(plugin) => runtime
                    .loaded(plugin.path())
                    .is_some_and(|now| Arc::ptr_eq(&now, plugin)),
                // A wait entry (or one naming no plugin) binds none.
                None => true,
            },
            // A plugin that did not load may load now.
            None => false,
        })
    }
}

/// The prepared flows of one engine, most recently used first.
#[derive(Default)]
pub(crate) struct PreparedCache {
    flows: Mutex<VecDeque<Arc<Prepared>>>,
    /// How many flows were prepared, for tests and reports.
    made: std::sync::atomic::AtomicU64,
}

impl PreparedCache {
    /// The prepared `flow`, made now unless a current one is kept.
    pub(crate) async fn get(&self, runtime: &Runtime, flow: &FlowSpec) -> Arc<Prepared> {
        let key = content_key(flow);
        {
            let mut flows = self.flows.lock().expect("prepared flows poisoned");
            if let Some(at) = flows
                .iter()
                .position(|p| p.key == key && *p.flow == *flow && p.is_current(runtime))
            {
                let found = flows.remove(at).expect("found above");
                flows.push_front(found.clone());
                return found;
            }
        }
        let prepared = Arc::new(Prepared::new(runtime, flow).await);
        self.made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut flows = self.flows.lock().expect("prepared flows poisoned");
        flows.retain(|p| !(p.key == key && *p.flow == *flow));
        flows.push_front(prepared.clone());
        flows.truncate(PREPARED_FLOWS);
        prepared
    }

    pub(crate) fn made(&self) -> u64 {
        self.made.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A hash of everything the flow says (its `FlowSpec` as JSON) and the folder its paths
/// resolve against; equal flows have equal keys (a hit is confirmed by comparing flows).
fn content_key(flow: &FlowSpec) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(flow)
        .unwrap_or_default()
        .hash(&mut hasher);
    flow.base_dir.hash(&mut hasher);
    hasher.finish()
}
