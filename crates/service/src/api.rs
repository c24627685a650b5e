//! The JSON API under `/v1`, `/metrics` and `/healthz`. The routes are listed in
//! [`routes`] and documented, one for one, in `openapi.json` (served at `/v1/openapi.json`).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::StartError;
use super::live::{Next as LogNext, RunLog};
use flowhost_core::class::{Classify, ErrorClass};
use flowhost_core::events::FlowState;
use flowhost_core::flow::FlowSpec;
use flowhost_core::store::Store;
use flowhost_engine::ResumeError;
use flowhost_executor::{ResumeFailure, WorkerError};
use flowhost_runs::{RunDb, RunDbError, RunFilter, RunRecord};

type Shared = State<Arc<AppState>>;

/// The header that makes a start idempotent: of starts of one flow with the same key, only
/// the first starts a run.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The longest idempotency key accepted, in bytes (a UUID is 36; this leaves room for a
/// caller's own composite keys without letting a header grow an index without bound).
const MAX_KEY_BYTES: usize = 255;

/// Every API route. Requests that change something go through the token check.
pub(super) fn routes(state: Arc<AppState>) -> Router {
    let mutating = Router::new()
        .route("/v1/flows/{name}/runs", post(start))
        .route("/v1/runs/{id}/resume", post(resume))
        .route("/v1/runs/{id}/cancel", post(cancel))
        .route("/v1/runs/{id}/suspend", post(suspend))
        .route("/v1/runs/{id}/revert", post(revert))
        .route("/v1/runs/{id}/restart", post(restart))
        .route("/v1/runs/{id}/signals/{name}", post(signal))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/v1/flows", get(flows))
        .route("/v1/flows/{name}", get(flow))
        .route("/v1/runs", get(list))
        .route("/v1/runs/{id}", get(show))
        .route("/v1/runs/{id}/store/{name}", get(store_value))
        .route("/v1/runs/{id}/events", get(run_events))
        .route("/v1/schedules", get(schedules))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(mutating)
        .with_state(state)
}

/// An error answer: a status and a JSON body, `{"error": "…"}` unless it is a list of
/// validation problems.
pub(super) struct ApiError(StatusCode, Value);

