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
"""

import json
import sys
import traceback

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.task import Outcome_Result
from wit_world.exports.task import TaskError as _WitTaskError
from wit_world.exports.task import TaskInfo as _WitTaskInfo
from wit_world.imports import host as _host

__all__ = ["TaskError", "define_task", "invocation", "log", "progress"]


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
