// `{{task}}`: greets `name`, with the config's `greeting` ("Hello" by default).

import { defineTask, TaskError, log, progress } from "./flowhost-task.js";

// Calling a service is one line with `fetch` (or the helper's `fetchJson`). Build without
// `-d http` (see build.sh) so the component imports wasi:http, make `execute` async, and
// grant the origin in the flow entry, with the token as a secret the task names but never
// reads (see README.md):
//
//   import { fetchJson, secret } from "./flowhost-task.js";
//
//   const volume = await fetchJson("https://api.example.org/v3/volumes", {
//     method: "POST", json: { size: 10 },
//     headers: { authorization: `Bearer ${secret("api_token")}` },
//   });                                   // {status, headers, body}
//
// A request that gets no answer (an origin the flow does not grant, an unreachable one)
// throws TaskError `unavailable`. componentize-js 0.23.0 aborts instead when a request with a
// body goes to an origin not granted: grant every origin the task posts to.

export const task = defineTask({
  name: "{{task}}",
  version: "0.1.0",
  description: "Greets `name`",
  requires: ["name"],
  provides: ["{{task}}"],

  execute(args, config) {
    const { name } = args;
    if (typeof name !== "string" || name === "") {
      throw new TaskError("invalid-args", "`name` must be a non-empty string");
    }
    const { greeting = "Hello" } = config;
    if (typeof greeting !== "string") {
      throw new TaskError("invalid-config", "config `greeting` must be a string");
    }
    log("info", "greeting", { name });
    progress(1.0);
    return `${greeting}, ${name}!`;
  },

  revert(args, config, outcome, failures) {
    // Nothing to undo: greeting has no side effects. Return what was undone, if anything.
    return undefined;
  },
});
