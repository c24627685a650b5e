"""`{{task}}`: greets `name`, with the config's `greeting` ("Hello" by default)."""

from flowhost_task import TaskError, define_task, log, progress


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
