// The kitchen-sink task in JavaScript: appends its stamp to a ledger.
//
// It exercises every part of the flowhost task contract (0.2) through the helper
// flowhost-task.js: required and optional arguments, config, a result stored in the flow's
// store, error codes with details, log lines on stderr, structured logs, progress, revert
// with a result, and an uncaught exception reported with its stack. The same task exists in
// Rust, Python and C (see plugins/README.md).

import { defineTask, TaskError, invocation, log, progress } from "./flowhost-task.js";

// The input's types, which the helper leaves to the task.
function checked(args, config) {
  const { ledger, note } = args;
  if (!Array.isArray(ledger) || !ledger.every((entry) => typeof entry === "string")) {
    throw new TaskError("invalid-args", "`ledger` must be an array of strings");
  }
  if (note !== undefined && typeof note !== "string") {
    throw new TaskError("invalid-args", "`note` must be a string");
  }
  const { stamp, fail: failing = false, crash } = config;
  if (typeof stamp !== "string" || stamp === "") {
    throw new TaskError("invalid-config", "config `stamp` must be a non-empty string");
  }
  if (typeof failing !== "boolean") {
    throw new TaskError("invalid-config", "config `fail` must be true or false");
  }
  if (crash !== undefined && typeof crash !== "string") {
    throw new TaskError("invalid-config", "config `crash` must be a string");
  }
  return { ledger, note, stamp, failing, crash };
}

export const task = defineTask({
  name: "stamp",
  version: "1.0.0",
  description: "Appends its stamp to a ledger (kitchen-sink task, JavaScript)",
  requires: ["ledger"],
  optional: ["note"],
  provides: ["stamped"],

  execute(args, config) {
    const { ledger, note, stamp, failing, crash } = checked(args, config);
    console.error(`stamp ${stamp} (javascript): ledger of ${ledger.length} entries`);
    log("info", "stamping", { stamp, entries: ledger.length, run: invocation().runId });
    progress(0.5, { stamp });
    if (crash !== undefined) {
      // A bug, as a plugin author would make one: an exception the task does not catch.
      throw new Error(crash);
    }
    if (failing) {
      throw new TaskError("asked-to-fail", "config `fail` is set: failing on purpose", { stamp });
    }
    return [...ledger, note === undefined ? stamp : `${stamp} (${note})`];
  },

  revert(args, config, outcome, failures) {
    let stamp;
    try {
      ({ stamp } = checked(args, config));
    } catch (rejected) {
      // execute got the same input, so it failed right there: nothing to undo.
      console.error(`stamp (javascript): nothing to revert: ${rejected.message}`);
      return undefined;
    }
    const ended = "result" in outcome ? "a result" : `error ${outcome.error.code}`;
    const causes = failures.map((f) => `${f.task}: ${f.code}`).join(", ") || "none";
    console.error(`stamp ${stamp} (javascript): reverted after ${ended}; flow failures: ${causes}`);
    return { unstamped: stamp };
  },
});
