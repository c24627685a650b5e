"""A task that calls a service with the helper's one-line HTTP call, for testing network
grants from Python: sends `request` ({method, url, headers, body, json}) with
`flowhost_task.http.request` and returns {status, headers, body}. A request that gets no
answer fails the call with the helper's `TaskError` (`http-denied` for an origin the flow
entry does not grant). Built for the world `plugin-http` (build.sh), so it imports wasi:http.
"""

from flowhost_task import TaskError, define_task, http


def execute(args, config):
    request = args["request"]
    if not isinstance(request, dict) or not isinstance(request.get("url"), str):
        raise TaskError("invalid-args", "`request` must be an object with a `url`")
    response = http.request(
        request.get("method", "GET"),
        request["url"],
        headers=request.get("headers"),
        body=request.get("body"),
        json=request.get("json"),
    )
    return {"status": response.status, "headers": response.headers, "body": response.text()}


Task = define_task(
    name="fetch",
    version="1.0.0",
    description="Sends one HTTP request with flowhost_task.http (Python, wasi:http)",
    requires=["request"],
    provides=["response"],
    execute=execute,
)