impl ApiError {
    fn new(status: StatusCode, message: impl std::fmt::Display) -> Self {
        Self(status, json!({ "error": message.to_string() }))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.0, axum::Json(self.1)).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<RunDbError> for ApiError {
    fn from(error: RunDbError) -> Self {
        let status = status(error.class());
        // The database's location (a path, a URL) is the operator's business, not a caller's.
        Self::new(
            status,
            format!("the run database failed: {}", kind_of(&error)),
        )
    }
}

/// The status of each class of failure: the same classification the command line's exit
/// codes read.
fn status(class: ErrorClass) -> StatusCode {
    match class {
        ErrorClass::Usage => StatusCode::BAD_REQUEST,
        ErrorClass::NotFound => StatusCode::NOT_FOUND,
        ErrorClass::Conflict | ErrorClass::Mismatch | ErrorClass::Held => StatusCode::CONFLICT,
        ErrorClass::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorClass::Unreadable | ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// What a caller of the API is told of a run database failure: what happened, without the
/// database's path or URL.
fn kind_of(error: &RunDbError) -> String {
    match error {
        RunDbError::Held { .. } => error.to_string(),
        RunDbError::Fenced { .. } => "this service no longer holds the run".into(),
        RunDbError::Query { .. } => "a query failed; try again later".into(),
        _ => "it cannot be opened; try again later".into(),
    }
}

impl From<StartError> for ApiError {
    fn from(error: StartError) -> Self {
        let class = error.class();
        match error {
            // The same document as `flowhost check --json` prints for an invalid flow.
            StartError::Invalid(invalid)
            | StartError::Resume(ResumeFailure::Invalid(invalid))
            | StartError::Queue(WorkerError::Invalid(invalid))
                if class == ErrorClass::Invalid =>
            {
                Self(
                    status(class),
                    json!({ "flow": invalid.flow, "state": "INVALID", "problems": invalid.problems }),
                )
            }
            StartError::FlowFile(file) | StartError::Resume(ResumeFailure::FlowFile(file))
                if class == ErrorClass::Invalid =>
            {
                Self(
                    status(class),
                    json!({ "flow": null, "state": "INVALID", "problems": [{ "task": null, "field": null, "message": file.to_string() }] }),
                )
            }
            StartError::Resume(ResumeFailure::Unknown(id)) => {
                Self::new(status(class), format!("no run {id}"))
            }
            StartError::Resume(ResumeFailure::Db(db))
            | StartError::Db(db)
            | StartError::Queue(WorkerError::Db(db)) => Self::from(db),
            StartError::Resume(ResumeFailure::Changed { .. }) => Self::new(
                status(class),
                format!(
                    "{error}\nthe service resumes only runs whose flow and plugins are unchanged: start a new run instead"
                ),
            ),
            StartError::Stopped(ref stopped)
            | StartError::Resume(ResumeFailure::Resume(ResumeError::Stopped(ref stopped))) => {
                let run = stopped.run.clone();
                // The journal's error names the database (a path, a URL): told by kind.
                let why = stopped.error.downcast_ref::<RunDbError>().map_or_else(
                    || "the run database failed".to_owned(),
                    |db| format!("the run database failed: {}", kind_of(db)),
                );
                Self::new(
                    status(class),
                    format!(
                        "run {run} stopped: {why}. Nothing ran past the last recorded transition; resume it with POST /v1/runs/{run}/resume once the run database works again"
                    ),
                )
            }
            other => Self::new(status(class), other),
        }
    }
}

/// Refuses a request without the bearer token, when the service has one.
async fn require_token(State(state): Shared, request: Request, next: Next) -> Response {
    match &state.token {
        Some(token) if !token.admits(request.headers()) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this request needs `Authorization: Bearer <token>`, with the service's token",
        )
        .into_response(),
        _ => next.run(request).await,
    }
}

/// Whether the caller may see store values: always without a token, else only with it.
fn may_see_values(state: &AppState, headers: &HeaderMap) -> bool {
    state
        .token
        .as_ref()
        .is_none_or(|token| token.admits(headers))
}

/// Runs a run-database call off the async workers (SQLite calls block).
async fn db_call<T: Send + 'static>(
    state: &AppState,
    call: impl FnOnce(&dyn RunDb) -> Result<T, RunDbError> + Send + 'static,
) -> Result<T, ApiError> {
    let db = state.db.clone();
    tokio::task::spawn_blocking(move || call(db.as_ref()))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("run database call failed: {e}"),
            )
        })?
        .map_err(ApiError::from)
}

/// Run `id`'s record, its values longer than `max_value_bytes` left out unread.
async fn get_run(
    state: &AppState,
    id: &str,
    max_value_bytes: usize,
) -> Result<RunRecord, ApiError> {
    let key = id.to_owned();
    db_call(state, move |db| db.read(&key, Some(max_value_bytes)))
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no run {id}")))
}

/// The longest value (store, argument, result, progress report; as JSON text) that
/// `GET /v1/runs/{id}` shows a token holder; longer ones are `null` and listed in the
/// document's `omitted`, with their length.
pub const MAX_SHOWN_VALUE: usize = 1024 * 1024;

/// The longest final store `GET /v1/runs/{id}/store/{name}` reads.
pub const MAX_STORE_READ: usize = 64 * 1024 * 1024;

/// `GET /v1/flows`: every flow file of the folder, with its tasks.
async fn flows(State(state): Shared) -> Result<axum::Json<Value>, ApiError> {
    let names: Vec<String> = state
        .served()
        .into_iter()
        .filter(|name| state.flow_file(name).is_some())
        .collect();
    let mut flows = Vec::new();
    for name in names {
        flows.push(describe_flow(&state, &name).await?);
    }
    Ok(axum::Json(Value::Array(flows)))
}

/// `GET /v1/schedules`: every schedule entry of the served flows, with its next tick and the
/// last tick that started a run (and that run).
async fn schedules(State(state): Shared) -> Result<axum::Json<Value>, ApiError> {
    let shared = state.clone();
    let views = tokio::task::spawn_blocking(move || super::schedules::views(&shared))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading the schedules failed: {e}"),
            )
        })??;
    Ok(axum::Json(json!(views)))
}

/// `GET /v1/flows/{name}`: one flow and its tasks.
async fn flow(
    State(state): Shared,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    describe_flow(&state, &name).await.map(axum::Json)
}

