"""The flowhost task helper for Python (componentize-py), contract flowhost:task@0.2.0.

Declare the task once and write plain functions; the helper does the contract's chores:

    from flowhost_task import TaskError, define_task, log, progress

    def execute(args, config):              # args and config: parsed JSON objects (dicts)
        if args["size"] < 1:
            raise TaskError("invalid-size", "size must be at least 1", {"size": args["size"]})
        progress(0.5, {"step": "reserving"})
        log("info", "reserving", size=args["size"])
        return {"id": "vol-1", "size": args["size"]}   # any JSON-able value

    def revert(args, config, outcome, failures):   # optional; may return a JSON-able value
        return {"released": True}

    Task = define_task(name="reserve", version="1.0.0", requires=["size"], provides=["volume"],
                       execute=execute, revert=revert)

- Arguments and config that are not JSON objects, and a missing required name, fail with
  `invalid-args` / `invalid-config` before your function runs.
- `raise TaskError(code, message, details)` fails the call with that task-error.
- Any other exception fails it with code `uncaught-exception`, the message
  "ValueError: bad size (uncaught Python exception by task `T` in execute)" and details
  {exception, message, language, traceback}: never a bare trap.
- `outcome` is {"result": <value>} or {"error": {code, message, details}}; `failures` a list
  of {task, code, message, details}.
- `invocation()` gives {run_id, task, attempt}, for idempotency keys.
- `http.request(method, url, headers=, body=, json=)` calls a service (see `http`); only a
  component built for the world `plugin-http` (build.sh's `--http`) can: a task built for
  `plugin` imports no wasi:http at all.
"""

import json
import sys
import traceback
from urllib.parse import urlsplit

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.task import Outcome_Result
from wit_world.exports.task import TaskError as _WitTaskError
from wit_world.exports.task import TaskInfo as _WitTaskInfo
from wit_world.imports import host as _host

__all__ = ["Response", "TaskError", "define_task", "http", "invocation", "log", "progress"]


