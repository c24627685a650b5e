// The flowhost task helper for JavaScript (componentize-js), contract flowhost:task@0.2.0.
//
// Declare the task once and write plain functions; the helper does the contract's chores:
//
//   import { defineTask, TaskError, progress, log, invocation } from "./flowhost-task.js";
//
//   export const task = defineTask({
//     name: "reserve", version: "1.0.0", description: "Reserves a volume",
//     requires: ["size"], optional: [], provides: ["volume"],
//     execute(args, config) {                 // parsed JSON objects
//       if (args.size < 1) throw new TaskError("invalid-size", "size must be at least 1", { size: args.size });
//       progress(0.5, { step: "reserving" });
//       log("info", "reserving", { size: args.size });
//       return { id: "vol-1", size: args.size };   // any JSON-able value
//     },
//     revert(args, config, outcome, failures) {  // optional; may return a JSON-able value
//       return { released: true };
//     },
//   });
//
// - Arguments and config that are not JSON objects, and a missing required name, fail with
//   `invalid-args` / `invalid-config` before your function runs.
// - `throw new TaskError(code, message, details)` fails the call with that task-error.
// - Any other exception fails it with code `uncaught-exception`, the message
//   "RangeError: bad size 3 (uncaught JavaScript exception by task `T` in execute)" and details
//   {exception, message, language, traceback}. (componentize-js turns a thrown value into a
//   task-error only when it has the error's shape; anything else would abort the component and
//   lose the message.)
// - `outcome` is {result: <value>} or {error: {code, message, details}}; `failures` a list of
//   {task, code, message, details}.
// - `invocation()` gives {runId, task, attempt}, for idempotency keys.
// - `execute` and `revert` may be async (return a promise): componentize-js runs the event
//   loop until it settles, so `await fetch(...)` works. A rejection is reported like a throw.
// - Calling services: `fetch` (or `fetchJson` below) reaches the origins the flow entry
//   grants (`net = { http = [...] }`); `secret("name")` in a header value stands for the
//   flow's secret. Build without `-d http`, or the component has no fetch.
//
// A task object with its own `describe()` is passed through as it is (the raw contract: JSON
// text in and out), with only uncaught exceptions reported.

import * as host from "flowhost:task/host@0.2.0";

export class TaskError extends Error {
  constructor(code, message, details) {
    super(message);
    this.name = "TaskError";
    this.code = code;
    this.details = details;
  }
}

// The placeholder for the flow's secret `name`, for an HTTP header value: the host puts the
// value in when it sends the request to an origin the entry grants, so the task never holds it.
//   fetch(url, { headers: { authorization: `Bearer ${secret("volume_token")}` } })
export function secret(name) {
  return `{{secret:${name}}}`;
}

// fetch() for JSON APIs: `init.json` is sent as a JSON body (content-type set), and the answer
// is {status, headers, body}, `body` parsed when it is JSON (the text otherwise). Any status
// is an answer; a request that gets none (the host refused it: the entry's `net.http` does not
// grant the origin; or the service is unreachable) throws TaskError `unavailable` with
// {method, url, reason}. Build the task without `-d http` (see plugins/README.md). Caveat of
// componentize-js 0.23.0: a request with a body to an origin not granted aborts the component
// instead of rejecting; grant every origin the task sends a body to.
export async function fetchJson(url, init = {}) {
  const { json, ...rest } = init;
  const method = (rest.method ?? "GET").toUpperCase();
  const request = { ...rest, method, headers: { ...(rest.headers ?? {}) } };
  if (json !== undefined) {
    request.body = JSON.stringify(json);
    if (!Object.keys(request.headers).some((h) => h.toLowerCase() === "content-type")) {
      request.headers["content-type"] = "application/json";
    }
  }
  let response;
  try {
    response = await fetch(url, request);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new TaskError("unavailable", `${method} ${url} got no answer: ${reason}`, { method, url, reason });
  }
  const text = await response.text();
  let body = text;
  try {
    body = text === "" ? null : JSON.parse(text);
  } catch {
    // not JSON: the text as it is
  }
  return { status: response.status, headers: Object.fromEntries(response.headers), body };
}

export function invocation() {
  const { runId, task, attempt } = host.invocation();
  return { runId, task, attempt };
}

export function progress(fraction, details) {
  host.progress(Number(fraction), details === undefined ? undefined : JSON.stringify(details));
}

