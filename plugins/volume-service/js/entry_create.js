// `entry_create` against the volume API (examples/volume-service): creates the volume record.
// The record's key is `{run_id}/{task}`, so a repeated call gets the record the first made,
// and revert deletes it by id (after a success) or by key (execute may have failed after the
// API created it). A record already gone is nothing to undo.

import { defineTask, TaskError } from "../../js/flowhost-task.js";
import { api, key, unexpected } from "./service-api.js";

export const task = defineTask({
  name: "entry_create",
  version: "1.0.0",
  description: "Creates the volume record through the volume API (JavaScript, fetch)",
  requires: ["size", "availability_zone", "volume_type"],
  optional: ["display_name", "description"],
  provides: ["volume_id", "volume"],

  async execute(args, config) {
    const call = api(config);
    if (!Number.isInteger(args.size) || args.size < 1) {
      throw new TaskError("invalid-args", "`size` must be a positive integer");
    }
    const answer = await call("POST", "volumes", {
      key: key(),
      size: args.size,
      availability_zone: args.availability_zone,
      volume_type: args.volume_type,
      display_name: args.display_name ?? null,
      description: args.description ?? null,
    });
    if (answer.status !== 201 && answer.status !== 200) {
      throw unexpected(answer);
    }
    const { key: _key, ...volume } = answer.body;
    return { volume_id: volume.id, volume };
  },

  async revert(args, config, outcome) {
    const call = api(config);
    const path = "result" in outcome
      ? `volumes/${encodeURIComponent(outcome.result.volume_id)}`
      : `volumes?key=${encodeURIComponent(key())}`;
    const answer = await call("DELETE", path);
    if (answer.status === 404) {
      return { deleted: null };
    }
    if (answer.status !== 200) {
      throw unexpected(answer);
    }
    return { deleted: answer.body.id };
  },
});
