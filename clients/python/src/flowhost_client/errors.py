"""The errors the client raises.

Every error derives from :class:`FlowhostError`. An answer of the server with an error status
is an :class:`ApiError`, of a subclass chosen by the status (:class:`Unauthorized` for 401,
:class:`NotFound` for 404, :class:`Conflict` for 409, :class:`PayloadTooLarge` for 413,
:class:`ValidationFailed` for 422, ...), carrying the server's message and, for a 422, its
list of problems. A run that ended reverted is a :class:`TaskFailed`, naming the task that
failed and its error code, the way Cinder branches on exception types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, Type

__all__ = [
    "FlowhostError",
    "ConnectionFailed",
    "ApiError",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "PayloadTooLarge",
    "ValidationFailed",
    "ServiceUnavailable",
    "Problem",
    "TaskFailed",
    "WaitTimeout",
]


class FlowhostError(Exception):
    """The base of every error this client raises."""


class ConnectionFailed(FlowhostError):
    """The service could not be reached, or the connection broke before an answer came.

    The underlying :class:`OSError` or :class:`http.client.HTTPException` is the
    ``__cause__``.
    """


@dataclass(frozen=True)
class Problem:
    """One reason a flow does not validate, as ``flowhost check --json`` reports it.

    Attributes:
        task: The task entry at fault, or ``None`` when the problem is the flow's.
        field: The entry's flow-file field at fault (``plugin``, ``rebind``, ``provides``,
            ``limits.memory_mib``, ...), or ``None``.
        message: What is wrong, for a person.
    """

    task: Optional[str]
    field: Optional[str]
    message: str

    @classmethod
    def from_json(cls, value: Any) -> "Problem":
        """A problem from one entry of the server's ``problems`` list."""
        if not isinstance(value, dict):
            return cls(task=None, field=None, message=str(value))
        return cls(
            task=value.get("task"),
            field=value.get("field"),
            message=str(value.get("message", "")),
        )

    def __str__(self) -> str:
        where = ".".join(part for part in (self.task, self.field) if part)
        return f"{where}: {self.message}" if where else self.message


class ApiError(FlowhostError):
    """The server answered with an error status.

    Attributes:
        status: The HTTP status code.
        message: The server's reason (its ``error`` field), or the status text when the
            answer had no body (a 413, an unknown route's 404).
        body: The decoded JSON body, the raw text when it was not JSON, or ``None``.
        problems: The server's list of problems: for a 422 the ``problems`` of the
            ``flowhost check --json`` document, empty for other statuses.
        method: The request's method.
        path: The request's path.
    """

    status: int = 0

    def __init__(
        self,
        status: int,
        message: str,
        *,
        body: Any = None,
        problems: Optional[List[Problem]] = None,
        method: str = "",
        path: str = "",
    ) -> None:
        self.status = status
        self.message = message
        self.body = body
        self.problems: List[Problem] = list(problems or [])
        self.method = method
        self.path = path
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = f"{self.method} {self.path}: " if self.method else ""
        text = f"{where}{self.status} {self.message}"
        if self.problems:
            text += "".join(f"\n  - {problem}" for problem in self.problems)
        return text

    def __reduce__(self) -> Tuple[Callable[..., Any], Tuple[Any, ...]]:  # keep the keywords
        return (
            _rebuild_api_error,
            (type(self), self.status, self.message, self.body, self.problems, self.method, self.path),
        )


def _rebuild_api_error(cls, status, message, body, problems, method, path):  # type: ignore[no-untyped-def]
    return cls(status, message, body=body, problems=problems, method=method, path=path)


class BadRequest(ApiError):
    """400: the request was malformed (a body that is not a JSON object, an unknown state)."""

    status = 400


class Unauthorized(ApiError):
    """401: the service has a token and the request did not carry it (or carried another).

    Raised by every request that changes something (start, resume, cancel) and by reading
    store values, when the client has no token or the wrong one.
    """

    status = 401


class Forbidden(ApiError):
    """403: the service refused the request's ``Host`` or ``Origin``."""

    status = 403


class NotFound(ApiError, LookupError):
    """404: no such flow or run, or no such value in a run's final store.

    :meth:`Run.fetch <flowhost_client.Run.fetch>` raises it for a name the final store does
    not hold, whether it was never stored or its task was reverted (TaskFlow's
    ``storage.fetch`` raises ``NotFound`` likewise).
    """

    status = 404


