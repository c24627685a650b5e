// `volume_cast` against the volume API (examples/volume-service): queues the volume for the
// scheduler. A zone that refuses new volumes fails with `zone-unavailable`, and the flow
// reverts everything before it; revert takes the request off the queue (gone already: done).

import { defineTask, TaskError } from "../../js/flowhost-task.js";
import { api, unexpected } from "./service-api.js";

export const task = defineTask({
  name: "volume_cast",
  version: "1.0.0",
  description: "Casts the volume to the scheduler through the volume API (JavaScript, fetch)",
  requires: ["volume_id", "size", "availability_zone", "volume_type"],
  provides: [],

  async execute(args, config) {
    const answer = await api(config)("POST", "scheduler/requests", {
      volume_id: args.volume_id,
      availability_zone: args.availability_zone,
      size: args.size,
      volume_type: args.volume_type,
    });
    if (answer.status === 409 && answer.body?.error === "zone-unavailable") {
      throw new TaskError("zone-unavailable", answer.body.message, { zone: args.availability_zone });
    }
    if (answer.status !== 201 && answer.status !== 200) {
      throw unexpected(answer);
    }
    return null;
  },

  async revert(args, config) {
    const answer = await api(config)("DELETE", `scheduler/requests/${encodeURIComponent(args.volume_id)}`);
    if (answer.status === 404) {
      return { unscheduled: null };
    }
    if (answer.status !== 200) {
      throw unexpected(answer);
    }
    return { unscheduled: args.volume_id };
  },
});
