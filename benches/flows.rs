//! Every figure of BENCHMARKS.md in one run: `cargo bench -p flowhost --bench flows`.
//!
//! Each row group is one function called from `main` (add a group by adding a function),
//! printing its rows of one Markdown table as it goes: the bare wasmtime floor under several
//! allocator configurations, per-task cost against the best of them, per-task cost and runs
//! per second with the SQLite run database against in-memory runs, flows per second at
//! several concurrencies, workers on PostgreSQL (runs/s with 1, 2 and 4 workers, database
//! commits per task, pickup latency; `benches/flows/workers.rs`), the PostgreSQL run database
//! against in-memory runs (µs/task, runs/s, round trips and commits per task, a worker's drain;
//! `benches/flows/postgres.rs`), CLI cold start with an empty and a warm cache, peak memory with
//! 100,000 runs in flight, and TaskFlow 6.5 on the same shapes (`benches/taskflow/`).
//! All figures are medians of several repetitions; the machine is expected to be noisy.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowhost::runs::{self, Durability, Executor, RunDb, SqliteRunDb};
use flowhost::{
    Batch, BatchInput, Engine, EngineConfig, FlowSpec, Instances, Limits, Pattern, Store, TaskSpec,
};
use flowhost_testkit::{plugin, repo_root};
use serde_json::json;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Enabled, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

#[path = "flows/postgres.rs"]
mod postgres;
#[path = "flows/workers.rs"]
mod workers;

mod floor {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "plugin",
        exports: { default: async },
    });
}

/// Tells a re-executed bench process to run the peak-memory measurement alone.
const ROLE_ENV: &str = "FLOWHOST_BENCH_ROLE";
/// Runs in flight for the peak-memory row.
const IN_FLIGHT: usize = 100_000;

/// Figures measured early that later rows compare with (TaskFlow's ratios).
#[derive(Default)]
struct Seen {
    /// µs/task fresh and warm, by flow length.
    fresh: Vec<(usize, f64)>,
    warm: Vec<(usize, f64)>,
    /// Cached CLI run of the example, ms.
    cli_ms: f64,
}

fn main() {
    if std::env::var(ROLE_ENV).as_deref() == Ok("rss") {
        rss_child();
        return;
    }
    println!(
        "flowhost benchmark ({} cores)\n",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("| row | figure |");
    println!("|---|---|");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // `FLOWHOST_BENCH_ONLY=graph,workers` prints only those groups (the whole table takes
    // long; a change to one part is measured with its group alone). The TaskFlow ratios need
    // the task-cost and CLI groups of the same run.
    let only = std::env::var("FLOWHOST_BENCH_ONLY").ok();
    let wanted = |group: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|g| g.trim() == group))
    };
    let mut seen = Seen::default();
    if wanted("tasks") {
        let floor = runtime.block_on(wasmtime_floor());
        runtime.block_on(task_costs(floor, &mut seen));
    }
    if wanted("durable") {
        runtime.block_on(durable_costs());
    }
    if wanted("graph") {
        runtime.block_on(graph_against_linear());
    }
    if wanted("flows") {
        runtime.block_on(flows_per_second());
    }
    if wanted("postgres") {
        runtime.block_on(postgres::postgres_rows());
    }
    if wanted("workers") {
        runtime.block_on(workers::worker_rows());
    }
    if wanted("cli") {
        cold_start(&mut seen);
    }
    if wanted("rss") {
        peak_rss();
    }
    if wanted("taskflow") {
        taskflow(&seen);
    }
}

