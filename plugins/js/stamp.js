// The kitchen-sink task in JavaScript: appends its stamp to a ledger.
//
// It exercises every part of the flowhost task contract: required and optional arguments,
// config, a result stored in the flow's store, error codes with details, log lines on stderr
// and revert. The same task exists in Rust, Python and C (see plugins/README.md).
//
// componentize-js maps the contract as follows: a record is an object, `result<T, E>` is a
// return value or a thrown E, an `option` is the value or undefined, and a variant is
// `{ tag, val }`. `defineTask` (flowhost-task.js) reports any other exception the task lets
// escape as an `uncaught-exception` task-error naming it.

import { defineTask } from "./flowhost-task.js";

function fail(code, message, details) {
  throw { code, message, details: details === undefined ? undefined : JSON.stringify(details) };
}

// Checks the input the way the contract asks: bad input is a task-error, never a crash.
function parse(argsText, configText) {
  let args;
  try {
    args = JSON.parse(argsText);
  } catch (error) {
    fail("invalid-args", `arguments are not JSON: ${error.message}`);
  }
  if (args === null || typeof args !== "object" || Array.isArray(args)) {
    fail("invalid-args", "arguments must be a JSON object");
  }
  const { ledger, note } = args;
  if (!Array.isArray(ledger) || !ledger.every((entry) => typeof entry === "string")) {
    fail("invalid-args", "`ledger` must be an array of strings");
  }
  if (note !== undefined && typeof note !== "string") {
    fail("invalid-args", "`note` must be a string");
  }
  let config;
  try {
    config = JSON.parse(configText);
  } catch (error) {
    fail("invalid-config", `config is not JSON: ${error.message}`);
  }
  if (config === null || typeof config !== "object" || Array.isArray(config)) {
    fail("invalid-config", "config must be a JSON object");
  }
  const { stamp, fail: failing = false, crash } = config;
  if (typeof stamp !== "string" || stamp === "") {
    fail("invalid-config", "config `stamp` must be a non-empty string");
  }
  if (typeof failing !== "boolean") {
    fail("invalid-config", "config `fail` must be true or false");
  }
  if (crash !== undefined && typeof crash !== "string") {
    fail("invalid-config", "config `crash` must be a string");
  }
  return { ledger, note, stamp, failing, crash };
}

export const task = defineTask({
  describe() {
    return {
      name: "stamp",
      version: "1.0.0",
      description: "Appends its stamp to a ledger (kitchen-sink task, JavaScript)",
      requires: ["ledger"],
      optional: ["note"],
      provides: ["stamped"],
    };
  },

  execute(args, config) {
    const { ledger, note, stamp, failing, crash } = parse(args, config);
    console.error(`stamp ${stamp} (javascript): ledger of ${ledger.length} entries`);
    if (crash !== undefined) {
      // A bug, as a plugin author would make one: an exception the task does not catch.
      throw new Error(crash);
    }
    if (failing) {
      fail("asked-to-fail", "config `fail` is set: failing on purpose", { stamp });
    }
    const entry = note === undefined ? stamp : `${stamp} (${note})`;
    return JSON.stringify([...ledger, entry]);
  },

  revert(args, config, outcome, failures) {
    let stamp;
    try {
      ({ stamp } = parse(args, config));
    } catch (rejected) {
      // execute got the same input, so it failed right there: nothing to undo.
      console.error(`stamp (javascript): nothing to revert: ${rejected.message}`);
      return;
    }
    const ended = outcome.tag === "result" ? "a result" : `error ${outcome.val.code}`;
    const causes = failures.map((f) => `${f.task}: ${f.error.code}`).join(", ") || "none";
    console.error(`stamp ${stamp} (javascript): reverted after ${ended}; flow failures: ${causes}`);
  },
});
