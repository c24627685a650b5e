"""The client of a ``flowhost serve``: :class:`Client` for the service, :class:`Run` for one
run of a flow."""

from __future__ import annotations

import http.client
import json
import ssl
import time
from typing import Any, Dict, Iterator, List, Mapping, Optional
from urllib.parse import quote

from . import __version__
from ._http import Transport
from .errors import (
    ConnectionFailed,
    Conflict,
    FlowhostError,
    TaskFailed,
    Unauthorized,
    WaitTimeout,
)
from .models import FINISHED_STATES, Event, Flow, Task
from .sse import read_events

__all__ = ["Client", "Run", "DEFAULT_URL"]

#: Where ``flowhost serve`` listens by default.
DEFAULT_URL = "http://127.0.0.1:8080"


def _segment(text: str) -> str:
    """``text`` as one path segment."""
    return quote(text, safe="")


class Client:
    """A client of one ``flowhost serve``.

    Args:
        url: The service's base URL (``http://127.0.0.1:8080``); a path below the host is
            kept (a service behind a reverse proxy at ``https://host/flowhost``).
        token: The service's bearer token (the content of its ``--token-file``), needed to
            start, resume and cancel runs and to read store values when the service has one.
            ``None`` sends none.
        timeout: Seconds to wait for the service to connect and to answer one request
            (``None``: no limit). Waiting for a run is :meth:`Run.wait`'s own timeout.
        ssl_context: The TLS settings for an ``https`` URL (default: the system's).

    Example::

        fh = Client("http://127.0.0.1:8080", token=os.environ.get("FLOWHOST_TOKEN"))
        run = fh.run("volume_create", {"raw_size": 10})
        volume = run.fetch("volume")
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: Optional[str] = None,
        *,
        timeout: Optional[float] = 30.0,
        ssl_context: Optional[ssl.SSLContext] = None,
    ) -> None:
        self._http = Transport(
            url,
            token=token,
            timeout=timeout,
            user_agent=f"flowhost-client/{__version__}",
            ssl_context=ssl_context,
        )

    @property
    def url(self) -> str:
        """The service's base URL."""
        return self._http.base_url

    def __repr__(self) -> str:
        token = ", token=…" if self._http.token else ""
        return f"Client({self.url!r}{token})"

    # -- flows -------------------------------------------------------------------------

    def flows(self) -> List[Flow]:
        """Every flow the service serves (``GET /v1/flows``), sorted by name."""
        body, _ = self._http.request("GET", "/v1/flows")
        return [Flow.from_json(f) for f in body or [] if isinstance(f, dict)]

    def flow(self, name: str) -> Flow:
        """One flow (``GET /v1/flows/{name}``), by the name it is served under or its own.

        Raises:
            NotFound: The service serves no such flow.
        """
        body, _ = self._http.request("GET", f"/v1/flows/{_segment(name)}")
        return Flow.from_json(body)

    # -- runs --------------------------------------------------------------------------

    def start(
        self, flow: str, store: Optional[Mapping[str, Any]] = None, *, priority: int = 0
    ) -> Run:
        """Starts a run of ``flow`` with ``store`` as its initial store, over the flow file's
        ``[store]`` (``POST /v1/flows/{flow}/runs``), and returns it at once: the run is
        recorded, and goes on in the service. A service queueing runs for workers has them
        claim runs of higher ``priority`` first (``?priority=N``), then in submission order.

        Raises:
            NotFound: The service serves no such flow.
            ValidationFailed: The flow does not validate with this store (``problems`` says
                why); nothing ran.
            Unauthorized: The service has a token and the client not the same one.
            PayloadTooLarge: The store's JSON is over 1 MiB.
            ServiceUnavailable: The run database or the host failed.
        """
        if store is None:
            store = {}
        if not isinstance(store, Mapping):
            raise TypeError(f"the initial store must be a mapping, not {type(store).__name__}")
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise TypeError(f"the priority must be an int, not {type(priority).__name__}")
        query = f"?priority={priority}" if priority else ""
        body, _ = self._http.request(
            "POST", f"/v1/flows/{_segment(flow)}/runs{query}", json_body=dict(store)
        )
        run_id = body.get("run_id") if isinstance(body, dict) else None
        if not isinstance(run_id, str):
            raise FlowhostError(f"the service started a run without naming it: {body!r}")
        return Run(self, run_id)

    def run(
        self,
        flow: str,
        store: Optional[Mapping[str, Any]] = None,
        *,
        timeout: Optional[float] = None,
        poll_interval: float = 0.5,
    ) -> Run:
        """Starts a run of ``flow`` and waits for its end (:meth:`start`, then
        :meth:`Run.wait`), like TaskFlow's ``engine.run()``.

        Returns:
            The run, ended in SUCCESS: read its results with :meth:`Run.fetch`.

        Raises:
            TaskFailed: The run ended reverted (or failed reverting): the failed task, its
                error ``code``, ``message`` and ``details``.
            WaitTimeout: ``timeout`` seconds passed first; the run goes on.
            ...and what :meth:`start` raises.
        """
        return self.start(flow, store).wait(timeout=timeout, poll_interval=poll_interval)

    def get_run(self, run_id: str) -> Run:
        """The recorded run ``run_id`` (``GET /v1/runs/{id}``), whoever started it.

        Raises:
            NotFound: No such run.
        """
        run = Run(self, run_id)
        run.refresh()
        return run

    def runs(
        self,
        *,
        state: Optional[str] = None,
        flow: Optional[str] = None,
        limit: Optional[int] = None,
    ) -> List[Run]:
        """Recorded runs, newest first (``GET /v1/runs``).

        Args:
            state: Only runs in this state (``SUCCESS``, ``REVERTED``, ``RUNNING``...; any
                case).
            flow: Only runs of this flow: its own name, or the name it is served under.
            limit: At most this many (the service's default is 100).

        Raises:
            BadRequest: ``state`` is not a run state.
        """
        query: Dict[str, Any] = {"state": state, "flow": flow, "limit": limit}
        body, _ = self._http.request("GET", "/v1/runs", query=query)
        return [
            Run(self, str(summary["id"]), summary, full=False)
            for summary in body or []
            if isinstance(summary, dict) and "id" in summary
        ]

    def events(
        self,
        run_id: str,
        *,
        last_event_id: Optional[int] = None,
        reconnect: bool = True,
        max_reconnects: int = 10,
        retry_delay: float = 0.5,
        read_timeout: Optional[float] = 60.0,
    ) -> Iterator[Event]:
        """The events of run ``run_id``; see :meth:`Run.events`."""
        last = last_event_id
        failures = 0
        delay = retry_delay
        while True:
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
            if last is not None:
                headers["Last-Event-ID"] = str(last)
            try:
                conn, response = self._http.open(
                    "GET",
                    f"/v1/runs/{_segment(run_id)}/events",
                    headers=headers,
                    timeout=read_timeout,
                )
            except ConnectionFailed:
                if not reconnect or failures >= max_reconnects:
                    raise
                failures += 1
                time.sleep(delay)
                continue
            cause: Optional[BaseException] = None
            try:
                for raw in read_events(response.readline):
                    if raw.retry is not None:
                        delay = raw.retry / 1000.0
                    event = _event(raw.event, raw.id, raw.data)
                    if event is None:
                        continue
                    failures = 0
                    if event.id is not None:
                        last = event.id
                    yield event
                    if event.is_end:
                        return
            except (OSError, http.client.HTTPException) as error:
                cause = error
            finally:
                conn.close()
            # The stream ended without its `end`: the connection dropped (or the service
            # is stopping). Reconnect from the last event seen.
            if not reconnect or failures >= max_reconnects:
                raise ConnectionFailed(
                    f"the event stream of run {run_id} broke off after event {last}"
                ) from cause
            failures += 1
            time.sleep(delay)

    # -- the service ---------------------------------------------------------------------

    def schedules(self) -> List[Dict[str, Any]]:
        """Every schedule entry of the served flows (``GET /v1/schedules``): ``flow``,
        ``index``, ``cron``, ``catch_up``, ``next_tick``, ``last_tick`` and ``last_run``
        (times in UTC, RFC 3339)."""
        body, _ = self._http.request("GET", "/v1/schedules")
        return list(body) if isinstance(body, list) else []

    def healthy(self) -> bool:
        """Whether the service answers ``GET /healthz``."""
        try:
            self._http.request("GET", "/healthz")
        except FlowhostError:
            return False
        return True

    def openapi(self) -> Dict[str, Any]:
        """The service's OpenAPI 3 document (``GET /v1/openapi.json``)."""
        body, _ = self._http.request("GET", "/v1/openapi.json")
        if not isinstance(body, dict):
            raise FlowhostError(f"the service's OpenAPI document is not a JSON object: {body!r}")
        return body