fn row(name: &str, figure: String) {
    println!("| {name} | {figure} |");
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// State of the floor's stores: the WASI context and nothing else.
struct Bare {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Bare {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The contract's `host` import (0.2), which the probe component imports, at its cheapest:
/// `invocation` returns fixed values, `progress` and `log` do nothing. The floor measures
/// what wasmtime itself costs (store, instantiation, the call), not what flowhost's host
/// does with these calls (`crates/runtime/src/host.rs`); with the benches' empty config the
/// probe calls none of them anyway, but it cannot be instantiated without them linked.
impl floor::flowhost::task::host::Host for Bare {
    fn invocation(&mut self) -> floor::flowhost::task::host::InvocationInfo {
        floor::flowhost::task::host::InvocationInfo {
            run_id: "floor".to_owned(),
            task: "probe".to_owned(),
            attempt: 1,
        }
    }

    fn progress(&mut self, _fraction: f32, _details: Option<String>) {}

    fn log(
        &mut self,
        _level: floor::flowhost::task::host::Level,
        _message: String,
        _fields: Vec<(String, String)>,
    ) {
    }
}

/// A wasmtime configuration the floor is measured under.
struct FloorConfig {
    name: &'static str,
    config: Config,
    /// Whether flowhost could use it as is: no knob that trades safety for speed.
    safe: bool,
}

/// The floor's configurations, from wasmtime's defaults to flowhost's and beyond. Pool sizes
/// as flowhost's (`crates/runtime/src/lib.rs`).
fn floor_configs() -> Vec<FloorConfig> {
    let pool = || {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(1000)
            .total_core_instances(10_000)
            .total_memories(2000)
            .total_tables(4000)
            .total_stacks(1000);
        pool
    };
    let pooled = |pool: PoolingAllocationConfig| {
        let mut config = Config::new();
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        config
    };
    let resident = || {
        let mut pool = pool();
        pool.linear_memory_keep_resident(4 << 20)
            .table_keep_resident(256 << 10)
            .pagemap_scan(Enabled::Auto);
        pool
    };
    let no_cow = {
        let mut config = pooled(resident());
        config.memory_init_cow(false);
        config
    };
    let no_guard = {
        let mut pool = resident();
        pool.max_memory_size(256 << 20);
        let mut config = pooled(pool);
        config.memory_guard_size(0).memory_reservation(256 << 20);
        config
    };
    vec![
        FloorConfig {
            name: "pooling, wasmtime defaults",
            config: pooled(pool()),
            safe: true,
        },
        FloorConfig {
            name: "pooling + keep resident (4 MiB memories, 256 KiB tables) + pagemap_scan (flowhost's)",
            config: pooled(resident()),
            safe: true,
        },
        FloorConfig {
            name: "the same + memory_init_cow(false)",
            config: no_cow,
            safe: true,
        },
        FloorConfig {
            name: "the same + no guard pages, 256 MiB reservation (not used: see BENCHMARKS.md)",
            config: no_guard,
            safe: false,
        },
        FloorConfig {
            name: "on-demand allocation",
            config: Config::new(),
            safe: true,
        },
    ]
}

/// One fresh store, WASI context and instance, and one `execute` call: the floor's unit.
async fn fresh_call(pre: &floor::PluginPre<Bare>, args: &str) {
    let mut store = wasmtime::Store::new(
        pre.engine(),
        Bare {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        },
    );
    let guest = pre
        .instantiate_async(&mut store)
        .await
        .expect("instantiate");
    let result = guest
        .flowhost_task_task()
        .call_execute(&mut store, args, "{}")
        .await
        .expect("call");
    assert!(result.is_ok());
}

/// The same component called through wasmtime alone (no flowhost), under each configuration:
/// median latency of a fresh store + instantiate + call one at a time, and calls per second
/// with 64 at once. Returns the best safe configuration's latency (the floor flowhost's fresh
/// tasks are compared with) and the reused-instance floor, and prints where a fresh call's
/// time goes under the best configuration.
async fn wasmtime_floor() -> (f64, f64) {
    const CALLS: usize = 2000;
    const AT_ONCE: usize = 64;
    let args: Arc<str> = json!({"value": 1}).to_string().into();
    let mut best: Option<(f64, Arc<floor::PluginPre<Bare>>)> = None;
    for FloorConfig { name, config, safe } in floor_configs() {
        let engine = wasmtime::Engine::new(&config).expect("engine");
        let component = Component::from_file(&engine, plugin("probe")).expect("compile probe");
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("link WASI");
        floor::flowhost::task::host::add_to_linker::<_, HasSelf<Bare>>(&mut linker, |bare| bare)
            .expect("link the contract's host import");
        let pre = Arc::new(
            floor::PluginPre::new(linker.instantiate_pre(&component).expect("pre"))
                .expect("bindings"),
        );
        let mut latency = Vec::with_capacity(CALLS);
        for _ in 0..CALLS {
            let started = Instant::now();
            fresh_call(&pre, &args).await;
            latency.push(micros(started.elapsed()));
        }
        let started = Instant::now();
        let workers: Vec<_> = (0..AT_ONCE)
            .map(|_| {
                let (pre, args) = (pre.clone(), args.clone());
                tokio::spawn(async move {
                    for _ in 0..CALLS / AT_ONCE {
                        fresh_call(&pre, &args).await;
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await.expect("floor worker");
        }
        let per_second = (CALLS / AT_ONCE * AT_ONCE) as f64 / started.elapsed().as_secs_f64();
        let latency = median(latency);
        row(
            &format!("wasmtime floor, {name}: µs one at a time / calls/s {AT_ONCE} at once"),
            format!("{latency:.1} / {per_second:.0}"),
        );
        if safe && best.as_ref().is_none_or(|(b, _)| latency < *b) {
            best = Some((latency, pre));
        }
    }
    let (fresh, pre) = best.expect("a safe configuration");
    row(
        "wasmtime floor, best safe configuration, fresh store + instantiate + call (µs)",
        format!("{fresh:.1}"),
    );

    let new_store = || {
        wasmtime::Store::new(
            pre.engine(),
            Bare {
                wasi: WasiCtx::builder().build(),
                table: ResourceTable::new(),
            },
        )
    };
    let (mut ctx, mut instantiate, mut call) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..CALLS {
        let t0 = Instant::now();
        let mut store = new_store();
        let t1 = Instant::now();
        let guest = pre
            .instantiate_async(&mut store)
            .await
            .expect("instantiate");
        let t2 = Instant::now();
        let result = guest
            .flowhost_task_task()
            .call_execute(&mut store, &args, "{}")
            .await
            .expect("call");
        assert!(result.is_ok());
        drop(store);
        let t3 = Instant::now();
        ctx.push(micros(t1 - t0));
        instantiate.push(micros(t2 - t1));
        call.push(micros(t3 - t2));
    }
    row(
        "  of which: store + WASI ctx / instantiate / call + drop (µs)",
        format!(
            "{:.1} / {:.1} / {:.1}",
            median(ctx),
            median(instantiate),
            median(call)
        ),
    );

    let mut store = new_store();
    let guest = pre
        .instantiate_async(&mut store)
        .await
        .expect("instantiate");
    let mut reuse = Vec::new();
    for _ in 0..CALLS {
        let t0 = Instant::now();
        let result = guest
            .flowhost_task_task()
            .call_execute(&mut store, &args, "{}")
            .await
            .expect("call");
        assert!(result.is_ok());
        reuse.push(micros(t0.elapsed()));
    }
    let reused = median(reuse);
    row(
        "wasmtime floor, one instance reused (µs/call)",
        format!("{reused:.1}"),
    );
    (fresh, reused)
}

/// A linear flow of `n` probe tasks, each echoing the initial `value`.
fn chain(n: usize, instances: Instances) -> FlowSpec {
    (0..n).fold(FlowSpec::linear(format!("chain{n}")), |flow, i| {
        flow.add(
            TaskSpec::new(format!("t{i}"), plugin("probe"))
                .provides([format!("o{i}")])
                .instances(instances),
        )
    })
}

fn initial() -> Store {
    [("value".to_owned(), json!(1))].into_iter().collect()
}

fn engine() -> Engine {
    Engine::with_config(&EngineConfig::default()).expect("engine")
}

/// µs per task for flows of 10, 100 and 1000 tasks, one run at a time (validation included).
async fn task_costs((fresh_floor, reuse_floor): (f64, f64), seen: &mut Seen) {
    let engine = engine();
    for instances in [Instances::Fresh, Instances::Reuse] {
        let floor = if instances == Instances::Fresh {
            fresh_floor
        } else {
            reuse_floor
        };
        for (n, reps) in [(10, 300), (100, 30), (1000, 5)] {
            let flow = chain(n, instances);
            engine.run(&flow, initial()).await.expect("valid flow");
            let mut per_task = Vec::new();
            for _ in 0..reps {
                let started = Instant::now();
                let report = engine.run(&flow, initial()).await.expect("valid flow");
                assert!(report.succeeded());
                per_task.push(micros(started.elapsed()) / n as f64);
            }
            let cost = median(per_task);
            row(
                &format!("µs/task, N={n}, {}", label(instances)),
                format!("{cost:.1} ({:.2}× floor)", cost / floor),
            );
            match instances {
                Instances::Fresh => seen.fresh.push((n, cost)),
                Instances::Reuse => seen.warm.push((n, cost)),
            }
        }
    }
}

/// A 10-task graph flow of independent tasks against the linear flow of the same tasks: µs
/// per task and wall time per run, for echoing tasks (the scheduler's overhead) and for tasks
/// that each sleep 10 ms in the host (what running them at once buys).
async fn graph_against_linear() {
    let engine = engine();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (what, config, reps) in [
        ("echo", json!({}), 300),
        ("10 ms sleep", json!({ "mode": "sleep", "ms": 10 }), 20),
    ] {
        let mut walls = Vec::new();
        for pattern in [Pattern::Linear, Pattern::Graph] {
            let flow = (0..10).fold(
                FlowSpec::with_pattern(format!("ten_{}", pattern.as_str()), pattern),
                |flow, i| {
                    flow.add(
                        TaskSpec::new(format!("t{i}"), plugin("probe"))
                            .provides([format!("o{i}")])
                            .config(config.clone()),
                    )
                },
            );
            engine.run(&flow, initial()).await.expect("valid flow");
            let mut wall = Vec::new();
            for _ in 0..reps {
                let started = Instant::now();
                assert!(
                    engine
                        .run(&flow, initial())
                        .await
                        .expect("valid flow")
                        .succeeded()
                );
                wall.push(micros(started.elapsed()));
            }
            let wall = median(wall);
            row(
                &format!(
                    "10 independent tasks ({what}), {} (max_parallel {cores}): µs/task, ms/run",
                    pattern.as_str()
                ),
                format!("{:.1}, {:.2}", wall / 10.0, wall / 1000.0),
            );
            walls.push(wall);
        }
        row(
            &format!("10 independent tasks ({what}): graph wall time / linear"),
            format!("{:.2}×", walls[1] / walls[0]),
        );
    }
}

/// µs per task of a 10-task flow recorded in the SQLite run database (every transition
/// committed before the run moves on), against the same flow in memory, in the same run.
/// Median µs per task of `reps` runs of `flow`, one at a time, each loaded (from the
/// engine's prepared flows) and, with an `executor`, recorded in its run database.
async fn per_task_alone(
    engine: &Engine,
    flow: &FlowSpec,
    executor: Option<&Executor>,
    reps: usize,
) -> f64 {
    let mut per_task = Vec::new();
    for _ in 0..reps {
        let started = Instant::now();
        let mut loaded = engine.load(flow, initial()).await.expect("valid flow");
        if let Some(executor) = executor {
            runs::record(executor, &mut loaded, None, None).expect("record run");
        }
        assert!(loaded.run().await.unwrap().succeeded());
        per_task.push(micros(started.elapsed()) / flow.tasks.len() as f64);
    }
    median(per_task)
}

async fn durable_costs() {
    const N: usize = 10;
    const REPS: usize = 200;
    let engine = engine();
    let flow = chain(N, Instances::Fresh);
    let dir = tempfile::tempdir().expect("temp dir");
    let normal: Arc<dyn RunDb> = Arc::new(
        SqliteRunDb::open(&dir.path().join("normal.db"), true, Durability::Normal).expect("db"),
    );
    let full: Arc<dyn RunDb> = Arc::new(
        SqliteRunDb::open(&dir.path().join("full.db"), true, Durability::Full).expect("db"),
    );
    let mut memory = None;
    for (name, db) in [
        ("in memory", None),
        ("SQLite, synchronous=NORMAL", Some(normal)),
        ("SQLite, synchronous=FULL", Some(full)),
    ] {
        let cost = per_task_alone(&engine, &flow, db.map(Executor::new).as_ref(), REPS).await;
        let base = *memory.get_or_insert(cost);
        row(
            &format!("µs/task, N={N}, fresh, {name}"),
            format!("{cost:.1} ({:.2}× in memory)", cost / base),
        );
    }
    // Throughput, where concurrent runs share commits.
    let db: Arc<dyn RunDb> = Arc::new(
        SqliteRunDb::open(&dir.path().join("batch.db"), true, Durability::Normal).expect("db"),
    );
    for concurrency in [1, 64] {
        let runs = if concurrency == 1 { 500 } else { 2000 };
        let inputs = || {
            (1..=runs).map(|line| BatchInput {
                line,
                store: Ok(initial()),
            })
        };
        let mut rates = Vec::new();
        for durable in [false, true] {
            let mut batch = Batch::new(&engine, &flow).concurrency(concurrency);
            if durable {
                let executor = Executor::new(db.clone());
                batch = batch
                    .prepare_each(move |loaded| Ok(runs::record(&executor, loaded, None, None)?));
            }
            let mut samples = Vec::new();
            for _ in 0..3 {
                let summary = batch.run(inputs(), |_| {}).await;
                assert_eq!(summary.succeeded, runs);
                samples.push(summary.runs_per_second());
            }
            rates.push(median(samples));
        }
        row(
            &format!("ten-task runs/s, concurrency {concurrency}: in memory / SQLite NORMAL"),
            format!(
                "{:.0} / {:.0} ({:.2}× in memory)",
                rates[0],
                rates[1],
                rates[1] / rates[0]
            ),
        );
    }
}

fn label(instances: Instances) -> &'static str {
    match instances {
        Instances::Fresh => "fresh",
        Instances::Reuse => "warm",
    }
}

/// Ten-task flows per second at several concurrencies, through the batch API.
async fn flows_per_second() {
    let engine = engine();
    for instances in [Instances::Fresh, Instances::Reuse] {
        let flow = chain(10, instances);
        let mut alone = None;
        for concurrency in [1, 2, 64, 1024] {
            let runs = if concurrency == 1 { 1000 } else { 4000 };
            let inputs = || {
                (1..=runs).map(|line| BatchInput {
                    line,
                    store: Ok(initial()),
                })
            };
            let batch = Batch::new(&engine, &flow).concurrency(concurrency);
            batch.run(inputs().take(concurrency.min(200)), |_| {}).await;
            let mut rates = Vec::new();
            for _ in 0..3 {
                let summary = batch.run(inputs(), |_| {}).await;
                assert_eq!(summary.succeeded, runs);
                rates.push(summary.runs_per_second());
            }
            let rate = median(rates);
            let base = *alone.get_or_insert(rate);
            row(
                &format!(
                    "ten-task flows/s, concurrency {concurrency}, {}",
                    label(instances)
                ),
                format!("{rate:.0} ({:.2}× concurrency 1)", rate / base),
            );
        }
    }
}

/// The example flow copied to a scratch folder with absolute plugin paths and empty state.
fn example(dir: &Path) -> PathBuf {
    let flow = dir.join("flow.toml");
    let built = plugin("quota_reserve")
        .parent()
        .expect("plugin dir")
        .display()
        .to_string();
    let text = std::fs::read_to_string(repo_root().join("examples/volume-create/flow.toml"))
        .expect("example");
    std::fs::write(
        &flow,
        text.replace("../../plugins/target/wasm32-wasip2/release", &built),
    )
    .expect("write flow");
    flow
}

/// Wall time of `flowhost run` of the five-task example (recording into the run database,
/// as by default), from process start to exit.
fn cold_start(seen: &mut Seen) {
    let scratch = tempfile::tempdir().expect("tempdir");
    let flow = example(scratch.path());
    let state = scratch.path().join("state");
    let cache = scratch.path().join("cache");
    let run = |cache: &Path| {
        let _ = std::fs::remove_dir_all(&state);
        std::fs::create_dir(&state).expect("state dir");
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_flowhost"))
            .args(["-q", "run"])
            .arg(&flow)
            .args(["--fetch", "volume", "--db"])
            .arg(scratch.path().join("runs.db"))
            .env("FLOWHOST_CACHE_DIR", cache)
            .output()
            .expect("run flowhost");
        let wall = started.elapsed();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        wall.as_secs_f64() * 1e3
    };
    let empty: Vec<f64> = (0..3)
        .map(|_| {
            let _ = std::fs::remove_dir_all(&cache);
            run(&cache)
        })
        .collect();
    row(
        "CLI run of the 5-task example, empty cache (ms)",
        format!("{:.1}", median(empty)),
    );
    let warm: Vec<f64> = (0..15).map(|_| run(&cache)).collect();
    seen.cli_ms = median(warm);
    row(
        "CLI run of the 5-task example, warm cache (ms)",
        format!("{:.1}", seen.cli_ms),
    );
}

/// TaskFlow 6.5 on the same shapes (`benches/taskflow/twin.py`, in a virtualenv the script
/// creates), and flowhost's ratio to it from this run's figures.
fn taskflow(seen: &Seen) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/taskflow/run.sh");
    let out = Command::new("bash").arg(&script).output();
    let twin: serde_json::Value = match out {
        Ok(out) if out.status.success() => {
            serde_json::from_slice(&out.stdout).expect("twin prints JSON")
        }
        Ok(out) => {
            row(
                "TaskFlow 6.5",
                format!(
                    "not measured: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            );
            return;
        }
        Err(error) => {
            row("TaskFlow 6.5", format!("not measured: {error}"));
            return;
        }
    };
    // Alone (`FLOWHOST_BENCH_ONLY=taskflow`) there is nothing of flowhost's to compare with:
    // TaskFlow's figures are printed without ratios.
    let of =
        |figures: &[(usize, f64)], n: usize| figures.iter().find(|(m, _)| *m == n).map(|(_, f)| *f);
    for n in [10, 100, 1000] {
        let theirs = twin["per_task_us"][n.to_string()]
            .as_f64()
            .expect("per-task figure");
        let name = format!("TaskFlow µs/task, N={n} (flowhost fresh / warm is faster by)");
        match (of(&seen.fresh, n), of(&seen.warm, n)) {
            (Some(fresh), Some(warm)) => row(
                &name,
                format!(
                    "{theirs:.1} ({:.0}× / {:.0}×)",
                    theirs / fresh,
                    theirs / warm
                ),
            ),
            _ => row(&name, format!("{theirs:.1} (tasks group not run)")),
        }
    }
    let theirs = twin["example_ms"].as_f64().expect("example figure");
    let name = "TaskFlow run of the 5-task example as a process (ms; flowhost's CLI is faster by)";
    if seen.cli_ms > 0.0 {
        row(name, format!("{theirs:.1} ({:.0}×)", theirs / seen.cli_ms));
    } else {
        row(name, format!("{theirs:.1} (cli group not run)"));
    }
}

/// Peak RSS of a process that starts 100,000 runs of a ten-task flow at once, measured in a
/// child process so that nothing else this bench did counts.
fn peak_rss() {
    let out = Command::new(std::env::current_exe().expect("bench binary"))
        .env(ROLE_ENV, "rss")
        .output()
        .expect("run the peak-memory child");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    print!("{}", String::from_utf8_lossy(&out.stdout));
}

fn rss_child() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let engine = engine();
        // The first task sleeps inside the guest, so every run is started before any ends.
        // The deadline is raised from the default 30 s: this row measures memory, and a task
        // that has taken one of the 1000 instance slots shares the cores with the tens of
        // thousands of runs still starting, so on a loaded machine its 100 ms sleep ended
        // more than 30 s of wall time later (seen with other builds running beside the bench).
        let flow = (1..10).fold(
            FlowSpec::linear("in-flight")
                .limits(Limits {
                    deadline_ms: Some(600_000),
                    ..Limits::default()
                })
                .add(
                    TaskSpec::new("sleep", plugin("probe"))
                        .provides(["o0"])
                        .config(json!({"mode": "sleep", "ms": 100})),
                ),
            |flow, i| {
                flow.add(
                    TaskSpec::new(format!("t{i}"), plugin("probe")).provides([format!("o{i}")]),
                )
            },
        );
        let inputs = (1..=IN_FLIGHT).map(|line| BatchInput {
            line,
            store: Ok(initial()),
        });
        // Why the first few runs that did not succeed ended so, for the assertion below.
        let mut failures = Vec::new();
        let summary = Batch::new(&engine, &flow)
            .concurrency(IN_FLIGHT)
            .run(inputs, |outcome| {
                if failures.len() >= 5 {
                    return;
                }
                match &outcome.result {
                    Ok(report) if report.succeeded() => {}
                    Ok(report) => failures.push(format!(
                        "line {}: {:?}: {}",
                        outcome.line,
                        report.state,
                        json!(
                            report
                                .tasks
                                .iter()
                                .filter(|t| t.error.is_some() || t.revert_error.is_some())
                                .collect::<Vec<_>>()
                        )
                    )),
                    Err(error) => failures.push(format!("line {}: {error}", outcome.line)),
                }
            })
            .await;
        assert_eq!(
            summary.succeeded,
            IN_FLIGHT,
            "{} reverted, {} failed; first ones:\n{}",
            summary.reverted,
            summary.failed,
            failures.join("\n")
        );
        row(
            &format!("peak RSS, {IN_FLIGHT} ten-task runs in flight (MiB)"),
            format!(
                "{:.0} (all done in {:.2} s)",
                peak_rss_mib(),
                summary.elapsed.as_secs_f64()
            ),
        );
    });
}

/// The process's high-water resident set size.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    kib / 1024.0
}
