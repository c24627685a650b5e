// `{{task}}`: greets `name`, with the config's `greeting` ("Hello" by default).

import { defineTask, TaskError, log, progress } from "./flowhost-task.js";

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