class TaskError(Exception):
    """A task's own failure: a kebab-case code, a sentence for the operator, any JSON-able details."""

    def __init__(self, code, message, details=None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details


def invocation():
    """The current call: {"run_id", "task", "attempt"}."""
    info = _host.invocation()
    return {"run_id": info.run_id, "task": info.task, "attempt": info.attempt}


def progress(fraction, details=None):
    """Reports how far the call has come (0.0 to 1.0), with any JSON-able details."""
    _host.progress(float(fraction), None if details is None else json.dumps(details))


_LEVELS = {
    "trace": _host.Level.TRACE,
    "debug": _host.Level.DEBUG,
    "info": _host.Level.INFO,
    "warn": _host.Level.WARN,
    "warning": _host.Level.WARN,
    "error": _host.Level.ERROR,
}


def log(level, message, **fields):
    """Writes a structured log record: log("info", "reserved", volume="vol-1")."""
    _host.log(_LEVELS[level], str(message), [(str(k), str(v)) for k, v in fields.items()])


def _wit_error(code, message, details):
    return Err(_WitTaskError(code, message, None if details is None else json.dumps(details)))


def _object(text, code, what):
    try:
        value = json.loads(text)
    except ValueError as error:
        raise TaskError(code, f"{what} is not JSON: {error}")
    if not isinstance(value, dict):
        raise TaskError(code, f"{what} must be a JSON object")
    return value


def _guarded(call, function):
    """Runs `call`, turning a TaskError into the contract's task-error and any other
    exception into an `uncaught-exception` task-error naming it."""
    try:
        return call()
    except TaskError as error:
        raise _wit_error(error.code, error.message, error.details)
    except Err:
        raise
    except Exception as error:
        name = type(error).__name__
        text = traceback.format_exc()
        print(text, file=sys.stderr, end="")
        try:
            task = _host.invocation().task
        except Exception:
            task = "?"
        raise _wit_error(
            "uncaught-exception",
            f"{name}: {error} (uncaught Python exception by task `{task}` in {function})",
            {"exception": name, "message": str(error), "language": "python", "traceback": text},
        )


def _outcome(outcome):
    if isinstance(outcome, Outcome_Result):
        try:
            return {"result": json.loads(outcome.value)}
        except ValueError:
            return {"result": outcome.value}
    error = outcome.value
    return {"error": _error_dict(error)}


def _error_dict(error):
    details = None
    if error.details is not None:
        try:
            details = json.loads(error.details)
        except ValueError:
            details = error.details
    return {"code": error.code, "message": error.message, "details": details}


def define_task(name, version, execute, revert=None, description="", requires=(), optional=(), provides=()):
    """The component's `Task` class: assign it to `Task` in the app module."""
    requires, optional, provides = list(requires), list(optional), list(provides)

    def parse(args, config):
        args = _object(args, "invalid-args", "arguments")
        missing = [n for n in requires if n not in args]
        if missing:
            raise TaskError("invalid-args", "arguments lack " + ", ".join(f"`{n}`" for n in missing))
        return args, _object(config, "invalid-config", "config")

    class Task(exports.Task):
        def describe(self):
            return _WitTaskInfo(name, version, description, requires, optional, provides)

        def execute(self, args, config):
            def run():
                parsed_args, parsed_config = parse(args, config)
                result = execute(parsed_args, parsed_config)
                try:
                    return json.dumps(result)
                except (TypeError, ValueError) as error:
                    raise TaskError("invalid-output", f"result is not JSON-able: {error}")

            return _guarded(run, "execute")

        def revert(self, args, config, outcome, failures):
            def run():
                try:
                    parsed_args, parsed_config = parse(args, config)
                except TaskError:
                    # execute got the same input and failed right there: nothing to undo.
                    return None
                if revert is None:
                    return None
                failed = [dict(task=f.task, **_error_dict(f.error)) for f in failures]
                result = revert(parsed_args, parsed_config, _outcome(outcome), failed)
                return None if result is None else json.dumps(result)

            return _guarded(run, "revert")

    return Task


# --- Calling services -----------------------------------------------------------------------


class Response:
    """An HTTP response: any status, its headers and the whole body.

    `status` (int), `headers` (dict of lowercase name -> value; a repeated header's values
    joined with ", "), `body` (bytes); `text()`, `json()` (`invalid-response` when the body is
    not JSON) and `raise_for_status()`.
    """

    def __init__(self, status, headers, body, method="GET", url=""):
        self.status = status
        self.headers = headers
        self.body = body
        self.method = method
        self.url = url

    def __repr__(self):
        return f"Response({self.status}, {len(self.body)} bytes from {self.method} {self.url})"

    def text(self):
        """The body as text (invalid UTF-8 replaced)."""
        return self.body.decode("utf-8", errors="replace")

    def json(self):
        """The body parsed as JSON; `invalid-response` when it is not."""
        try:
            return json.loads(self.body)
        except ValueError as error:
            raise TaskError(
                "invalid-response",
                f"{self.method} {self.url} answered {self.status} with a body that is not JSON: {error}",
                self._details(),
            )

    def raise_for_status(self):
        """Returns the response when its status is below 400; otherwise raises `TaskError`:
        `unavailable` for 429, 502, 503 and 504 (the code retry policies name), `http-status`
        for the rest, with {method, url, status, body} as details."""
        if self.status < 400:
            return self
        code = "unavailable" if self.status in (429, 502, 503, 504) else "http-status"
        raise TaskError(code, f"{self.method} {self.url} answered {self.status}", self._details())

    def _details(self):
        text = self.text()[:2048]
        try:
            body = json.loads(text)
        except ValueError:
            body = text
        return {"method": self.method, "url": self.url, "status": self.status, "body": body}


# The WIT names of wasi:http's `error-code` cases, by the binding's class name.
_WASI_NAMES = {
    "DnsTimeout": "DNS-timeout",
    "DnsError": "DNS-error",
    "DestinationNotFound": "destination-not-found",
    "DestinationUnavailable": "destination-unavailable",
    "DestinationIpProhibited": "destination-IP-prohibited",
    "DestinationIpUnroutable": "destination-IP-unroutable",
    "ConnectionRefused": "connection-refused",
    "ConnectionTerminated": "connection-terminated",
    "ConnectionTimeout": "connection-timeout",
    "ConnectionReadTimeout": "connection-read-timeout",
    "ConnectionWriteTimeout": "connection-write-timeout",
    "ConnectionLimitReached": "connection-limit-reached",
    "TlsProtocolError": "TLS-protocol-error",
    "TlsCertificateError": "TLS-certificate-error",
    "TlsAlertReceived": "TLS-alert-received",
    "HttpRequestDenied": "HTTP-request-denied",
    "HttpRequestLengthRequired": "HTTP-request-length-required",
    "HttpRequestBodySize": "HTTP-request-body-size",
    "HttpRequestMethodInvalid": "HTTP-request-method-invalid",
    "HttpRequestUriInvalid": "HTTP-request-URI-invalid",
    "HttpRequestUriTooLong": "HTTP-request-URI-too-long",
    "HttpRequestHeaderSectionSize": "HTTP-request-header-section-size",
    "HttpRequestHeaderSize": "HTTP-request-header-size",
    "HttpRequestTrailerSectionSize": "HTTP-request-trailer-section-size",
    "HttpRequestTrailerSize": "HTTP-request-trailer-size",
    "HttpResponseIncomplete": "HTTP-response-incomplete",
    "HttpResponseHeaderSectionSize": "HTTP-response-header-section-size",
    "HttpResponseHeaderSize": "HTTP-response-header-size",
    "HttpResponseBodySize": "HTTP-response-body-size",
    "HttpResponseTrailerSectionSize": "HTTP-response-trailer-section-size",
    "HttpResponseTrailerSize": "HTTP-response-trailer-size",
    "HttpResponseTransferCoding": "HTTP-response-transfer-coding",
    "HttpResponseContentCoding": "HTTP-response-content-coding",
    "HttpResponseTimeout": "HTTP-response-timeout",
    "HttpUpgradeFailed": "HTTP-upgrade-failed",
    "HttpProtocolError": "HTTP-protocol-error",
    "LoopDetected": "loop-detected",
    "ConfigurationError": "configuration-error",
    "InternalError": "internal-error",
}

# wasi:http errors that mean "the service could not be reached or did not answer in time".
_UNAVAILABLE = {
    "DNS-timeout", "destination-unavailable", "connection-refused", "connection-terminated",
    "connection-timeout", "connection-read-timeout", "connection-write-timeout",
    "connection-limit-reached", "HTTP-response-incomplete", "HTTP-response-timeout",
}
_INVALID = {
    "HTTP-request-method-invalid", "HTTP-request-URI-invalid", "HTTP-request-URI-too-long",
    "HTTP-request-length-required",
}
_BODYLESS = {"GET", "HEAD", "OPTIONS", "TRACE", "CONNECT"}
_dumps = json.dumps


# The wasi:http bindings exist only in a component built for `plugin-http`. They are imported
# here, while componentize-py builds the component: the bindings' files are on the path then,
# and the modules imported are kept in the component; an import first tried at run time
# finds only the files componentize-py bundled, which are not these.
try:
    from wit_world.imports import outgoing_handler as _outgoing_handler
    from wit_world.imports import streams as _streams
    from wit_world.imports import types as _types
except ImportError:
    _outgoing_handler = _streams = _types = None


def _wasi_bindings():
    """The wasi:http bindings, or a RuntimeError saying how to get them."""
    if _outgoing_handler is None:
        raise RuntimeError(
            "flowhost_task.http needs wasi:http: build the component for the world "
            "`plugin-http` (build.sh --http), and grant the origins in the flow entry "
            "(`net = { http = [...] }`)"
        )
    return _outgoing_handler, _streams, _types


class _Http:
    """One-line HTTP calls through wasi:http, to the origins the flow entry grants
    (`net = { http = ["https://api.example.org/v3/"] }`):

        from flowhost_task import http

        volume = http.post(url, json={"size": 10},
                           headers={"authorization": "Bearer " + http.secret("api_token")}
                           ).raise_for_status().json()
        page = http.request("GET", "https://status.example.org/", headers={"accept": "text/html"})

    A request that gets no answer raises `TaskError` with details {method, url, wasi_error}
    (the `error-code` case's WIT name): `http-denied` (the flow does not grant the origin:
    HTTP-request-denied), `unavailable` (refused, timed out, unreachable), `invalid-request`
    (a URL, method or header the request cannot carry), `http-error` (the rest). Secrets are
    named, never read: `http.secret("api_token")` is the placeholder `{{secret:api_token}}`,
    which the host fills in on the way to a granted origin.
    """

    @staticmethod
    def secret(name):
        """The placeholder of the flow's secret `name`, for a header value."""
        return "{{secret:" + name + "}}"

    def get(self, url, headers=None):
        """`GET url`."""
        return self.request("GET", url, headers=headers)

    def post(self, url, headers=None, body=None, json=None):
        """`POST url` with a body (bytes or str) or a JSON value."""
        return self.request("POST", url, headers=headers, body=body, json=json)

    def put(self, url, headers=None, body=None, json=None):
        """`PUT url` with a body (bytes or str) or a JSON value."""
        return self.request("PUT", url, headers=headers, body=body, json=json)

    def delete(self, url, headers=None):
        """`DELETE url`."""
        return self.request("DELETE", url, headers=headers)

    def request(self, method, url, headers=None, body=None, json=None):
        """Sends `method url` with `headers` (a dict or (name, value) pairs) and `body`
        (bytes or str) or `json` (any JSON-able value, sent with `content-type:
        application/json` unless a header says otherwise); reads the whole response.
        Returns a `Response` whatever its status."""
        method = str(method).upper()
        url = str(url)
        pairs = list(headers.items() if isinstance(headers, dict) else headers or [])
        pairs = [(str(name), str(value)) for name, value in pairs]
        named = {name.lower() for name, _ in pairs}

        def failure(code, message, wasi=None):
            details = {"method": method, "url": url}
            if wasi is not None:
                details["wasi_error"] = wasi
            return TaskError(code, message, details)

        if json is not None:
            if body is not None:
                raise failure("invalid-request", f"{method} {url}: give `body` or `json`, not both")
            body = _dumps(json).encode()
            if "content-type" not in named:
                pairs.append(("content-type", "application/json"))
        elif isinstance(body, str):
            body = body.encode()
        # Sized, not chunked: some servers (Python's http.server) read only sized bodies; a
        # DELETE or POST without a body says so rather than sending an empty chunked one.
        length = len(body) if body is not None else (None if method in _BODYLESS else 0)
        if length is not None and "content-length" not in named:
            pairs.append(("content-length", str(length)))

        try:
            scheme, authority, path = _split_url(url)
        except ValueError as why:
            raise failure("invalid-request", f"{method} {url}: {why}")
        outgoing_handler, streams, types = _wasi_bindings()

        def wasi_failure(code):
            name = _WASI_NAMES.get(type(code).__name__.removeprefix("ErrorCode_"), "internal-error")
            if name == "HTTP-request-denied":
                message = (f"{method} {url}: HTTP-request-denied: the task's flow entry does not "
                           "grant this origin (`net = { http = [...] }`)")
                return failure("http-denied", message, name)
            detail = getattr(code, "value", None)
            detail = f" ({detail})" if isinstance(detail, (str, int)) else ""
            task_code = "unavailable" if name in _UNAVAILABLE else (
                "invalid-request" if name in _INVALID else "http-error")
            return failure(task_code, f"{method} {url} failed: {name}{detail}", name)

        def stream_failure(error, doing):
            if isinstance(error, streams.StreamError_LastOperationFailed):
                code = types.http_error_code(error.value)
                if code is not None:
                    return wasi_failure(code)
            return failure("http-error", f"{method} {url}: {doing}")

        fields = types.Fields()
        for name, value in pairs:
            try:
                fields.append(name, value.encode())
            except Err as error:
                why = {"HeaderError_Forbidden": "forbidden (set by the host)",
                       "HeaderError_Immutable": "immutable"}.get(type(error.value).__name__, "invalid syntax")
                raise failure("invalid-request", f"{method} {url}: header `{name}`: {why}")
        request = types.OutgoingRequest(fields)
        standard = {"GET": types.Method_Get, "HEAD": types.Method_Head, "POST": types.Method_Post,
                    "PUT": types.Method_Put, "DELETE": types.Method_Delete,
                    "CONNECT": types.Method_Connect, "OPTIONS": types.Method_Options,
                    "TRACE": types.Method_Trace, "PATCH": types.Method_Patch}
        try:
            request.set_method(standard[method]() if method in standard else types.Method_Other(method))
        except Err:
            raise failure("invalid-request", f"method `{method}` is not valid")
        try:
            request.set_scheme(types.Scheme_Https() if scheme == "https" else types.Scheme_Http())
            request.set_authority(authority)
            request.set_path_with_query(path)
        except Err:
            raise failure("invalid-request", f"{method} {url}: the URL cannot be sent")
        outgoing = request.body()
        try:
            future = outgoing_handler.handle(request, None)
        except Err as error:
            raise wasi_failure(error.value)

        # Write the body, then wait for the response; a failed write is reported only if the
        # response does not say why (the host refused or dropped the request).
        write_failed = None
        if body:
            try:
                with outgoing.write() as stream:
                    for start in range(0, len(body), 4096):
                        stream.blocking_write_and_flush(body[start:start + 4096])
            except Err as error:
                write_failed = stream_failure(error.value, "the request body could not be sent")
        try:
            types.OutgoingBody.finish(outgoing, None)
        except Err as error:
            write_failed = write_failed or wasi_failure(error.value)

        with future:
            with future.subscribe() as ready:
                ready.block()
            answer = future.get()
        if answer is None or isinstance(answer, Err):
            raise failure("http-error", f"{method} {url}: no response")
        if isinstance(answer.value, Err):
            raise wasi_failure(answer.value.value)
        if write_failed is not None:
            raise write_failed
        with answer.value.value as response:
            status = response.status()
            received = {}
            with response.headers() as fields:
                for name, value in fields.entries():
                    name = name.lower()
                    value = value.decode("utf-8", errors="replace")
                    received[name] = f"{received[name]}, {value}" if name in received else value
            chunks = []
            with response.consume() as incoming:
                with incoming.stream() as stream:
                    while True:
                        try:
                            chunks.append(stream.blocking_read(64 * 1024))
                        except Err as error:
                            if isinstance(error.value, streams.StreamError_Closed):
                                break
                            raise stream_failure(error.value, "reading the response body failed")
        return Response(status, received, b"".join(chunks), method, url)


def _split_url(url):
    """`scheme, authority, path_with_query` of an http(s) URL (a fragment is dropped, the
    path defaults to `/`)."""
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ValueError("the URL holds whitespace or control characters")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if "://" not in url:
        raise ValueError("the URL has no scheme (`http://` or `https://`)")
    if scheme not in ("http", "https"):
        raise ValueError(f"scheme `{scheme}` is not http or https")
    if not parts.netloc or "@" in parts.netloc:
        raise ValueError("the URL names no host (or has user info)")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return scheme, parts.netloc, path


http = _Http()
