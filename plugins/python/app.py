"""The kitchen-sink task in Python: appends its stamp to a ledger.

It exercises every part of the flowhost task contract (0.2) through the helper
`flowhost_task.py`: required and optional arguments, config, a result stored in the flow's
store, error codes with details, log lines on stderr, structured logs, progress, revert with
a result, and an uncaught exception reported with its traceback. The same task exists in
Rust, JavaScript and C (see plugins/README.md).
"""

import sys

from flowhost_task import TaskError, define_task, invocation, log, progress


def checked(args, config):
    """The input's types, which the helper leaves to the task."""
    ledger = args["ledger"]
    if not isinstance(ledger, list) or not all(isinstance(entry, str) for entry in ledger):
        raise TaskError("invalid-args", "`ledger` must be an array of strings")
    note = args.get("note")
    if note is not None and not isinstance(note, str):
        raise TaskError("invalid-args", "`note` must be a string")
    stamp = config.get("stamp")
    if not isinstance(stamp, str) or not stamp:
        raise TaskError("invalid-config", "config `stamp` must be a non-empty string")
    failing = config.get("fail", False)
    if not isinstance(failing, bool):
        raise TaskError("invalid-config", "config `fail` must be true or false")
    crash = config.get("crash")
    if crash is not None and not isinstance(crash, str):
        raise TaskError("invalid-config", "config `crash` must be a string")
    return ledger, note, stamp, failing, crash


def execute(args, config):
    ledger, note, stamp, failing, crash = checked(args, config)
    print(f"stamp {stamp} (python): ledger of {len(ledger)} entries", file=sys.stderr)
    log("info", "stamping", stamp=stamp, entries=len(ledger), run=invocation()["run_id"])
    progress(0.5, {"stamp": stamp})
    if crash is not None:
        # A bug, as a plugin author would make one: an exception the task does not catch.
        # The helper fails the task with its type, message and traceback.
        raise ValueError(crash)
    if failing:
        raise TaskError("asked-to-fail", "config `fail` is set: failing on purpose", {"stamp": stamp})
    entry = stamp if note is None else f"{stamp} ({note})"
    return ledger + [entry]


def revert(args, config, outcome, failures):
    try:
        _, _, stamp, _, _ = checked(args, config)
    except TaskError as rejected:
        # execute got the same input, so it failed right there: nothing to undo.
        print(f"stamp (python): nothing to revert: {rejected.message}", file=sys.stderr)
        return None
    ended = "a result" if "result" in outcome else f"error {outcome['error']['code']}"
    causes = ", ".join(f"{f['task']}: {f['code']}" for f in failures) or "none"
    print(f"stamp {stamp} (python): reverted after {ended}; flow failures: {causes}", file=sys.stderr)
    return {"unstamped": stamp}


Task = define_task(
    name="stamp",
    version="1.0.0",
    description="Appends its stamp to a ledger (kitchen-sink task, Python)",
    requires=["ledger"],
    optional=["note"],
    provides=["stamped"],
    execute=execute,
    revert=revert,
)
