"""The event stream: transitions in order, live, and resumed with Last-Event-ID."""

from __future__ import annotations

import socket
import threading
from typing import List, Optional, Tuple

import pytest

from conftest import Flows, Served
from flowhost_client import Client, ConnectionFailed, Event, NotFound, Run

SUCCESS_MOVES = [
    ("a", "PENDING", "RUNNING"),
    ("a", "RUNNING", "SUCCESS"),
    ("b", "PENDING", "RUNNING"),
    ("b", "RUNNING", "SUCCESS"),
    ("c", "PENDING", "RUNNING"),
    ("c", "RUNNING", "SUCCESS"),
]


def task_moves(events: List[Event]) -> List[Tuple[str, str, str]]:
    return [(e.task, e.from_state, e.to_state) for e in events if e.event == "task"]


def check_numbering(events: List[Event], first: int = 0) -> None:
    numbers = [e.id for e in events if not e.is_end]
    assert numbers == list(range(first, first + len(numbers))), numbers


def test_events_yield_every_transition_in_order_then_end(fh: Client, flows: Flows) -> None:
    probes = flows.probes("events")
    run = fh.run(probes.name)
    events = list(run.events())

    check_numbering(events)
    assert task_moves(events) == SUCCESS_MOVES
    # Read back from the run database once the run has ended: its task transitions (the
    # database keeps no flow transitions), then `end`.
    assert [e.event for e in events] == ["task"] * len(SUCCESS_MOVES) + ["end"]
    assert events[-1].is_end and events[-1].state == "SUCCESS"
    assert events[-1].data["run_id"] == run.id
    assert all("result" not in e.data and "args" not in e.data for e in events)


def test_events_follow_a_run_live(fh: Client, flows: Flows) -> None:
    probes = flows.probes("live", [("a", {}), ("b", {"mode": "wait_file", "path": "/signal/go"}), ("c", {})])
    run = fh.start(probes.name)
    seen: List[Event] = []
    for event in run.events():
        seen.append(event)
        if (event.task, event.to_state) == ("b", "RUNNING"):
            assert run.state == "RUNNING"
            probes.release()
    check_numbering(seen)
    assert task_moves(seen) == SUCCESS_MOVES
    flow_moves = [(e.from_state, e.to_state) for e in seen if e.event == "flow"]
    assert (seen[0].event, flow_moves[0]) == ("flow", ("PENDING", "RUNNING")), "live: the flow's own transitions too"
    assert flow_moves[-1] == ("RUNNING", "SUCCESS")
    assert seen[-1].state == "SUCCESS"


def test_events_of_a_failed_run_carry_the_error(fh: Client, flows: Flows) -> None:
    probes = flows.probes("events_fail", [("a", {}), ("b", {"fail": "bad-thing"})])
    run = fh.start(probes.name)
    events = list(run.events())
    failure = [e for e in events if e.to_state == "FAILURE"]
    assert [e.task for e in failure] == ["b"]
    assert failure[0].error["code"] == "bad-thing"
    assert task_moves(events)[-2:] == [("a", "SUCCESS", "REVERTING"), ("a", "REVERTING", "REVERTED")]
    assert events[-1].state == "REVERTED"


def test_last_event_id_starts_after_that_event(fh: Client, flows: Flows) -> None:
    probes = flows.probes("after")
    run = fh.run(probes.name)
    everything = list(run.events())
    rest = list(run.events(last_event_id=2))
    assert rest[0].id == 3
    check_numbering(rest, first=3)
    assert rest == everything[3:]


def test_events_of_an_unknown_run_are_not_found(fh: Client) -> None:
    with pytest.raises(NotFound):
        next(Run(fh, "no-such-run").events())


