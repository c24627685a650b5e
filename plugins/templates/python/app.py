"""`{{task}}`: greets `name`, with the config's `greeting` ("Hello" by default)."""

from flowhost_task import TaskError, define_task, log, progress

# Calling a service is one line with the helper's `http`. Build with `./build.sh --http` (the
# world `plugin-http`, which imports wasi:http) and grant the origin in the flow entry, with
# the token as a secret the task names but never reads (see README.md):
#
#     from flowhost_task import http
#
#     volume = http.post("https://api.example.org/v3/volumes", json={"size": 10},
#                        headers={"authorization": "Bearer " + http.secret("api_token")}
#                        ).raise_for_status().json()
#
# `http.request(method, url, headers=, body=, json=)` returns a Response (status, headers,
# body, text(), json()); an origin the flow does not grant raises TaskError `http-denied`, an
# unreachable one `unavailable`.


def execute(args, config):
    name = args["name"]
    if not isinstance(name, str) or not name:
        raise TaskError("invalid-args", "`name` must be a non-empty string")
    greeting = config.get("greeting", "Hello")
    if not isinstance(greeting, str):
        raise TaskError("invalid-config", "config `greeting` must be a string")
    log("info", "greeting", name=name)
    progress(1.0)
    return f"{greeting}, {name}!"


def revert(args, config, outcome, failures):
    # Nothing to undo: greeting has no side effects. Return what was undone, if anything.
    return None


Task = define_task(
    name="{{task}}",
    version="0.1.0",
    description="Greets `name`",
    requires=["name"],
    provides=["{{task}}"],
    execute=execute,
    revert=revert,
)