def _event(name: str, event_id: Optional[str], data: str) -> Optional[Event]:
    """An :class:`Event` from a raw SSE event; ``None`` for data that is not JSON."""
    try:
        value = json.loads(data)
    except ValueError:
        return None
    if not isinstance(value, dict):
        value = {"value": value}
    number: Optional[int] = None
    if event_id is not None:
        try:
            number = int(event_id)
        except ValueError:
            number = None
    return Event(event=name, id=number, data=value)


class Run:
    """One run of a flow, in a service; made by :meth:`Client.start`, :meth:`Client.run`,
    :meth:`Client.get_run` and :meth:`Client.runs`.

    Its record is read from the service when asked for, and kept once the run has ended.
    """

    def __init__(
        self,
        client: Client,
        run_id: str,
        document: Optional[Dict[str, Any]] = None,
        *,
        full: bool = True,
    ) -> None:
        self._client = client
        self.id: str = run_id
        self._document: Optional[Dict[str, Any]] = document
        self._full = full and document is not None

    def __repr__(self) -> str:
        doc = self._document or {}
        state = doc.get("state", "?")
        return f"Run(id={self.id!r}, flow={doc.get('flow')!r}, state={state!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and other.id == self.id and other._client is self._client

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def client(self) -> Client:
        """The client it was made by."""
        return self._client

    def _act(self, action: str) -> Run:
        """POSTs `action` to the run; its kept record is then read again when next needed."""
        self._client._http.request("POST", self._path(action))
        self._full = False
        return self

    def _path(self, tail: str = "") -> str:
        return f"/v1/runs/{_segment(self.id)}{tail}"

    # -- the record ----------------------------------------------------------------------

    def refresh(self) -> Dict[str, Any]:
        """Reads the run's record again (``GET /v1/runs/{id}``: the ``flowhost runs show
        --json`` document) and returns it.

        Raises:
            NotFound: No such run.
        """
        body, _ = self._client._http.request("GET", self._path())
        if not isinstance(body, dict):
            raise FlowhostError(f"run {self.id}: the service answered {body!r}")
        self._document = body
        self._full = True
        return body

    def _current(self) -> Dict[str, Any]:
        """The record: the kept one once the run has ended, else read again."""
        doc = self._document
        if doc is not None and self._full and doc.get("state") in FINISHED_STATES:
            return doc
        return self.refresh()

    @property
    def document(self) -> Dict[str, Any]:
        """The run's whole record as the service gave it, read again unless it has ended."""
        return self._current()

    @property
    def flow(self) -> Optional[str]:
        """The flow's own name (``volume_create_api``)."""
        doc = self._document if self._document is not None else self._current()
        return doc.get("flow")

    @property
    def state(self) -> str:
        """The run's state: ``PENDING``, ``RUNNING``, ``SUCCESS``, ``REVERTING``,
        ``REVERTED`` or ``FAILURE`` (a revert failed too)."""
        return str(self._current().get("state"))

    @property
    def finished(self) -> bool:
        """Whether the run has ended (SUCCESS, REVERTED or FAILURE)."""
        return self.state in FINISHED_STATES

    @property
    def interrupted(self) -> bool:
        """Whether the run stopped half-way with nobody executing it (its executor crashed
        or was stopped): :meth:`resume` continues it."""
        doc = self._current()
        return doc.get("state") in ("RUNNING", "REVERTING") and not doc.get("lease")

    @property
    def exit_reason(self) -> Optional[str]:
        """Why the run ended, in a line, once it has."""
        return self._current().get("exit_reason")

    @property
    def redacted(self) -> bool:
        """Whether the service hid the store values (it has a token, the client not)."""
        return bool(self._current().get("redacted"))

    @property
    def store(self) -> Dict[str, Any]:
        """The run's final store: every name and value it ended with (a reverted task's
        values are not in it).

        Raises:
            Conflict: The run has not ended.
            Unauthorized: The service shows store values only with its token.
        """
        doc = self._current()
        self._check_values(doc)
        if doc.get("state") not in FINISHED_STATES or doc.get("final_store") is None:
            raise Conflict(
                409,
                f"run {self.id} has no final store: it is {doc.get('state')}",
                method="GET",
                path=self._path(),
            )
        return dict(doc["final_store"])

    @property
    def initial_store(self) -> Dict[str, Any]:
        """The store the run started from (the flow file's ``[store]`` and the start's).

        Raises:
            Unauthorized: The service shows store values only with its token.
        """
        doc = self._current()
        self._check_values(doc)
        return dict(doc.get("initial_store") or {})

    def _check_values(self, doc: Dict[str, Any]) -> None:
        if doc.get("redacted"):
            raise Unauthorized(
                401,
                "store values are shown only with `Authorization: Bearer <token>`",
                method="GET",
                path=self._path(),
            )

    @property
    def tasks(self) -> List[Task]:
        """The run's tasks in flow order, with their states, errors, durations and history
        (their arguments and results are ``None`` when the service redacted them)."""
        return [Task.from_json(t) for t in self._current().get("tasks") or []]

    @property
    def failure(self) -> Optional[TaskFailed]:
        """The failed task, as the :class:`TaskFailed` that :meth:`wait` raises, when the
        run ended without success (or is reverting); ``None`` otherwise."""
        return _failure(self.id, self._current())

    def fetch(self, name: str) -> Any:
        """The value of ``name`` in the run's final store
        (``GET /v1/runs/{id}/store/{name}``), like TaskFlow's ``engine.storage.fetch``.

        Raises:
            NotFound: The final store has no ``name``: no task provided it, or the task that
                stored it was reverted.
            Conflict: The run has not ended.
            Unauthorized: The service shows store values only with its token.
        """
        body, _ = self._client._http.request("GET", self._path(f"/store/{_segment(name)}"))
        return body

    # -- waiting -------------------------------------------------------------------------

    def wait(self, timeout: Optional[float] = None, *, poll_interval: float = 0.5) -> Run:
        """Waits until the run has ended.

        Args:
            timeout: Seconds to wait at most (``None``: as long as it takes).
            poll_interval: The longest pause between two looks at the run (the first looks
                come sooner).

        Returns:
            This run, ended in SUCCESS.

        Raises:
            TaskFailed: The run ended REVERTED (or FAILURE, when a revert failed too): the
                failed task and its error.
            WaitTimeout: It had not ended after ``timeout`` seconds; it goes on.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = min(0.02, poll_interval)
        while True:
            doc = self._current()
            state = doc.get("state")
            if state in FINISHED_STATES:
                break
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(self.id, float(timeout or 0), state)
                time.sleep(min(pause, left))
            else:
                time.sleep(pause)
            pause = min(pause * 2, poll_interval)
        if state != "SUCCESS":
            failure = _failure(self.id, doc)
            if failure is None:  # pragma: no cover - every unsuccessful end has a reason
                failure = TaskFailed(
                    None,
                    "",
                    doc.get("exit_reason") or f"run {self.id} ended {state}",
                    run_id=self.id,
                    run_state=state,
                )
            raise failure
        return self

    # -- changes -------------------------------------------------------------------------

    def cancel(self) -> Run:
        """Asks the run to stop at once and revert what ran
        (``POST /v1/runs/{id}/cancel``): a task executing now is stopped, fails with code
        ``cancelled`` and is reverted; with none executing, the next task fails
        ``cancelled`` without being called. Returns at once: :meth:`wait` then raises
        :class:`TaskFailed` with ``code == "cancelled"``.

        Raises:
            Conflict: The run has ended, or this service is not executing it.
            NotFound: No such run.
            Unauthorized: The service has a token and the client not the same one.
        """
        return self._act("/cancel")

    def resume(self) -> Run:
        """Continues an interrupted run (``POST /v1/runs/{id}/resume``): what succeeded is
        not executed again. Returns once it is under way.

        Raises:
            Conflict: The run has ended, is going on, changed since it was recorded, or is
                held by a live executor.
            ValidationFailed: Its flow no longer validates.
            NotFound: No such run.
            Unauthorized: The service has a token and the client not the same one.
        """
        return self._act("/resume")

    def suspend(self) -> Run:
        """Asks the run to suspend (``POST /v1/runs/{id}/suspend``), wherever it runs: its
        tasks in flight finish, nothing new starts, and it goes SUSPENDING -> SUSPENDED,
        holding no executor; nothing is reverted. :meth:`resume` goes on with it,
        :meth:`revert` reverts it. Returns at once.

        Raises:
            Conflict: The run is neither PENDING nor RUNNING.
            NotFound: No such run.
            Unauthorized: The service has a token and the client not the same one.
        """
        return self._act("/suspend")

    def revert(self) -> Run:
        """Reverts a SUSPENDED run instead of resuming it (``POST /v1/runs/{id}/revert``):
        every task that did something is reverted, newest first, as a failure would have.
        Returns once it is under way; :meth:`wait` then raises :class:`TaskFailed`.

        Raises:
            Conflict: The run is not SUSPENDED, is held by another executor, or changed.
            NotFound: No such run.
            Unauthorized: The service has a token and the client not the same one.
        """
        return self._act("/revert")

    def restart(self, from_task: str) -> Run:
        """Starts a new run of this one from task ``from_task``
        (``POST /v1/runs/{id}/restart``): the tasks before it that succeeded are copied
        (results and store, not executed again), the rest runs. Only for a run that ended
        SUCCESS or is SUSPENDED; this run is untouched. Returns the new run.

        Raises:
            NotFound: No such run, or no task ``from_task`` in it.
            Conflict: The run is neither SUCCESS nor SUSPENDED, or its flow changed.
            Unauthorized: The service has a token and the client not the same one.
        """
        body, _ = self._client._http.request(
            "POST", self._path("/restart"), json_body={"from": from_task}
        )
        run_id = body.get("run_id") if isinstance(body, dict) else None
        if not isinstance(run_id, str):
            raise FlowhostError(f"the service restarted a run without naming it: {body!r}")
        return Run(self._client, run_id)

    def signal(self, name: str, data: Any = None) -> str:
        """Sends signal ``name`` with ``data`` (any JSON value) to the run
        (``POST /v1/runs/{id}/signals/{name}``): the wait entry ``wait = { signal = name }``
        takes it and stores the data under its ``provides``. Kept until then, so it may
        come before the run reaches its wait; a WAITING run goes on. Returns the run's state
        when the signal was kept.

        Raises:
            Conflict: The run already ended.
            NotFound: No such run.
            BadRequest: The name is not a signal name.
            Unauthorized: The service has a token and the client not the same one.
        """
        body, _ = self._client._http.request(
            "POST", self._path(f"/signals/{_segment(name)}"), json_body=data
        )
        self._full = False
        return str(body.get("state")) if isinstance(body, dict) else ""

    def events(
        self,
        *,
        last_event_id: Optional[int] = None,
        reconnect: bool = True,
        max_reconnects: int = 10,
        retry_delay: float = 0.5,
        read_timeout: Optional[float] = 60.0,
    ) -> Iterator[Event]:
        """Iterates the run's event stream (``GET /v1/runs/{id}/events``): each transition
        once and in order — what already happened first, then live — and last the ``end``
        event with the run's final state, after which the iteration stops.

        A dropped connection (or one silent for ``read_timeout`` seconds; the service sends
        keep-alives every 15 s) is reopened with ``Last-Event-ID`` set to the last event
        received, so nothing is missed or repeated.

        Args:
            last_event_id: Start after the transition with this number (as if reconnecting).
            reconnect: Reopen a dropped stream; ``False`` raises :class:`ConnectionFailed`.
            max_reconnects: Reopen at most this many times in a row without receiving an
                event, then raise :class:`ConnectionFailed`.
            retry_delay: Seconds before reopening (the stream's ``retry:`` overrides it).
            read_timeout: Seconds of silence after which the stream counts as dropped.

        Raises:
            NotFound: No such run.
            ConnectionFailed: The stream could not be reopened.
        """
        return self._client.events(
            self.id,
            last_event_id=last_event_id,
            reconnect=reconnect,
            max_reconnects=max_reconnects,
            retry_delay=retry_delay,
            read_timeout=read_timeout,
        )


def _failure(run_id: str, doc: Dict[str, Any]) -> Optional[TaskFailed]:
    """The task failure that made run ``doc`` revert, if it did.

    A failure counts when its task did not run again after it (a retry, or a subflow's
    next iteration, handled it); of those, the earliest is the one that stopped the run.
    """
    state = doc.get("state")
    if state == "SUCCESS":
        return None
    best = None
    for task in doc.get("tasks") or []:
        history = task.get("history") or []
        last_failure = None
        for position, change in enumerate(history):
            if change.get("to") == "FAILURE":
                last_failure = position
        if last_failure is None:
            continue
        if any(change.get("to") == "RUNNING" for change in history[last_failure + 1 :]):
            continue
        change = history[last_failure]
        error = change.get("error") or task.get("error") or {}
        key = (str(change.get("at", "")), int(task.get("index", 0)))
        if best is None or key < best[0]:
            best = (key, task, error)
    if best is None:
        if state in ("REVERTED", "FAILURE"):
            return TaskFailed(
                None,
                "",
                doc.get("exit_reason") or f"run {run_id} ended {state}",
                run_id=run_id,
                run_state=state,
            )
        return None
    _, task, error = best
    return TaskFailed(
        str(task.get("name")),
        str(error.get("code", "")),
        str(error.get("message", "")),
        error.get("details"),
        run_id=run_id,
        run_state=state,
    )