class CuttingProxy:
    """A TCP proxy before the server that cuts its first connections short: connection ``i``
    is closed after ``cuts[i]`` whole events and a few bytes of the next. It asks the server
    for HTTP/1.0, so the stream comes unchunked and events can be counted in the bytes, and
    rewrites ``Host`` to the server's own (which the server insists on)."""

    def __init__(self, upstream: Served, cuts: List[int]) -> None:
        self.upstream = upstream
        self.cuts = list(cuts)
        self.requests: List[str] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.listener.close()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            cut = self.cuts.pop(0) if self.cuts else None
            threading.Thread(target=self._handle, args=(client, cut), daemon=True).start()

    def _handle(self, client: socket.socket, cut: Optional[int]) -> None:
        with client, socket.create_connection(("127.0.0.1", self.upstream.port)) as server:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(65536)
                if not chunk:
                    return
                head += chunk
            text = head.decode("latin-1")
            self.requests.append(text)
            lines = text.split("\r\n")
            lines[0] = lines[0].replace("HTTP/1.1", "HTTP/1.0")
            lines = [
                f"Host: 127.0.0.1:{self.upstream.port}" if line.lower().startswith("host:") else line
                for line in lines
            ]
            server.sendall("\r\n".join(lines).encode("latin-1"))
            answer = b""
            while True:
                chunk = server.recv(65536)
                if not chunk:
                    break
                answer += chunk
                if cut is not None:
                    _, _, body = answer.partition(b"\r\n\r\n")
                    if body.count(b"\n\n") > cut:
                        break
            if cut is not None:
                header, _, body = answer.partition(b"\r\n\r\n")
                events = body.split(b"\n\n")
                kept = b"\n\n".join(events[:cut]) + b"\n\n" + events[cut][:7]
                client.sendall(header + b"\r\n\r\n" + kept)
            else:
                client.sendall(answer)


def test_a_dropped_stream_is_resumed_with_last_event_id(fh: Client, server: Served, flows: Flows) -> None:
    probes = flows.probes("dropped")
    run = fh.run(probes.name)
    everything = list(run.events())

    proxy = CuttingProxy(server, cuts=[2, 3])
    try:
        through = Client(proxy.url)
        events = list(through.events(run.id, retry_delay=0.05))
    finally:
        proxy.close()

    assert events == everything, "each event once, in order, despite two cuts"
    check_numbering(events)
    assert len(proxy.requests) == 3
    assert "last-event-id" not in proxy.requests[0].lower()
    assert "Last-Event-ID: 1\r\n" in proxy.requests[1]
    assert "Last-Event-ID: 4\r\n" in proxy.requests[2]


def test_a_stream_that_keeps_dropping_gives_up(fh: Client, server: Served, flows: Flows) -> None:
    probes = flows.probes("gives_up")
    run = fh.run(probes.name)
    proxy = CuttingProxy(server, cuts=[0, 0, 0, 0])
    try:
        through = Client(proxy.url)
        with pytest.raises(ConnectionFailed):
            list(through.events(run.id, retry_delay=0.01, max_reconnects=2))
        with pytest.raises(ConnectionFailed):
            list(Client(proxy.url).events(run.id, reconnect=False))
    finally:
        proxy.close()


@pytest.mark.xfail(
    reason="server: a live stream numbers flow and task transitions, the stream read back from "
    "the run database once the run ended numbers task transitions only, so Last-Event-ID "
    "from a live stream skips too much after the run ended (GET /v1/runs/{id}/events)",
    strict=False,
)
def test_a_stream_dropped_live_and_resumed_after_the_end_misses_nothing(
    fh: Client, server: Served, flows: Flows
) -> None:
    probes = flows.probes("live_drop", [("a", {}), ("b", {"mode": "wait_file", "path": "/signal/go"}), ("c", {})])
    run = fh.start(probes.name)
    proxy = CuttingProxy(server, cuts=[3])
    seen: List[Event] = []
    try:
        for event in Client(proxy.url).events(run.id, retry_delay=0.05):
            seen.append(event)
            if event.id == 2:
                # The connection is cut after this event; let the run end before the client
                # reconnects.
                probes.release()
                fh.get_run(run.id).wait(timeout=60)
    finally:
        proxy.close()
    assert "Last-Event-ID: 2\r\n" in proxy.requests[1]
    assert task_moves(seen) == SUCCESS_MOVES
