"""Parts that need no server: the event-stream reader and picking a run's failure."""

from __future__ import annotations

import io

from flowhost_client.client import _failure
from flowhost_client.sse import RawEvent, read_events


def events(text: bytes):
    return list(read_events(io.BytesIO(text).readline))


def test_the_reader_skips_comments_and_joins_data_lines() -> None:
    stream = b": keep-alive\n\nevent: task\r\nid: 4\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\nretry: 250\ndata: x\n\n"
    assert events(stream) == [
        RawEvent("task", "4", '{"a":\n1}'),
        RawEvent("message", None, "x", 250),
    ]


def test_an_event_cut_off_by_the_end_of_the_stream_is_dropped() -> None:
    assert events(b"event: flow\nid: 0\ndata: {}\n\nevent: task\nid: 1\ndata: {") == [
        RawEvent("flow", "0", "{}")
    ]
    assert events(b"event: flow\nid: 0\ndata: {}\n") == []


def change(to: str, at: str, error=None) -> dict:
    return {"from": "?", "to": to, "at": at, "error": error}


def test_the_failure_is_the_earliest_one_no_retry_handled() -> None:
    handled = {"code": "unavailable", "message": "busy"}
    real = {"code": "zone-unavailable", "message": "down", "details": {"zone": "z"}}
    later = {"code": "other", "message": "late"}
    doc = {
        "state": "REVERTED",
        "tasks": [
            {"name": "retried", "index": 0, "history": [
                change("RUNNING", "t1"), change("FAILURE", "t2", handled), change("REVERTED", "t3"),
                change("RUNNING", "t4"), change("SUCCESS", "t5"), change("REVERTED", "t9")]},
            {"name": "cast", "index": 1, "history": [change("RUNNING", "t5"), change("FAILURE", "t6", real)]},
            {"name": "sibling", "index": 2, "history": [change("RUNNING", "t5"), change("FAILURE", "t7", later)]},
        ],
    }
    failure = _failure("r1", doc)
    assert failure is not None
    assert (failure.task, failure.code, failure.details, failure.run_state) == ("cast", "zone-unavailable", {"zone": "z"}, "REVERTED")
    assert _failure("r1", dict(doc, state="SUCCESS")) is None


def test_a_reverted_run_without_a_task_error_still_fails() -> None:
    failure = _failure("r2", {"state": "REVERTED", "exit_reason": "host stopped", "tasks": []})
    assert failure is not None and failure.task is None and failure.message == "host stopped"
    assert _failure("r3", {"state": "RUNNING", "tasks": []}) is None