class Conflict(ApiError):
    """409: the run is not in a state that allows the request.

    Cancelling a finished run or one another process executes, resuming a finished run or one
    going on, reading the final store of a run that has not ended.
    """

    status = 409


class PayloadTooLarge(ApiError):
    """413: the request body is over the service's cap (1 MiB)."""

    status = 413


class ValidationFailed(ApiError):
    """422: the flow does not validate with this initial store; nothing ran.

    ``problems`` is the list of the ``flowhost check --json`` document, ``flow`` its flow
    name (``None`` when the flow file itself could not be read).
    """

    status = 422

    @property
    def flow(self) -> Optional[str]:
        """The flow's name, as the server's document gives it."""
        return self.body.get("flow") if isinstance(self.body, dict) else None


class ServiceUnavailable(ApiError):
    """503: the run database or the host failed, or the service is stopping; retry later."""

    status = 503


_BY_STATUS: Dict[int, Type[ApiError]] = {
    cls.status: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        PayloadTooLarge,
        ValidationFailed,
        ServiceUnavailable,
    )
}


def error_for(status: int, reason: str, body: Any, method: str, path: str) -> ApiError:
    """The typed error for an answer with status ``status`` and decoded ``body``."""
    cls = _BY_STATUS.get(status, ApiError)
    message = reason
    problems: List[Problem] = []
    if isinstance(body, dict):
        if isinstance(body.get("error"), str):
            message = body["error"]
        if isinstance(body.get("problems"), list):
            problems = [Problem.from_json(p) for p in body["problems"]]
            message = "the flow does not validate"
            if body.get("flow"):
                message = f"flow `{body['flow']}` does not validate"
    elif isinstance(body, str) and body.strip():
        message = body.strip()
    return cls(status, message, body=body, problems=problems, method=method, path=path)


class TaskFailed(FlowhostError):
    """A run ended without success because a task failed: raised by
    :meth:`Run.wait <flowhost_client.Run.wait>` and :meth:`Client.run
    <flowhost_client.Client.run>`, and given by :attr:`Run.failure
    <flowhost_client.Run.failure>`.

    Branch on ``code``, the task's machine-readable error code (``zone-unavailable``,
    ``over-quota``, the host's ``deadline-exceeded`` or ``cancelled``...).

    Attributes:
        task: The failed task's entry name (``reserve/quota/check`` inside subflows), or
            ``None`` when no task recorded an error (the run stopped for another reason).
        code: The task error's code.
        message: The task error's message.
        details: The task error's structured details (JSON), or ``None``.
        run_id: The run.
        run_state: How the run ended: ``REVERTED``, or ``FAILURE`` when a revert failed too.
    """

    def __init__(
        self,
        task: Optional[str],
        code: str,
        message: str,
        details: Any = None,
        *,
        run_id: Optional[str] = None,
        run_state: Optional[str] = None,
    ) -> None:
        self.task = task
        self.code = code
        self.message = message
        self.details = details
        self.run_id = run_id
        self.run_state = run_state
        super().__init__(self._describe())

    def _describe(self) -> str:
        run = f"run {self.run_id} {self.run_state or 'failed'}: " if self.run_id else ""
        if self.task is None:
            return f"{run}{self.message}"
        return f"{run}task `{self.task}` failed: {self.code}: {self.message}"

    def __reduce__(self) -> Tuple[Callable[..., Any], Tuple[Any, ...]]:
        return (
            _rebuild_task_failed,
            (self.task, self.code, self.message, self.details, self.run_id, self.run_state),
        )


def _rebuild_task_failed(task, code, message, details, run_id, run_state):  # type: ignore[no-untyped-def]
    return TaskFailed(task, code, message, details, run_id=run_id, run_state=run_state)


class WaitTimeout(FlowhostError, TimeoutError):
    """The run had not ended when :meth:`Run.wait <flowhost_client.Run.wait>`'s timeout
    passed. The run goes on; wait again, or cancel it.

    Attributes:
        run_id: The run.
        timeout: The timeout, in seconds.
        state: The run's state when the wait gave up.
    """

    def __init__(self, run_id: str, timeout: float, state: Optional[str]) -> None:
        self.run_id = run_id
        self.timeout = timeout
        self.state = state
        super().__init__(f"run {run_id} is still {state} after {timeout:g} s")

    def __reduce__(self) -> Tuple[Callable[..., Any], Tuple[Any, ...]]:
        return (WaitTimeout, (self.run_id, self.timeout, self.state))
