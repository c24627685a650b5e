// What the volume-service tasks share: the API's URL from the entry's config, the bearer
// token as the flow's secret (a placeholder the host fills in), idempotency keys, and errors
// for answers a task did not expect.

import { TaskError, fetchJson, invocation, secret } from "../../js/flowhost-task.js";

// The config every task takes: `api` (base URL, granted by the entry's `net.http`) and
// `token_secret` (the secret holding the API token, default `volume_token`).
export function api(config) {
  if (typeof config.api !== "string" || !/^https?:\/\//.test(config.api)) {
    throw new TaskError("invalid-config", "config `api` must be the volume API's http(s) URL");
  }
  const base = config.api.replace(/\/+$/, "");
  const token = secret(config.token_secret ?? "volume_token");
  return async (method, path, json) => {
    const url = `${base}/${path}`;
    const answer = await fetchJson(url, { method, json, headers: { authorization: `Bearer ${token}` } });
    return { ...answer, method, url };
  };
}

// `{run_id}/{task}`: the same for every attempt and for the revert of this task in this run.
export function key() {
  const { runId, task } = invocation();
  return `${runId}/${task}`;
}

// The error for an answer the task has no use for: `unavailable` for 429 and 5xx (a retry
// may help), `http-status` otherwise.
export function unexpected(answer) {
  const code = answer.status === 429 || answer.status >= 500 ? "unavailable" : "http-status";
  const why = answer.body?.message ?? JSON.stringify(answer.body);
  return new TaskError(code, `${answer.method} ${answer.url} answered ${answer.status}: ${why}`, {
    method: answer.method,
    url: answer.url,
    status: answer.status,
    body: answer.body,
  });
}