const LEVELS = { trace: "trace", debug: "debug", info: "info", warn: "warn", warning: "warn", error: "error" };

export function log(level, message, fields = {}) {
  host.log(LEVELS[level] ?? "info", String(message), Object.entries(fields).map(([k, v]) => [String(k), String(v)]));
}

export function defineTask(task) {
  if (typeof task.describe === "function") {
    return {
      describe: () => task.describe(),
      execute: (args, config) => guard("execute", () => task.execute(args, config)),
      revert: (args, config, outcome, failures) => guard("revert", () => task.revert(args, config, outcome, failures)),
    };
  }
  const info = {
    name: task.name,
    version: task.version,
    description: task.description ?? "",
    requires: [...(task.requires ?? [])],
    optional: [...(task.optional ?? [])],
    provides: [...(task.provides ?? [])],
  };
  const parse = (args, config) => {
    const parsedArgs = object(args, "invalid-args", "arguments");
    const missing = info.requires.filter((name) => !(name in parsedArgs));
    if (missing.length > 0) {
      throw new TaskError("invalid-args", `arguments lack ${missing.map((n) => `\`${n}\``).join(", ")}`);
    }
    return [parsedArgs, object(config, "invalid-config", "config")];
  };
  return {
    describe: () => info,
    execute: (args, config) =>
      guard("execute", () =>
        then(task.execute(...parse(args, config)), (result) => {
          const text = JSON.stringify(result);
          if (text === undefined) {
            throw new TaskError("invalid-output", `result is not JSON-able: ${typeof result}`);
          }
          return text;
        }),
      ),
    revert: (args, config, outcome, failures) =>
      guard("revert", () => {
        let parsed;
        try {
          parsed = parse(args, config);
        } catch {
          // execute got the same input and failed right there: nothing to undo.
          return undefined;
        }
        if (typeof task.revert !== "function") {
          return undefined;
        }
        const failed = failures.map((f) => ({ task: f.task, ...errorObject(f.error) }));
        return then(task.revert(...parsed, outcomeObject(outcome), failed), (result) =>
          result === undefined || result === null ? undefined : JSON.stringify(result),
        );
      }),
  };
}

function object(text, code, what) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new TaskError(code, `${what} is not JSON: ${error.message}`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new TaskError(code, `${what} must be a JSON object`);
  }
  return value;
}

function parseOrText(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function errorObject(error) {
  return { code: error.code, message: error.message, details: error.details === undefined ? undefined : parseOrText(error.details) };
}

function outcomeObject(outcome) {
  return outcome.tag === "result" ? { result: parseOrText(outcome.val) } : { error: errorObject(outcome.val) };
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

// `f(value)`, after `value` settles when it is a promise (an async execute or revert).
function then(value, f) {
  return value !== null && typeof value === "object" && typeof value.then === "function" ? value.then(f) : f(value);
}

// Runs `call`, turning what it throws, or the promise it returns rejects with, into a
// task-error. componentize-js runs the event loop until a returned promise settles.
function guard(fn, call) {
  let value;
  try {
    value = call();
  } catch (thrown) {
    throw contractError(fn, thrown);
  }
  if (value !== null && typeof value === "object" && typeof value.then === "function") {
    return value.then(undefined, (thrown) => {
      throw contractError(fn, thrown);
    });
  }
  return value;
}

// The task-error a thrown value becomes: a task-error as it is, a TaskError by its fields,
// anything else `uncaught-exception` with its stack.
function contractError(fn, thrown) {
  if (isTaskError(thrown)) {
    return thrown;
  }
  if (thrown instanceof TaskError) {
    return {
      code: thrown.code,
      message: thrown.message,
      details: thrown.details === undefined ? undefined : JSON.stringify(thrown.details),
    };
  }
  const isError = thrown instanceof Error;
  const exception = isError ? thrown.constructor?.name || thrown.name || "Error" : typeof thrown;
  const message = isError ? String(thrown.message) : String(thrown);
  const traceback = isError && thrown.stack ? String(thrown.stack) : "";
  let name = "?";
  try {
    name = host.invocation().task;
  } catch {
    // describe-time or no host: the name stays unknown.
  }
  console.error(`Uncaught ${exception}: ${message}\n${traceback}`);
  return {
    code: "uncaught-exception",
    message: `${exception}: ${message} (uncaught JavaScript exception by task \`${name}\` in ${fn})`,
    details: JSON.stringify({ exception, message, language: "javascript", traceback }),
  };
}
