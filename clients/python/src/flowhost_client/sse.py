"""A Server-Sent Events reader (the ``text/event-stream`` format of the HTML standard)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional

__all__ = ["RawEvent", "read_events"]


@dataclass(frozen=True)
class RawEvent:
    """One dispatched event: its type (``message`` when unnamed), the ``id`` field it carried
    (``None`` when it had none), its data lines joined by newlines, and the ``retry`` the
    stream asked for (milliseconds) if this event's block set one."""

    event: str
    id: Optional[str]
    data: str
    retry: Optional[int] = None


def read_events(readline: Callable[[], bytes]) -> Iterator[RawEvent]:
    """Yields the events of a stream read with ``readline`` (which returns ``b""`` at its
    end). Comments (``:`` lines, the keep-alives) are skipped; an event cut off by the end of
    the stream is dropped, as the standard says."""
    event = ""
    data: List[str] = []
    event_id: Optional[str] = None
    retry: Optional[int] = None
    has_data = False
    while True:
        raw = readline()
        if not raw:
            return
        line = raw.decode("utf-8", "replace")
        if not line.endswith(("\n", "\r")):
            # The stream ended inside a line: that event is incomplete.
            return
        line = line.rstrip("\r\n") if line.endswith("\r\n") else line[:-1]
        if line == "":
            if has_data:
                yield RawEvent(event or "message", event_id, "\n".join(data), retry)
            event, data, event_id, retry, has_data = "", [], None, None, False
            continue
        if line.startswith(":"):
            continue
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
            has_data = True
        elif name == "id":
            if "\0" not in value:
                event_id = value
        elif name == "retry":
            if value.isdigit():
                retry = int(value)
