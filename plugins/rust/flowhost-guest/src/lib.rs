//! Write a flowhost task in Rust without touching JSON strings or generated bindings.
//!
//! A task is one [`Task`] impl with serde-typed arguments, config and output, plus one
//! [`export_task!`] line. The helper turns malformed arguments or config into a
//! `task-error` with code `invalid-args` / `invalid-config` instead of a trap, so every task
//! built on it honours the contract's "bad input is an error, not a crash" rule for free.
//!
//! During a call a task may also report [`progress`], write structured [`log()`] records and
//! read its [`invocation`] (run id, task name, attempt) for idempotency keys.
//!
//! ```ignore
//! use flowhost_guest::{export_task, Task, TaskError, TaskInfo, NoConfig};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Args { size: u64 }
//!
//! struct Double;
//! impl Task for Double {
//!     type Args = Args;
//!     type Config = NoConfig;
//!     type Output = u64;
//!     fn info() -> TaskInfo {
//!         TaskInfo::new("double", env!("CARGO_PKG_VERSION")).requires(["size"]).provides(["doubled"])
//!     }
//!     fn execute(args: Args, _: NoConfig) -> Result<u64, TaskError> { Ok(args.size * 2) }
//! }
//! export_task!(Double);
//! ```

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Generated bindings for the `flowhost:task` contract; reach for them only when the
/// [`Task`] trait does not fit.
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "plugin",
        pub_export_macro: true,
        default_bindings_module: "flowhost_guest::bindings",
    });
}

use bindings::exports::flowhost::task::task as wit;
use bindings::flowhost::task::host;

/// The contract version this helper speaks (`wit/task.wit`).
pub const CONTRACT: &str = "flowhost:task/task@0.2.0";

/// Accepts and ignores any config, for tasks that take none.
pub type NoConfig = serde::de::IgnoredAny;

/// What the task declares to the host; see the `task-info` record in the contract.
#[derive(Debug, Clone, Default)]
pub struct TaskInfo {
    name: String,
    version: String,
    description: String,
    requires: Vec<String>,
    optional: Vec<String>,
    provides: Vec<String>,
}

impl TaskInfo {
    /// Starts a declaration; `version` is usually `env!("CARGO_PKG_VERSION")`.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self { name: name.into(), version: version.into(), ..Self::default() }
    }

    /// One line for operators, shown by `flowhost describe`.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = text.into();
        self
    }

    /// Names that must be in the arguments; the flow is rejected before it runs otherwise.
    pub fn requires<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.requires = names.into_iter().map(Into::into).collect();
        self
    }

    /// Names passed only when the store holds them.
    pub fn optional<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.optional = names.into_iter().map(Into::into).collect();
        self
    }

    /// Names the result is stored under: one name stores the whole output, several make the
    /// output an object holding each.
    pub fn provides<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.provides = names.into_iter().map(Into::into).collect();
        self
    }
}

/// A task's failure: a stable machine-readable `code`, a sentence for the operator and
/// optional structured details.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskError {
    /// Kebab-case code, e.g. `over-quota`.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
    /// Structured context, serialised as JSON for the host.
    pub details: Option<serde_json::Value>,
}

impl TaskError {
    /// A failure with a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into(), details: None }
    }

    /// Attaches structured context (any serialisable value).
    pub fn with_details(mut self, details: impl Serialize) -> Self {
        self.details = serde_json::to_value(details).ok();
        self
    }

    fn from_wit(error: wit::TaskError) -> Self {
        let details = error.details.and_then(|d| serde_json::from_str(&d).ok());
        Self { code: error.code, message: error.message, details }
    }

    fn into_wit(self) -> wit::TaskError {
        wit::TaskError {
            code: self.code,
            message: self.message,
            details: self.details.map(|d| d.to_string()),
        }
    }
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// How this task's own `execute` ended, as handed to `revert`.
#[derive(Debug, Clone)]
pub enum Outcome<T> {
    /// `execute` returned this output.
    Success(T),
    /// `execute` failed (or the host stopped it) with this error.
    Failure(TaskError),
}

