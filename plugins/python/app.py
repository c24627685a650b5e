"""The kitchen-sink task in Python: appends its stamp to a ledger.

It exercises every part of the flowhost task contract: required and optional arguments,
config, a result stored in the flow's store, error codes with details, log lines on stderr
and revert. The same task exists in Rust, JavaScript and C (see plugins/README.md).
"""

import json
import sys

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.task import Outcome_Result, TaskError, TaskInfo


def fail(code, message, details=None):
    """Raises the contract's task-error; the host reports it with the code and message."""
    raise Err(TaskError(code, message, None if details is None else json.dumps(details)))


def parse(args, config):
    """Checks the input the way the contract asks: bad input is a task-error, never a crash."""
    try:
        args = json.loads(args)
    except ValueError as error:
        fail("invalid-args", f"arguments are not JSON: {error}")
    if not isinstance(args, dict):
        fail("invalid-args", "arguments must be a JSON object")
    ledger = args.get("ledger")
    if not isinstance(ledger, list) or not all(isinstance(entry, str) for entry in ledger):
        fail("invalid-args", "`ledger` must be an array of strings")
    note = args.get("note")
    if note is not None and not isinstance(note, str):
        fail("invalid-args", "`note` must be a string")
    try:
        config = json.loads(config)
    except ValueError as error:
        fail("invalid-config", f"config is not JSON: {error}")
    if not isinstance(config, dict):
        fail("invalid-config", "config must be a JSON object")
    stamp = config.get("stamp")
    if not isinstance(stamp, str) or not stamp:
        fail("invalid-config", "config `stamp` must be a non-empty string")
    failing = config.get("fail", False)
    if not isinstance(failing, bool):
        fail("invalid-config", "config `fail` must be true or false")
    crash = config.get("crash")
    if crash is not None and not isinstance(crash, str):
        fail("invalid-config", "config `crash` must be a string")
    return ledger, note, stamp, failing, crash


class Task(exports.Task):
    def describe(self):
        return TaskInfo(
            name="stamp",
            version="1.0.0",
            description="Appends its stamp to a ledger (kitchen-sink task, Python)",
            requires=["ledger"],
            optional=["note"],
            provides=["stamped"],
        )

    def execute(self, args, config):
        ledger, note, stamp, failing, crash = parse(args, config)
        print(f"stamp {stamp} (python): ledger of {len(ledger)} entries", file=sys.stderr)
        if crash is not None:
            # A bug, as a plugin author would make one: an exception the task does not catch.
            # The host reads the traceback and fails the task with its type and message.
            raise ValueError(crash)
        if failing:
            fail("asked-to-fail", "config `fail` is set: failing on purpose", {"stamp": stamp})
        entry = stamp if note is None else f"{stamp} ({note})"
        return json.dumps(ledger + [entry])

    def revert(self, args, config, outcome, failures):
        try:
            _, _, stamp, _, _ = parse(args, config)
        except Err as rejected:
            # execute got the same input, so it failed right there: nothing to undo.
            print(f"stamp (python): nothing to revert: {rejected.value.message}", file=sys.stderr)
            return
        ended = "a result" if isinstance(outcome, Outcome_Result) else f"error {outcome.value.code}"
        causes = ", ".join(f"{f.task}: {f.error.code}" for f in failures) or "none"
        print(f"stamp {stamp} (python): reverted after {ended}; flow failures: {causes}", file=sys.stderr)