/// A flow as the API shows it: `{name, flow, file, store, tasks: [{name, plugin,
/// description, requires, optional, provides, depends_on}]}`, where `requires` and
/// `optional` are the store names read (after `rebind`; injected arguments are left out),
/// `provides` the names stored and `depends_on` the entries a run waits for before this one
/// (by the flow's pattern, as `flowhost check` shows them). A flow whose file does not parse
/// has `error` instead of `tasks`; a task whose plugin cannot be loaded has `error` instead
/// of its names, and then no task has `depends_on`.
async fn describe_flow(state: &AppState, name: &str) -> Result<Value, ApiError> {
    let path = state
        .flow_file(name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no flow `{name}`")))?;
    let spec = match FlowSpec::from_file(&path) {
        Ok(spec) => spec,
        Err(error) => return Ok(json!({ "name": name, "file": path, "error": error.to_string() })),
    };
    let mut tasks = Vec::new();
    for (path, task) in spec.task_paths() {
        let mut entry = json!({ "name": path, "plugin": task.plugin, "after": task.after });
        // A wait entry calls nothing: it reads nothing and stores a signal's data.
        let Some(plugin) = task.plugin.as_deref().filter(|_| task.wait.is_none()) else {
            entry["wait"] = json!(task.wait);
            entry["requires"] = json!([]);
            entry["optional"] = json!([]);
            entry["provides"] = json!(task.provides.clone().unwrap_or_default());
            tasks.push(entry);
            continue;
        };
        match state.engine.plugin(&spec.resolve(plugin)).await {
            Ok(plugin) => {
                let info = plugin.info();
                let from_store = |args: &[String]| -> Vec<String> {
                    args.iter()
                        .filter(|arg| !task.inject.contains_key(*arg))
                        .map(|arg| task.rebind.get(arg).cloned().unwrap_or_else(|| arg.clone()))
                        .collect()
                };
                entry["description"] = json!(info.description);
                entry["requires"] = json!(from_store(&info.requires));
                entry["optional"] = json!(from_store(&info.optional));
                entry["provides"] = json!(
                    task.provides
                        .clone()
                        .unwrap_or_else(|| info.provides.clone())
                );
            }
            Err(error) => entry["error"] = json!(error.to_string()),
        }
        tasks.push(entry);
    }
    add_dependencies(state, &spec, &mut tasks).await;
    Ok(
        json!({ "name": name, "flow": spec.name, "file": path, "store": spec.store.keys().collect::<Vec<_>>(), "tasks": tasks }),
    )
}

/// Sets each task's `depends_on` as the engine computes it when the flow loads. A run's
/// request may give store names the file does not: every name a task reads and none provides
/// is taken as given, so that the edges are those of any run that starts. Without every
/// plugin, or when the flow does not validate, the tasks keep no `depends_on`.
async fn add_dependencies(state: &AppState, spec: &FlowSpec, tasks: &mut [Value]) {
    if tasks.iter().any(|t| t.get("error").is_some()) {
        return;
    }
    let names = |key: &str| -> Vec<String> {
        tasks
            .iter()
            .flat_map(|t| t[key].as_array().cloned().unwrap_or_default())
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect()
    };
    let provided = names("provides");
    let mut store = Store::new();
    for name in names("requires").into_iter().chain(names("optional")) {
        if !provided.contains(&name) && !spec.store.contains_key(&name) {
            store.insert(name, Value::Null);
        }
    }
    let Ok(loaded) = state.engine.load(spec, store).await else {
        return;
    };
    for (task, plan) in tasks.iter_mut().zip(loaded.plan()) {
        if task["name"] == plan.name {
            task["depends_on"] = json!(plan.depends_on);
        }
    }
}

/// `POST /v1/flows/{name}/runs[?priority=N]`: body = the initial store (a JSON object; empty
/// = `{}`). `priority` (an integer, default 0) orders a run queued for workers: higher first,
/// then submission order. It is a query parameter because every key of the body is a store
/// name.
/// With an `Idempotency-Key` header a run of the flow already holds, nothing starts: 200 with
/// that run's id and Location, instead of 201. A W3C
/// `traceparent` header makes the run's trace a child of the caller's span; a malformed one
/// is ignored, as trace-context says.
async fn start(
    State(state): Shared,
    Path(name): Path<String>,
    Query(query): Query<StartQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = match headers.get(IDEMPOTENCY_KEY) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .filter(|key| !key.is_empty() && key.len() <= MAX_KEY_BYTES)
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "the Idempotency-Key header must be 1 to {MAX_KEY_BYTES} visible ASCII characters"
                        ),
                    )
                })?
                .to_owned(),
        ),
    };
    let path = state
        .flow_file(&name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no flow `{name}`")))?;
    let store = if body.iter().all(u8::is_ascii_whitespace) {
        Store::new()
    } else {
        let value: Value = serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the body is not JSON: {e}"),
            )
        })?;
        // Checked on the text: parsing is where an integer beyond 64 bits is rounded.
        if let Some(inexact) = std::str::from_utf8(&body)
            .ok()
            .and_then(flowhost_core::store::inexact_integer)
        {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the body: {inexact}"),
            ));
        }
        let Value::Object(map) = value else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "the body must be a JSON object: the run's initial store",
            ));
        };
        let mut store = Store::new();
        store.extend(map.into_iter().collect());
        store
    };
    let traceparent = headers
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .filter(|value| flowhost_executor::is_traceparent(value));
    let started = state
        .starter
        .start(
            &path,
            store,
            key.as_deref(),
            traceparent,
            query.priority.unwrap_or(0),
        )
        .await?;
    let location = format!("/v1/runs/{}", started.run_id);
    let (status, body) = if started.existing {
        (
            StatusCode::OK,
            json!({ "run_id": started.run_id, "already_started": true }),
        )
    } else {
        (StatusCode::CREATED, json!({ "run_id": started.run_id }))
    };
    let mut response = (status, axum::Json(body)).into_response();
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// The query of a start: the run's priority among queued runs.
#[derive(Deserialize)]
struct StartQuery {
    priority: Option<i32>,
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
    flow: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/runs?state=&flow=&limit=`: runs, newest first (at most `limit`, default 100,
/// at most 10,000); `flow` matches a flow's name or the name it is served under. The
/// database stops reading at the limit.
async fn list(
    State(state): Shared,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let run_state = match query.state.as_deref().filter(|s| !s.is_empty()) {
        Some(text) => Some(serde_json::from_value::<FlowState>(json!(text.to_ascii_uppercase())).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("unknown state `{text}`; one of PENDING, RUNNING, SUCCESS, REVERTING, REVERTED, FAILURE"),
            )
        })?),
        None => None,
    };
    // `flow` is a flow's name, or the name it is served under (its file's stem).
    let flows: Option<Vec<String>> = query.flow.filter(|f| !f.is_empty()).map(|flow| {
        let served = state
            .flow_file(&flow)
            .and_then(|path| FlowSpec::from_file(path).ok())
            .map(|spec| spec.name)
            .filter(|name| *name != flow);
        std::iter::once(flow).chain(served).collect()
    });
    let filter = RunFilter {
        state: run_state,
        flows: flows.unwrap_or_default(),
        limit: Some(query.limit.unwrap_or(100).min(10_000)),
    };
    let runs = db_call(&state, move |db| db.list(&filter)).await?;
    Ok(axum::Json(json!(runs)))
}

/// `GET /v1/runs/{id}`: the `flowhost runs show --json` document, values longer than
/// [`MAX_SHOWN_VALUE`] left out (`omitted`). Without the token (when the service has one),
/// everything a plugin produced or was given — the initial and final store, each task's
/// arguments, result, outcome, revert result and last progress report, and every error's
/// details — is `null` or absent and `redacted` is true; none of it is even read.
async fn show(
    State(state): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<axum::Json<Value>, ApiError> {
    let sees = may_see_values(&state, &headers);
    let record = get_run(&state, &id, if sees { MAX_SHOWN_VALUE } else { 0 }).await?;
    let mut document = record
        .document()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    if record.omitted.iter().any(|o| o.value == "initial_store") {
        // Left out, not empty.
        document["initial_store"] = Value::Null;
    }
    let links = db_call(&state, move |db| db.restart_links(&id)).await?;
    if let (Some(document), Value::Object(links)) = (
        document.as_object_mut(),
        serde_json::to_value(links).unwrap_or_default(),
    ) {
        document.extend(links);
    }
    if !sees {
        redact(&mut document);
    }
    Ok(axum::Json(document))
}

/// Takes out of a run document what a caller without the token may not see.
fn redact(document: &mut Value) {
    for store in ["initial_store", "final_store"] {
        if let Some(value) = document.get_mut(store) {
            *value = Value::Null;
        }
    }
    if let Some(map) = document.as_object_mut() {
        map.remove("omitted");
    }
    if let Some(Value::Array(tasks)) = document.get_mut("tasks") {
        for task in tasks {
            for field in ["args", "result", "outcome", "revert_result", "progress"] {
                if let Some(value) = task.get_mut(field) {
                    *value = Value::Null;
                }
            }
            for error in ["error", "revert_error"] {
                strip_details(task.get_mut(error));
            }
            for list in ["history", "attempts"] {
                if let Some(Value::Array(entries)) = task.get_mut(list) {
                    for entry in entries {
                        strip_details(entry.get_mut("error"));
                    }
                }
            }
        }
    }
    document["redacted"] = json!(true);
}

/// An error keeps its code and message; its details are the plugin's.
fn strip_details(error: Option<&mut Value>) {
    if let Some(error) = error.and_then(Value::as_object_mut) {
        error.remove("details");
    }
}

/// `GET /v1/runs/{id}/store/{name}`: one value of the run's final store.
async fn store_value(
    State(state): Shared,
    Path((id, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<axum::Json<Value>, ApiError> {
    if !may_see_values(&state, &headers) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "store values are shown only with `Authorization: Bearer <token>`",
        ));
    }
    let record = get_run(&state, &id, MAX_STORE_READ).await?;
    if let Some(omitted) = record.omitted.iter().find(|o| o.value == "final_store") {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "run {id}'s final store is {} bytes, more than this service reads ({MAX_STORE_READ}); `flowhost runs show {id} --json` reads it",
                omitted.bytes
            ),
        ));
    }
    let Some(store) = &record.final_store else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "run {id} has no final store: it is {}",
                record.summary.state
            ),
        ));
    };
    store.fetch(&name).cloned().map(axum::Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("run {id}'s final store has no `{name}`"),
        )
    })
}

/// `POST /v1/runs/{id}/resume`: continue an interrupted run.
async fn resume(State(state): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    let started = state.starter.resume(&id).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "run_id": started.run_id })),
    )
        .into_response())
}

/// `POST /v1/runs/{id}/signals/{name}`: send a signal (the body is its data, JSON; an empty
/// body is `null`), kept until a wait of the run takes it. A WAITING run goes on: resumed
/// here, or claimed by a worker.
async fn signal(
    State(state): Shared,
    Path((id, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !flowhost_core::flow::signal_name_ok(&name) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "signal name `{}` is not allowed: it starts with a letter or digit and holds only ASCII letters, digits, `_`, `-` and `.` (at most 128)",
                name.escape_debug()
            ),
        ));
    }
    let data: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the body is not JSON: {e}"),
            )
        })?
    };
    let (run, signal) = (id.clone(), name.clone());
    let found = db_call(&state, move |db| db.signal(&run, &signal, &data)).await?;
    let Some(run_state) = found else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no run {id}")));
    };
    if run_state.is_finished() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("run {id} already finished ({run_state}); the signal was not kept"),
        ));
    }
    // A run still executing takes the signal itself (it looks again before it parks).
    let resumed = if run_state == FlowState::Waiting {
        match state.starter.signalled(&id).await {
            Ok(_) => true,
            Err(error) => {
                tracing::info!(run = %id, "signal `{name}` kept; the run is not resumed now: {error}");
                false
            }
        }
    } else {
        false
    };
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "run_id": id, "signal": name, "state": run_state, "resumed": resumed })),
    )
        .into_response())
}

/// `POST /v1/runs/{id}/cancel`: stop before the next task and revert what ran.
async fn cancel(State(state): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    if state.starter.cancel(&id) {
        return Ok((
            StatusCode::ACCEPTED,
            axum::Json(json!({ "run_id": id, "cancelling": true })),
        )
            .into_response());
    }
    let record = get_run(&state, &id, 0).await?;
    let state = record.summary.state;
    let why = if state.is_finished() {
        format!("run {id} already finished ({state})")
    } else {
        format!(
            "run {id} ({state}) is not executing in this service; resume it here first to cancel it"
        )
    };
    Err(ApiError::new(StatusCode::CONFLICT, why))
}

/// `POST /v1/runs/{id}/suspend`: the run's tasks in flight finish, nothing new starts, and
/// it goes SUSPENDING -> SUSPENDED. Asked through the run database, so that whichever
/// executor holds the run (this service, a worker on another host) suspends it.
async fn suspend(State(state): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    let key = id.clone();
    if db_call(&state, move |db| db.request_suspend(&key)).await? {
        state.starter.suspend(&id);
        return Ok((
            StatusCode::ACCEPTED,
            axum::Json(json!({ "run_id": id, "suspending": true })),
        )
            .into_response());
    }
    let record = get_run(&state, &id, 0).await?;
    Err(ApiError::new(
        StatusCode::CONFLICT,
        format!(
            "run {id} is {}: only a PENDING or RUNNING run can be suspended",
            record.summary.state
        ),
    ))
}

/// `POST /v1/runs/{id}/revert`: revert a SUSPENDED run instead of resuming it.
async fn revert(State(state): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    let started = state.starter.revert(&id).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "run_id": started.run_id, "reverting": true })),
    )
        .into_response())
}

/// The body of `POST /v1/runs/{id}/restart`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestartFrom {
    /// The task to run from.
    from: String,
}

/// `POST /v1/runs/{id}/restart` with `{"from": "TASK"}`: a new run of a SUCCESS or
/// SUSPENDED run, the original's SUCCESS tasks before TASK copied, the rest run.
async fn restart(
    State(state): Shared,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let RestartFrom { from } = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the body must be {{\"from\": \"TASK\"}}: {e}"),
        )
    })?;
    let started = state.starter.restart(&id, &from).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "run_id": started.run_id, "restarted_from": id })),
    )
        .into_response())
}

/// `GET /v1/openapi.json`.
async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
}

/// `GET /metrics`.
async fn metrics(State(state): Shared) -> Result<Response, ApiError> {
    let (metrics, starter) = (state.metrics.clone(), state.starter.clone());
    let text = db_call(&state, move |db| metrics.render(db, starter.queue_depth()?)).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// One open event stream, counted until dropped.
struct StreamPermit(Arc<AtomicUsize>);

impl StreamPermit {
    /// A permit, unless `max` streams are open.
    fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        open.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| Self(open.clone()))
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `GET /v1/runs/{id}/events`: Server-Sent Events, `event: flow` / `event: task` per
/// transition (`id:` numbers them from 0), then one `event: end` with the run's final
/// state. A client connecting late first receives what already happened; one reconnecting
/// with `Last-Event-ID: N` receives the events after the `N`th. A run executing here is
/// followed as it happens; any other (another process's, a worker's, a queued one, a
/// finished one) through one shared reader of its record, until it ends. At most
/// `--max-event-streams` are open at once: beyond, 503.
async fn run_events(
    State(state): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // A client reconnecting (as `EventSource` does) says which event it saw last.
    let skip = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(0, |last| last.saturating_add(1));
    let Some(permit) = StreamPermit::take(&state.streams, state.max_streams) else {
        let mut response = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} event streams are open, as many as this service allows; try again later",
                state.max_streams
            ),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return Ok(response);
    };
    let log = match state.live.get(&id) {
        Some(log) => log,
        None => {
            if !state.watchers.following(&id) {
                get_run(&state, &id, 0).await?;
            }
            state.watchers.follow(&state, &id)
        }
    };
    let stream = event_stream(state, id, log, skip, permit);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn event_stream(
    state: Arc<AppState>,
    run_id: String,
    log: Arc<RunLog>,
    skip: usize,
    permit: StreamPermit,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let shutdown = state.shutdown.clone();
    let changes = log.subscribe();
    futures_util::stream::unfold(
        (Some(log), changes, run_id, 0usize, shutdown, permit),
        move |(mut log, mut changes, run_id, mut seq, mut shutdown, permit)| async move {
            loop {
                if *shutdown.borrow() {
                    return None;
                }
                let current = log.as_ref()?;
                changes.borrow_and_update();
                match current.at(seq) {
                    LogNext::Event(event) => {
                        let kind = event["kind"].as_str().unwrap_or("task").to_owned();
                        seq += 1;
                        if seq <= skip {
                            // The client had it before it reconnected (`Last-Event-ID`).
                            continue;
                        }
                        let sse = SseEvent::default()
                            .event(kind)
                            .id((seq - 1).to_string())
                            .data(event.to_string());
                        return Some((Ok(sse), (log, changes, run_id, seq, shutdown, permit)));
                    }
                    LogNext::Ended(final_state, why) => {
                        let mut data = json!({ "run_id": run_id, "state": final_state });
                        if let Some(why) = why {
                            data["error"] = json!(why);
                        }
                        log = None;
                        let end = SseEvent::default().event("end").data(data.to_string());
                        return Some((Ok(end), (log, changes, run_id, seq, shutdown, permit)));
                    }
                    LogNext::Wait => {
                        tokio::select! {
                            _ = changes.changed() => {}
                            _ = shutdown.changed() => {}
                        }
                    }
                }
            }
        },
    )
}