/// One failure of the flow that caused the revert.
#[derive(Debug, Clone)]
pub struct FlowFailure {
    /// The failed task entry's name in the flow.
    pub task: String,
    /// Its error.
    pub error: TaskError,
}

/// Who the current call serves: the run, the task entry and the attempt. Use it for
/// idempotency keys (`{run_id}/{task}`) so that a retried or resumed call finds its own work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The run's id.
    pub run_id: String,
    /// The task entry's name in the flow.
    pub task: String,
    /// The attempt of this task, from 1.
    pub attempt: u32,
}

/// The current call's run id, task entry name and attempt.
pub fn invocation() -> Invocation {
    let info = host::invocation();
    Invocation { run_id: info.run_id, task: info.task, attempt: info.attempt }
}

/// Reports how far the call has come: `fraction` from 0.0 to 1.0, with any serialisable
/// details. The operator sees it live and in `flowhost runs show`.
pub fn progress(fraction: f32, details: Option<impl Serialize>) {
    let details = details.and_then(|d| serde_json::to_string(&d).ok());
    host::progress(fraction, details.as_deref());
}

/// Severity of a [`log()`] record.
pub use host::Level;

/// Writes a structured log record to the operator's log, tagged with the task's name:
/// `log(Level::Info, "reserved", &[("volume", id.as_str())])`. Better than printing to
/// stderr: the level is kept and the fields stay separate.
pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    host::log(level, message, &fields);
}

/// A flowhost task. Implement it, then call [`export_task!`] once.
pub trait Task {
    /// The arguments object: the task's required and optional names.
    type Args: DeserializeOwned;
    /// The task entry's static `config` from the flow file.
    type Config: DeserializeOwned;
    /// The result; stored whole under a single provided name, or split by key for several.
    type Output: Serialize + DeserializeOwned;

    /// The declaration checked by the host before a flow runs.
    fn info() -> TaskInfo;

    /// Does the work.
    fn execute(args: Self::Args, config: Self::Config) -> Result<Self::Output, TaskError>;

    /// Undoes `execute`. The default does nothing, which is right for tasks without side
    /// effects. Must be idempotent: it may run again after a host crash.
    fn revert(
        args: Self::Args,
        config: Self::Config,
        outcome: Outcome<Self::Output>,
        failures: Vec<FlowFailure>,
    ) -> Result<(), TaskError> {
        let _ = (args, config, outcome, failures);
        Ok(())
    }

    /// Undoes `execute` and says what was undone: the value is kept in the run's report and
    /// record (TaskFlow's revert result). The default calls [`Task::revert`] and returns
    /// nothing; implement this one instead when there is something worth saying.
    fn revert_with_result(
        args: Self::Args,
        config: Self::Config,
        outcome: Outcome<Self::Output>,
        failures: Vec<FlowFailure>,
    ) -> Result<Option<serde_json::Value>, TaskError> {
        Self::revert(args, config, outcome, failures).map(|()| None)
    }
}

/// Bridges a [`Task`] to the generated bindings; used by [`export_task!`].
#[doc(hidden)]
pub struct Adapter<T>(PhantomData<T>);

fn parse<T: DeserializeOwned>(json: &str, code: &str, what: &str) -> Result<T, wit::TaskError> {
    serde_json::from_str(json)
        .map_err(|e| TaskError::new(code, format!("{what} rejected: {e}")).into_wit())
}

impl<T: Task> wit::Guest for Adapter<T> {
    fn describe() -> wit::TaskInfo {
        let info = T::info();
        wit::TaskInfo {
            name: info.name,
            version: info.version,
            description: info.description,
            requires: info.requires,
            optional: info.optional,
            provides: info.provides,
        }
    }

    fn execute(args: String, config: String) -> Result<String, wit::TaskError> {
        let args = parse(&args, "invalid-args", "arguments")?;
        let config = parse(&config, "invalid-config", "config")?;
        let output = T::execute(args, config).map_err(TaskError::into_wit)?;
        serde_json::to_string(&output).map_err(|e| {
            TaskError::new("invalid-output", format!("result could not be serialised: {e}"))
                .into_wit()
        })
    }

