// The JavaScript guest helper: wraps a task object so that an exception it does not catch
// reaches the operator as a task-error naming the exception.
//
// componentize-js turns a thrown value into the contract's `task-error` only when it has
// the error's shape, `{ code, message, details? }`. Anything else — `throw new Error("…")`,
// a TypeError from a bug — cannot be converted: the component aborts and the exception's
// message is lost. `defineTask` catches such exceptions, prints them on stderr, and throws
// the task-error the host gives uncaught exceptions of every language:
//   code "uncaught-exception", message "RangeError: bad size 3 (uncaught JavaScript exception)",
//   details '{"exception": "RangeError", "message": "bad size 3", "language": "javascript",
//            "traceback": "<the stack>"}'
//
//   import { defineTask } from "./flowhost-task.js";
//   export const task = defineTask({ describe() {…}, execute(args, config) {…}, revert(…) {…} });

export function defineTask(task) {
  return {
    describe: () => task.describe(),
    execute: (args, config) => guard(() => task.execute(args, config)),
    revert: (args, config, outcome, failures) => guard(() => task.revert(args, config, outcome, failures)),
  };
}

// A task-error as the contract has it: a plain object with a string code and message.
function isTaskError(thrown) {
  return (
    thrown !== null &&
    typeof thrown === "object" &&
    !(thrown instanceof Error) &&
    typeof thrown.code === "string" &&
    typeof thrown.message === "string" &&
    (thrown.details === undefined || typeof thrown.details === "string")
  );
}

function guard(call) {
  try {
    return call();
  } catch (thrown) {
    if (isTaskError(thrown)) {
      throw thrown;
    }
    const isError = thrown instanceof Error;
    const exception = isError ? thrown.constructor?.name || thrown.name || "Error" : typeof thrown;
    const message = isError ? String(thrown.message) : String(thrown);
    const traceback = isError && thrown.stack ? String(thrown.stack) : "";
    console.error(`Uncaught ${exception}: ${message}\n${traceback}`);
    throw {
      code: "uncaught-exception",
      message: `${exception}: ${message} (uncaught JavaScript exception)`,
      details: JSON.stringify({ exception, message, language: "javascript", traceback }),
    };
  }
}
