"""The plain data the service answers with: flows, a run's tasks, stream events.

Each object keeps the JSON it was made from in ``raw``, so fields added by a newer server
stay reachable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

__all__ = ["FlowTask", "Flow", "TaskError", "Task", "Event", "FINISHED_STATES"]

#: The states a run ends in.
FINISHED_STATES = frozenset({"SUCCESS", "REVERTED", "FAILURE"})


def _strings(value: Any) -> List[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


@dataclass(frozen=True)
class FlowTask:
    """One task entry of a served flow (``GET /v1/flows/{name}``).

    Attributes:
        name: The entry's name (``outer/inner`` inside subflows).
        plugin: The plugin's path, as the flow file gives it.
        after: The entries it runs after (graph flows).
        description: What the plugin says it does.
        requires: The store names it reads (after ``rebind``; injected ones left out).
        optional: The store names it reads when present.
        provides: The store names its result is stored under.
        error: Why its plugin could not be loaded, when it could not (then the names are
            empty).
    """

    name: str
    plugin: str
    after: List[str] = field(default_factory=list)
    description: Optional[str] = None
    requires: List[str] = field(default_factory=list)
    optional: List[str] = field(default_factory=list)
    provides: List[str] = field(default_factory=list)
    error: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, value: Dict[str, Any]) -> "FlowTask":
        """A task entry from the server's JSON."""
        return cls(
            name=str(value.get("name", "")),
            plugin=str(value.get("plugin", "")),
            after=_strings(value.get("after")),
            description=value.get("description"),
            requires=_strings(value.get("requires")),
            optional=_strings(value.get("optional")),
            provides=_strings(value.get("provides")),
            error=value.get("error"),
            raw=value,
        )


@dataclass(frozen=True)
class Flow:
    """A flow the service serves (``GET /v1/flows``).

    Attributes:
        name: The name it is served under: its file's stem (``flow`` for ``flow.toml``).
        flow: The flow's own ``name`` (``volume_create_api``); it serves the flow too when
            no file has that stem and no other flow has that name.
        file: The flow file's path on the server.
        store: The names of the flow file's ``[store]``: the initial store's defaults.
        tasks: Its task entries, in flow order.
        error: Why the flow file does not parse, when it does not (then ``tasks`` is empty).
    """

    name: str
    flow: Optional[str]
    file: str
    store: List[str] = field(default_factory=list)
    tasks: List[FlowTask] = field(default_factory=list)
    error: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, value: Dict[str, Any]) -> "Flow":
        """A flow from the server's JSON."""
        return cls(
            name=str(value.get("name", "")),
            flow=value.get("flow"),
            file=str(value.get("file", "")),
            store=_strings(value.get("store")),
            tasks=[FlowTask.from_json(t) for t in value.get("tasks") or [] if isinstance(t, dict)],
            error=value.get("error"),
            raw=value,
        )


@dataclass(frozen=True)
class TaskError:
    """A task's error, as the contract's ``task-error`` carries it.

    Attributes:
        code: Machine-readable, kebab-case (``zone-unavailable``, ``cancelled``).
        message: For a person.
        details: Structured context (JSON), or ``None``.
    """

    code: str
    message: str
    details: Any = None

    @classmethod
    def from_json(cls, value: Any) -> Optional["TaskError"]:
        """The error of a task record, or ``None`` for ``null``."""
        if not isinstance(value, dict):
            return None
        return cls(
            code=str(value.get("code", "")),
            message=str(value.get("message", "")),
            details=value.get("details"),
        )

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass(frozen=True)
class Task:
    """One task of a run, as its record in ``GET /v1/runs/{id}`` shows it.

    Attributes:
        name: The entry's name.
        index: Its position in the flow, from 0.
        state: Its last recorded state (``PENDING``, ``RUNNING``, ``SUCCESS``, ``FAILURE``,
            ``REVERTING``, ``REVERTED``, ``REVERT_FAILURE``, ``RETRYING``, ``IGNORE``...).
        error: Why execute failed, if it did.
        revert_error: Why revert failed, if it did.
        result: Its result once it succeeded; ``None`` too when the server redacted it
            (a service with a token, asked without it).
        duration_ms: How long execute took.
        revert_duration_ms: How long revert took.
        executions: How many times execute started.
        reverts: How many times revert started.
        attempt: The attempt last started, from 1.
        history: Every state change, oldest first (``{from, to, at, duration_ms, ...}``).
        attempts: Every execution (``{attempt, started_at, state, duration_ms, error, ...}``).
    """

    name: str
    index: int
    state: str
    error: Optional[TaskError] = None
    revert_error: Optional[TaskError] = None
    result: Any = None
    duration_ms: Optional[float] = None
    revert_duration_ms: Optional[float] = None
    executions: int = 0
    reverts: int = 0
    attempt: int = 0
    history: List[Dict[str, Any]] = field(default_factory=list, repr=False)
    attempts: List[Dict[str, Any]] = field(default_factory=list, repr=False)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, value: Dict[str, Any]) -> "Task":
        """A task from its record."""
        return cls(
            name=str(value.get("name", "")),
            index=int(value.get("index", 0)),
            state=str(value.get("state", "")),
            error=TaskError.from_json(value.get("error")),
            revert_error=TaskError.from_json(value.get("revert_error")),
            result=value.get("result"),
            duration_ms=value.get("duration_ms"),
            revert_duration_ms=value.get("revert_duration_ms"),
            executions=int(value.get("executions") or 0),
            reverts=int(value.get("reverts") or 0),
            attempt=int(value.get("attempt") or 0),
            history=list(value.get("history") or []),
            attempts=list(value.get("attempts") or []),
            raw=value,
        )


@dataclass(frozen=True)
class Event:
    """One event of a run's stream (``GET /v1/runs/{id}/events``).

    ``event`` is ``"flow"`` or ``"task"`` for a transition, numbered by ``id`` from 0, and
    ``"end"`` (with ``id`` ``None``) for the last one, whose ``state`` is how the run ended.
    The stream never carries store values.

    Attributes:
        event: ``"flow"``, ``"task"`` or ``"end"``.
        id: The transition's number, from 0; ``None`` for ``end``.
        data: The event's JSON: ``{kind, task?, index?, from, to, at, duration_ms, error?}``
            for a transition, ``{run_id, state, error?}`` for ``end``.
    """

    event: str
    id: Optional[int]
    data: Dict[str, Any]

    @property
    def is_end(self) -> bool:
        """Whether this is the stream's last event."""
        return self.event == "end"

    @property
    def task(self) -> Optional[str]:
        """The task a ``task`` event is about."""
        return self.data.get("task")

    @property
    def from_state(self) -> Optional[str]:
        """The state a transition leaves."""
        return self.data.get("from")

    @property
    def to_state(self) -> Optional[str]:
        """The state a transition enters."""
        return self.data.get("to")

    @property
    def state(self) -> Optional[str]:
        """How the run ended, on ``end``."""
        return self.data.get("state")

    @property
    def error(self) -> Any:
        """The error a transition to ``FAILURE`` / ``REVERT_FAILURE`` carries."""
        return self.data.get("error")

    def __str__(self) -> str:
        if self.event == "end":
            return f"end {self.state}"
        who = f"task `{self.task}`" if self.event == "task" else "flow"
        return f"#{self.id} {who} {self.from_state} -> {self.to_state}"