    fn revert(
        args: String,
        config: String,
        outcome: wit::Outcome,
        failures: Vec<wit::FlowFailure>,
    ) -> Result<Option<String>, wit::TaskError> {
        // `execute` got the same arguments and config: if they do not parse, it failed
        // right there and did nothing, so there is nothing to undo.
        let (Ok(args), Ok(config)) =
            (parse(&args, "invalid-args", "arguments"), parse(&config, "invalid-config", "config"))
        else {
            return Ok(None);
        };
        let outcome = match outcome {
            wit::Outcome::Result(json) => Outcome::Success(parse(&json, "invalid-outcome", "outcome")?),
            wit::Outcome::Error(error) => Outcome::Failure(TaskError::from_wit(error)),
        };
        let failures = failures
            .into_iter()
            .map(|f| FlowFailure { task: f.task, error: TaskError::from_wit(f.error) })
            .collect();
        let result = T::revert_with_result(args, config, outcome, failures).map_err(TaskError::into_wit)?;
        Ok(result.map(|value| value.to_string()))
    }
}

/// Exports a [`Task`] impl as the component's `flowhost:task/task` interface.
#[macro_export]
macro_rules! export_task {
    ($task:ty) => {
        type __FlowhostTaskExport = $crate::Adapter<$task>;
        $crate::bindings::export!(__FlowhostTaskExport with_types_in $crate::bindings);
    };
}

/// HTTP requests from a task, over `wasi:http/outgoing-handler`: one line per call.
///
/// ```ignore
/// use flowhost_guest::http;
///
/// let reservation: Reservation = http::post_json(
///     "http://127.0.0.1:8776/v3/quota/reserve",
///     &serde_json::json!({ "volumes": 1, "gigabytes": 10 }),
///     &[("authorization", "Bearer {{secret:volume_token}}")],
/// )?
/// .error_for_status()?
/// .json()?;
/// ```
///
/// The host sends a request only to an origin the task's flow entry grants (`net = { http =
/// [...] }`); anything else fails with code `http-denied`. A header value may name a secret of
/// the flow with `{{secret:NAME}}` (see [`secret`]): the host puts the value in when it sends
/// the request to a granted origin, so the task never holds it. Any status is a [`Response`];
/// [`Response::error_for_status`] turns 4xx and 5xx into errors. The whole body is read (the
/// host caps it per call with `limits.http_body_mib`).
///
/// Errors become [`TaskError`]s whose `details` hold `method`, `url` and, for a `wasi:http`
/// error, `wasi_error` (the `error-code` case's WIT name, e.g. `connection-refused`) and
/// `detail`:
///
/// | code | when |
/// |---|---|
/// | `http-denied` | `HTTP-request-denied`: the flow does not grant the origin |
/// | `unavailable` | the service could not be reached or did not answer in time (`connection-refused`, `connection-timeout`, `DNS-timeout`, `destination-unavailable`, `HTTP-response-timeout`, …), and, from `error_for_status`, 429, 502, 503, 504: the code retry policies name |
/// | `invalid-request` | a URL, method or header the request cannot carry |
/// | `http-status` | from `error_for_status`: any other status from 400 up (`details.status`, `details.body`) |
/// | `invalid-response` | from [`Response::json`]: a body that is not the expected JSON |
/// | `http-error` | any other `wasi:http` error (`DNS-error`, TLS, protocol, size limits, …) |
pub mod http {
    use std::time::Duration;

    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{
        ErrorCode, Fields, HeaderError, IncomingBody, Method, OutgoingBody, OutgoingRequest,
        RequestOptions, Scheme,
    };
    use wasip2::io::streams::StreamError;

    use super::TaskError;

    /// The placeholder for secret `name` of the flow (`{{secret:name}}`), for a header value:
    /// `("authorization", &format!("Bearer {}", http::secret("volume_token")))`.
    pub fn secret(name: &str) -> String {
        format!("{{{{secret:{name}}}}}")
    }

    /// `GET url`.
    pub fn get(url: &str) -> Result<Response, TaskError> {
        Request::get(url).send()
    }

    /// `GET url` with these headers.
    pub fn get_with(url: &str, headers: &[(&str, &str)]) -> Result<Response, TaskError> {
        Request::get(url).headers(headers).send()
    }

