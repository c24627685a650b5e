"""A client for ``flowhost serve``: start runs of WebAssembly task flows, wait for them,
fetch their results, follow their events, cancel and resume them.

::

    from flowhost_client import Client, NotFound, TaskFailed

    fh = Client("http://127.0.0.1:8080", token=os.environ.get("FLOWHOST_TOKEN"))
    run = fh.run("volume_create", {"raw_size": 10})   # start and wait
    volume = run.fetch("volume")                       # NotFound if absent or reverted

Only the standard library is used.
"""

__version__ = "0.1.0"

from .client import DEFAULT_URL, Client, Run  # noqa: E402
from .errors import (  # noqa: E402
    ApiError,
    BadRequest,
    Conflict,
    ConnectionFailed,
    FlowhostError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Problem,
    ServiceUnavailable,
    TaskFailed,
    Unauthorized,
    ValidationFailed,
    WaitTimeout,
)
from .models import FINISHED_STATES, Event, Flow, FlowTask, Task, TaskError  # noqa: E402

__all__ = [
    "__version__",
    "DEFAULT_URL",
    "Client",
    "Run",
    "Flow",
    "FlowTask",
    "Task",
    "TaskError",
    "Event",
    "FINISHED_STATES",
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