    /// `POST url` with `body` as JSON (`content-type: application/json`) and these headers.
    pub fn post_json(
        url: &str,
        body: &impl Serialize,
        headers: &[(&str, &str)],
    ) -> Result<Response, TaskError> {
        Request::post(url).headers(headers).json(body).send()
    }

    /// `PUT url` with `body` as JSON and these headers.
    pub fn put_json(
        url: &str,
        body: &impl Serialize,
        headers: &[(&str, &str)],
    ) -> Result<Response, TaskError> {
        Request::put(url).headers(headers).json(body).send()
    }

    /// `DELETE url` with these headers.
    pub fn delete(url: &str, headers: &[(&str, &str)]) -> Result<Response, TaskError> {
        Request::delete(url).headers(headers).send()
    }

    /// A response: any status, its headers (names in lowercase, in the order received) and
    /// the whole body.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Response {
        /// The HTTP status.
        pub status: u16,
        /// Every header, `(lowercase name, value)`.
        pub headers: Vec<(String, String)>,
        /// The body's bytes.
        pub body: Vec<u8>,
        method: String,
        url: String,
    }

    impl Response {
        /// The first value of header `name` (any case).
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        /// Whether the status is 2xx.
        pub fn is_success(&self) -> bool {
            (200..300).contains(&self.status)
        }

        /// The body as text (invalid UTF-8 replaced).
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }

        /// The body parsed as JSON into `T`; `invalid-response` when it is not.
        pub fn json<T: DeserializeOwned>(&self) -> Result<T, TaskError> {
            serde_json::from_slice(&self.body).map_err(|e| {
                TaskError::new(
                    "invalid-response",
                    format!("{} {} answered {} with a body that is not the expected JSON: {e}", self.method, self.url, self.status),
                )
                .with_details(self.details())
            })
        }

        /// The response itself when its status is below 400; otherwise an error:
        /// `unavailable` for 429, 502, 503 and 504, `http-status` for the rest.
        pub fn error_for_status(self) -> Result<Self, TaskError> {
            if self.status < 400 {
                return Ok(self);
            }
            let code = match self.status {
                429 | 502 | 503 | 504 => "unavailable",
                _ => "http-status",
            };
            Err(TaskError::new(
                code,
                format!("{} {} answered {}", self.method, self.url, self.status),
            )
            .with_details(self.details()))
        }

        fn details(&self) -> serde_json::Value {
            let mut body = self.text();
            if body.len() > 2048 {
                let mut end = 2048;
                while !body.is_char_boundary(end) {
                    end -= 1;
                }
                body.truncate(end);
            }
            let body = serde_json::from_str::<serde_json::Value>(&body).unwrap_or(serde_json::Value::String(body));
            serde_json::json!({ "method": self.method, "url": self.url, "status": self.status, "body": body })
        }
    }

    /// A request to build up, then [`send`](Request::send).
    #[derive(Debug, Clone)]
    pub struct Request {
        method: String,
        url: String,
        headers: Vec<(String, String)>,
        body: Option<Vec<u8>>,
        timeout: Option<Duration>,
        invalid: Option<String>,
    }

    impl Request {
        /// A request with any method (`"PATCH"`, `"OPTIONS"`, …).
        pub fn new(method: &str, url: &str) -> Self {
            Self {
                method: method.to_ascii_uppercase(),
                url: url.to_owned(),
                headers: Vec::new(),
                body: None,
                timeout: None,
                invalid: None,
            }
        }

        /// `GET url`.
        pub fn get(url: &str) -> Self {
            Self::new("GET", url)
        }

        /// `POST url`.
        pub fn post(url: &str) -> Self {
            Self::new("POST", url)
        }

        /// `PUT url`.
        pub fn put(url: &str) -> Self {
            Self::new("PUT", url)
        }

        /// `DELETE url`.
        pub fn delete(url: &str) -> Self {
            Self::new("DELETE", url)
        }

        /// Adds a header (a name may be given more than once).
        pub fn header(mut self, name: &str, value: &str) -> Self {
            self.headers.push((name.to_owned(), value.to_owned()));
            self
        }

        /// Adds these headers.
        pub fn headers(mut self, headers: &[(&str, &str)]) -> Self {
            self.headers
                .extend(headers.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())));
            self
        }

        /// `authorization: Bearer {{secret:NAME}}`: the flow's secret `name` as a bearer token,
        /// filled in by the host.
        pub fn bearer_secret(self, name: &str) -> Self {
            let value = format!("Bearer {}", secret(name));
            self.header("authorization", &value)
        }

        /// The body, as it is.
        pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
            self.body = Some(body.into());
            self
        }

        /// `value` as a JSON body, with `content-type: application/json` unless one is set.
        pub fn json(mut self, value: &impl Serialize) -> Self {
            match serde_json::to_vec(value) {
                Ok(body) => self.body = Some(body),
                Err(e) => self.invalid = Some(format!("the body could not be serialised: {e}")),
            }
            if !self.has_header("content-type") {
                self.headers.push(("content-type".into(), "application/json".into()));
            }
            self
        }

        /// Asks the host to give up connecting, and waiting for each part of the response,
        /// after `timeout` (wasi:http's request options; `unavailable` when it does). A host
        /// may ignore them (flowhost's does, for now): the call's deadline always holds.
        pub fn timeout(mut self, timeout: Duration) -> Self {
            self.timeout = Some(timeout);
            self
        }

        fn has_header(&self, name: &str) -> bool {
            self.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
        }

        fn error(&self, code: &str, message: String, wasi: Option<&ErrorCode>) -> TaskError {
            let mut details = serde_json::json!({ "method": self.method, "url": self.url });
            if let Some(wasi) = wasi {
                details["wasi_error"] = error_code_name(wasi).into();
                if let Some(detail) = error_code_detail(wasi) {
                    details["detail"] = detail.into();
                }
            }
            TaskError::new(code, message).with_details(details)
        }

        fn wasi_error(&self, wasi: &ErrorCode) -> TaskError {
            let name = error_code_name(wasi);
            let message = match wasi {
                ErrorCode::HttpRequestDenied => format!(
                    "{} {}: HTTP-request-denied: the task's flow entry does not grant this origin (`net = {{ http = [...] }}`)",
                    self.method, self.url
                ),
                _ => match error_code_detail(wasi) {
                    Some(detail) => format!("{} {} failed: {name} ({detail})", self.method, self.url),
                    None => format!("{} {} failed: {name}", self.method, self.url),
                },
            };
            self.error(error_code_task_code(wasi), message, Some(wasi))
        }

        fn invalid(&self, what: String) -> TaskError {
            self.error("invalid-request", format!("{} {}: {what}", self.method, self.url), None)
        }

        /// Sends the request and reads the whole response.
        pub fn send(self) -> Result<Response, TaskError> {
            if let Some(why) = &self.invalid {
                return Err(self.invalid(why.clone()));
            }
            let url = Url::parse(&self.url).map_err(|why| self.invalid(why))?;
            let fields = Fields::new();
            for (name, value) in &self.headers {
                fields
                    .append(name, value.as_bytes())
                    .map_err(|e| self.invalid(format!("header `{name}`: {}", header_error(e))))?;
            }
            // Sized, not chunked: some servers (Python's http.server) read only sized bodies;
            // a DELETE or POST without a body says so rather than sending an empty chunked one.
            let length = match &self.body {
                Some(body) => Some(body.len()),
                None if !matches!(self.method.as_str(), "GET" | "HEAD" | "OPTIONS" | "TRACE" | "CONNECT") => Some(0),
                None => None,
            };
            if let Some(length) = length
                && !self.has_header("content-length")
            {
                let length = length.to_string();
                fields
                    .append("content-length", length.as_bytes())
                    .map_err(|e| self.invalid(format!("header `content-length`: {}", header_error(e))))?;
            }
            let request = OutgoingRequest::new(fields);
            request
                .set_method(&method(&self.method))
                .map_err(|()| self.invalid(format!("method `{}` is not valid", self.method)))?;
            request
                .set_scheme(Some(&url.scheme))
                .map_err(|()| self.invalid("the scheme is not valid".into()))?;
            request
                .set_authority(Some(&url.authority))
                .map_err(|()| self.invalid(format!("authority `{}` is not valid", url.authority)))?;
            request
                .set_path_with_query(Some(&url.path_with_query))
                .map_err(|()| self.invalid(format!("path `{}` is not valid", url.path_with_query)))?;
            let outgoing = request
                .body()
                .map_err(|()| self.invalid("the request body could not be opened".into()))?;
            let options = self.timeout.map(|timeout| {
                let options = RequestOptions::new();
                let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
                // A host that does not support a timeout refuses it: the deadline still holds.
                let _ = options.set_connect_timeout(Some(nanos));
                let _ = options.set_first_byte_timeout(Some(nanos));
                let _ = options.set_between_bytes_timeout(Some(nanos));
                options
            });
            let future = outgoing_handler::handle(request, options).map_err(|e| self.wasi_error(&e))?;

            // Write the body, then wait for the response; a failed write is reported only if
            // the response does not say why (the host refused or dropped the request).
            let mut write_failed = None;
            if let Some(body) = &self.body {
                match outgoing.write() {
                    Ok(stream) => {
                        for chunk in body.chunks(4096) {
                            if let Err(e) = stream.blocking_write_and_flush(chunk) {
                                write_failed = Some(stream_error(e));
                                break;
                            }
                        }
                    }
                    Err(()) => write_failed = Some(None),
                }
            }
            if let Err(e) = OutgoingBody::finish(outgoing, None)
                && write_failed.is_none()
            {
                write_failed = Some(Some(e));
            }
            future.subscribe().block();
            let response = match future.get() {
                Some(Ok(Ok(response))) => response,
                Some(Ok(Err(e))) => return Err(self.wasi_error(&e)),
                Some(Err(())) | None => {
                    return Err(self.error("http-error", format!("{} {}: no response", self.method, self.url), None));
                }
            };
            if let Some(failed) = write_failed {
                return Err(match failed {
                    Some(e) => self.wasi_error(&e),
                    None => self.error("http-error", format!("{} {}: the request body could not be sent", self.method, self.url), None),
                });
            }
            let status = response.status();
            let headers = {
                let fields = response.headers();
                let entries = fields.entries();
                drop(fields);
                entries
                    .into_iter()
                    .map(|(name, value)| (name.to_ascii_lowercase(), String::from_utf8_lossy(&value).into_owned()))
                    .collect()
            };
            let incoming = response
                .consume()
                .map_err(|()| self.error("http-error", format!("{} {}: the response body could not be read", self.method, self.url), None))?;
            let mut body = Vec::new();
            {
                let stream = incoming
                    .stream()
                    .map_err(|()| self.error("http-error", format!("{} {}: the response body could not be read", self.method, self.url), None))?;
                loop {
                    match stream.blocking_read(64 * 1024) {
                        Ok(chunk) => body.extend_from_slice(&chunk),
                        Err(StreamError::Closed) => break,
                        Err(e) => {
                            return Err(match stream_error(e) {
                                Some(code) => self.wasi_error(&code),
                                None => self.error("http-error", format!("{} {}: reading the response body failed", self.method, self.url), None),
                            });
                        }
                    }
                }
            }
            let trailers = IncomingBody::finish(incoming);
            trailers.subscribe().block();
            if let Some(Ok(Err(e))) = trailers.get() {
                return Err(self.wasi_error(&e));
            }
            drop(trailers);
            drop(response);
            Ok(Response { status, headers, body, method: self.method, url: self.url })
        }
    }

    /// The `wasi:http` error behind a stream error, when there is one.
    fn stream_error(error: StreamError) -> Option<ErrorCode> {
        match error {
            StreamError::LastOperationFailed(e) => wasip2::http::types::http_error_code(&e),
            StreamError::Closed => None,
        }
    }

    fn header_error(error: HeaderError) -> &'static str {
        match error {
            HeaderError::InvalidSyntax => "invalid syntax",
            HeaderError::Forbidden => "forbidden (set by the host)",
            HeaderError::Immutable => "immutable",
        }
    }

    fn method(name: &str) -> Method {
        match name {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "CONNECT" => Method::Connect,
            "OPTIONS" => Method::Options,
            "TRACE" => Method::Trace,
            "PATCH" => Method::Patch,
            other => Method::Other(other.to_owned()),
        }
    }

    /// A URL taken apart for `wasi:http`: `scheme://authority/path?query` (a fragment is
    /// dropped, the path defaults to `/`).
    #[derive(Debug)]
    struct Url {
        scheme: Scheme,
        authority: String,
        path_with_query: String,
    }

    impl Url {
        fn parse(url: &str) -> Result<Self, String> {
            let (scheme, rest) = url
                .split_once("://")
                .ok_or_else(|| "the URL has no scheme (`http://` or `https://`)".to_owned())?;
            let scheme = match scheme.to_ascii_lowercase().as_str() {
                "http" => Scheme::Http,
                "https" => Scheme::Https,
                other => return Err(format!("scheme `{other}` is not http or https")),
            };
            let rest = rest.split('#').next().unwrap_or_default();
            let split = rest.find(['/', '?']).unwrap_or(rest.len());
            let (authority, path) = rest.split_at(split);
            if authority.is_empty() || authority.contains('@') {
                return Err("the URL names no host (or has user info)".into());
            }
            if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err("the URL holds whitespace or control characters".into());
            }
            let path_with_query = match path {
                "" => "/".to_owned(),
                p if p.starts_with('?') => format!("/{p}"),
                p => p.to_owned(),
            };
            Ok(Self { scheme, authority: authority.to_owned(), path_with_query })
        }
    }

    /// The WIT name of a `wasi:http` `error-code` case, e.g. `HTTP-request-denied`.
    pub fn error_code_name(code: &ErrorCode) -> &'static str {
        match code {
            ErrorCode::DnsTimeout => "DNS-timeout",
            ErrorCode::DnsError(_) => "DNS-error",
            ErrorCode::DestinationNotFound => "destination-not-found",
            ErrorCode::DestinationUnavailable => "destination-unavailable",
            ErrorCode::DestinationIpProhibited => "destination-IP-prohibited",
            ErrorCode::DestinationIpUnroutable => "destination-IP-unroutable",
            ErrorCode::ConnectionRefused => "connection-refused",
            ErrorCode::ConnectionTerminated => "connection-terminated",
            ErrorCode::ConnectionTimeout => "connection-timeout",
            ErrorCode::ConnectionReadTimeout => "connection-read-timeout",
            ErrorCode::ConnectionWriteTimeout => "connection-write-timeout",
            ErrorCode::ConnectionLimitReached => "connection-limit-reached",
            ErrorCode::TlsProtocolError => "TLS-protocol-error",
            ErrorCode::TlsCertificateError => "TLS-certificate-error",
            ErrorCode::TlsAlertReceived(_) => "TLS-alert-received",
            ErrorCode::HttpRequestDenied => "HTTP-request-denied",
            ErrorCode::HttpRequestLengthRequired => "HTTP-request-length-required",
            ErrorCode::HttpRequestBodySize(_) => "HTTP-request-body-size",
            ErrorCode::HttpRequestMethodInvalid => "HTTP-request-method-invalid",
            ErrorCode::HttpRequestUriInvalid => "HTTP-request-URI-invalid",
            ErrorCode::HttpRequestUriTooLong => "HTTP-request-URI-too-long",
            ErrorCode::HttpRequestHeaderSectionSize(_) => "HTTP-request-header-section-size",
            ErrorCode::HttpRequestHeaderSize(_) => "HTTP-request-header-size",
            ErrorCode::HttpRequestTrailerSectionSize(_) => "HTTP-request-trailer-section-size",
            ErrorCode::HttpRequestTrailerSize(_) => "HTTP-request-trailer-size",
            ErrorCode::HttpResponseIncomplete => "HTTP-response-incomplete",
            ErrorCode::HttpResponseHeaderSectionSize(_) => "HTTP-response-header-section-size",
            ErrorCode::HttpResponseHeaderSize(_) => "HTTP-response-header-size",
            ErrorCode::HttpResponseBodySize(_) => "HTTP-response-body-size",
            ErrorCode::HttpResponseTrailerSectionSize(_) => "HTTP-response-trailer-section-size",
            ErrorCode::HttpResponseTrailerSize(_) => "HTTP-response-trailer-size",
            ErrorCode::HttpResponseTransferCoding(_) => "HTTP-response-transfer-coding",
            ErrorCode::HttpResponseContentCoding(_) => "HTTP-response-content-coding",
            ErrorCode::HttpResponseTimeout => "HTTP-response-timeout",
            ErrorCode::HttpUpgradeFailed => "HTTP-upgrade-failed",
            ErrorCode::HttpProtocolError => "HTTP-protocol-error",
            ErrorCode::LoopDetected => "loop-detected",
            ErrorCode::ConfigurationError => "configuration-error",
            ErrorCode::InternalError(_) => "internal-error",
        }
    }

    /// What a `wasi:http` error case carries, as text, when it carries something.
    pub fn error_code_detail(code: &ErrorCode) -> Option<String> {
        match code {
            ErrorCode::DnsError(p) => match (&p.rcode, p.info_code) {
                (None, None) => None,
                (rcode, info) => Some(format!(
                    "rcode {}, info code {}",
                    rcode.as_deref().unwrap_or("-"),
                    info.map_or("-".to_owned(), |i| i.to_string())
                )),
            },
            ErrorCode::TlsAlertReceived(p) => p.alert_message.clone().or(p.alert_id.map(|id| format!("alert {id}"))),
            ErrorCode::HttpRequestBodySize(Some(n)) | ErrorCode::HttpResponseBodySize(Some(n)) => Some(format!("{n} bytes")),
            ErrorCode::HttpRequestHeaderSectionSize(Some(n))
            | ErrorCode::HttpRequestTrailerSectionSize(Some(n))
            | ErrorCode::HttpResponseHeaderSectionSize(Some(n))
            | ErrorCode::HttpResponseTrailerSectionSize(Some(n)) => Some(format!("{n} bytes")),
            ErrorCode::HttpRequestHeaderSize(Some(p))
            | ErrorCode::HttpRequestTrailerSize(p)
            | ErrorCode::HttpResponseHeaderSize(p)
            | ErrorCode::HttpResponseTrailerSize(p) => p.field_name.clone(),
            ErrorCode::HttpResponseTransferCoding(c) | ErrorCode::HttpResponseContentCoding(c) => c.clone(),
            ErrorCode::InternalError(m) => m.clone(),
            _ => None,
        }
    }

    /// The task-error code the helper gives a `wasi:http` error (see the module's table).
    pub fn error_code_task_code(code: &ErrorCode) -> &'static str {
        match code {
            ErrorCode::HttpRequestDenied => "http-denied",
            ErrorCode::DnsTimeout
            | ErrorCode::DestinationUnavailable
            | ErrorCode::ConnectionRefused
            | ErrorCode::ConnectionTerminated
            | ErrorCode::ConnectionTimeout
            | ErrorCode::ConnectionReadTimeout
            | ErrorCode::ConnectionWriteTimeout
            | ErrorCode::ConnectionLimitReached
            | ErrorCode::HttpResponseIncomplete
            | ErrorCode::HttpResponseTimeout => "unavailable",
            ErrorCode::HttpRequestMethodInvalid
            | ErrorCode::HttpRequestUriInvalid
            | ErrorCode::HttpRequestUriTooLong
            | ErrorCode::HttpRequestLengthRequired => "invalid-request",
            _ => "http-error",
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn urls_split_for_wasi_http() {
            let url = Url::parse("http://127.0.0.1:8776/v3/volumes?key=a#frag").unwrap();
            assert!(matches!(url.scheme, Scheme::Http));
            assert_eq!(url.authority, "127.0.0.1:8776");
            assert_eq!(url.path_with_query, "/v3/volumes?key=a");
            assert_eq!(Url::parse("https://example.org").unwrap().path_with_query, "/");
            assert_eq!(Url::parse("https://example.org?q").unwrap().path_with_query, "/?q");
            assert!(Url::parse("ftp://example.org/").is_err());
            assert!(Url::parse("example.org/").is_err());
            assert!(Url::parse("http:///path").is_err());
            assert!(Url::parse("http://a b/").is_err());
        }

        #[test]
        fn secret_placeholder() {
            assert_eq!(secret("volume_token"), "{{secret:volume_token}}");
        }
    }
}
