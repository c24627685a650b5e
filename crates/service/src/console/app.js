// The flowhost console: plain JavaScript over the JSON API, no build step. Every text that
// comes from a run (task names, errors, store values) is set as text, never as HTML.
"use strict";

const STATES = ["PENDING", "RUNNING", "WAITING", "SUCCESS", "REVERTING", "REVERTED", "FAILURE", "SUSPENDING", "SUSPENDED"];
const FINISHED = new Set(["SUCCESS", "REVERTED", "FAILURE"]);
let stopPage = () => {};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "style") Object.assign(node.style, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function badge(state) {
  return el("span", { class: `badge s-${state}`, "data-state": state }, state);
}

function token() {
  return localStorage.getItem("flowhost-token") || "";
}

async function api(path, options = {}) {
  const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = { error: text }; }
  if (!response.ok) {
    const error = new Error((body && body.error) || `${response.status} ${response.statusText}`);
    error.status = response.status;
    error.body = body;
    throw error;
  }
  return body;
}

function link(href, text) {
  return el("a", { href, onclick: (event) => { event.preventDefault(); navigate(href); } }, text);
}

function navigate(href) {
  history.pushState(null, "", href);
  route();
}

function showError(container, error) {
  const box = el("div", { class: "error", role: "alert" }, error.message);
  const problems = error.body && error.body.problems;
  if (Array.isArray(problems)) {
    box.append(el("ul", {}, problems.map((p) =>
      el("li", {}, p.task ? `task ${p.task}` : "flow", p.field ? ` (${p.field})` : "", ": ", p.message))));
  }
  container.replaceChildren(box);
}

// A page for an address that names nothing: a malformed one (`/runs/%E0%A4%A`), an unknown
// path, a run or flow that does not exist.
function notFound(main, message) {
  document.title = "not found · flowhost";
  main.replaceChildren(el("section", { class: "panel", id: "not-found" },
    el("h2", {}, "Not found"), el("p", {}, message), el("p", {}, link("/", "All runs"))));
}

// A path segment decoded, or null when its percent-encoding is malformed.
function segment(text) {
  try { return decodeURIComponent(text); } catch (_) { return null; }
}

function json(value) {
  return el("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

// ---- schedules --------------------------------------------------------------------------

// The served flows' schedules (GET /v1/schedules): cron, next tick, last tick and its run.
// Returns the panel and a refresh; the panel stays hidden while no flow has a schedule.
function schedulesPanel() {
  const tbody = el("tbody", { id: "schedules" });
  const panel = el("section", { class: "panel", id: "schedules-panel", hidden: true }, el("h2", {}, "Schedules"),
    el("table", {}, el("thead", {}, el("tr", {}, ["Flow", "Cron", "Next tick", "Last tick", "Last run"].map((h) => el("th", {}, h)))), tbody));
  const refresh = async () => {
    try {
      const schedules = await api("/v1/schedules");
      panel.hidden = schedules.length === 0;
      tbody.replaceChildren(...schedules.map((s) => el("tr", { "data-flow": s.flow },
        el("td", {}, link(`/flows/${encodeURIComponent(s.served_as)}`, s.flow)),
        el("td", { class: "mono" }, s.cron), el("td", { class: "muted" }, s.next_tick || "never"),
        el("td", { class: "muted" }, s.last_tick || "—"),
        el("td", { class: "mono" }, s.last_run ? link(`/runs/${encodeURIComponent(s.last_run)}`, s.last_run) : "—"))));
    } catch (error) { panel.hidden = false; showError(tbody, error); }
  };
  return { panel, refresh };
}

// ---- runs list --------------------------------------------------------------------------

async function runsPage(main) {
  const params = new URLSearchParams(location.search);
  const stateFilter = el("select", { id: "filter-state", "aria-label": "state" },
    el("option", { value: "" }, "any state"), STATES.map((s) => el("option", { value: s }, s)));
  const flowFilter = el("select", { id: "filter-flow", "aria-label": "flow" }, el("option", { value: "" }, "any flow"));
  stateFilter.value = params.get("state") || "";
  const tbody = el("tbody", { id: "runs" });
  const flowSelect = el("select", { id: "start-flow", "aria-label": "flow to start" });
  const store = el("textarea", { id: "start-store", spellcheck: "false", "aria-label": "initial store" }, "{}");
  const startResult = el("div", { id: "start-result" });
  const flowsList = el("ul", { id: "flows" });
  const schedules = schedulesPanel();

  const start = async () => {
    startResult.replaceChildren();
    let body;
    try { body = JSON.parse(store.value || "{}"); } catch (e) {
      showError(startResult, new Error(`the initial store is not JSON: ${e.message}`));
      return;
    }
    try {
      const started = await api(`/v1/flows/${encodeURIComponent(flowSelect.value)}/runs`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      navigate(`/runs/${encodeURIComponent(started.run_id)}`);
    } catch (error) { showError(startResult, error); }
  };

  main.replaceChildren(
    el("div", { class: "grid" },
      el("div", {},
        el("section", { class: "panel" }, el("h2", {}, "Start a run"),
          el("div", { class: "filters" }, flowSelect),
          el("label", { class: "muted" }, "Initial store (JSON object, over the flow file's [store])"), store,
          el("div", { class: "filters", style: { marginTop: ".6rem" } }, el("button", { id: "start", onclick: start }, "Start")),
          startResult),
        el("section", { class: "panel" }, el("h2", {}, "Flows"), flowsList),
        schedules.panel),
      el("section", { class: "panel" }, el("h2", {}, "Runs"),
        el("div", { class: "filters" }, stateFilter, flowFilter, el("span", { class: "muted", id: "runs-count" })),
        el("table", {}, el("thead", {}, el("tr", {}, ["Run", "Flow", "State", "Created", "Exit reason"].map((h) => el("th", {}, h)))), tbody))));

  try {
    const flows = await api("/v1/flows");
    for (const flow of flows) {
      flowSelect.append(el("option", { value: flow.name }, flow.name));
      flowFilter.append(el("option", { value: flow.flow || flow.name }, flow.flow || flow.name));
      flowsList.append(el("li", {}, link(`/flows/${encodeURIComponent(flow.name)}`, flow.name),
        flow.flow ? el("span", { class: "muted" }, ` — ${flow.flow}, ${(flow.tasks || []).length} tasks`) : el("span", { class: "muted" }, ` — ${flow.error}`)));
    }
    flowFilter.value = params.get("flow") || "";
  } catch (error) { showError(flowsList, error); }

  const refresh = async () => {
    const query = new URLSearchParams();
    if (stateFilter.value) query.set("state", stateFilter.value);
    if (flowFilter.value) query.set("flow", flowFilter.value);
    query.set("limit", "200");
    try {
      const runs = await api(`/v1/runs?${query}`);
      tbody.replaceChildren(...runs.map((run) => el("tr", { "data-run": run.id },
        el("td", { class: "mono" }, link(`/runs/${encodeURIComponent(run.id)}`, run.id)),
        el("td", {}, run.flow), el("td", {}, badge(run.state)),
        el("td", { class: "muted" }, run.created_at), el("td", {}, run.exit_reason || ""))));
      document.getElementById("runs-count").textContent = `${runs.length} run(s)`;
    } catch (error) { showError(tbody, error); }
  };
  const onFilter = () => {
    const query = new URLSearchParams();
    if (stateFilter.value) query.set("state", stateFilter.value);
    if (flowFilter.value) query.set("flow", flowFilter.value);
    history.replaceState(null, "", query.toString() ? `/?${query}` : "/");
    refresh();
  };
  stateFilter.addEventListener("change", onFilter);
  flowFilter.addEventListener("change", onFilter);
  await refresh();
  await schedules.refresh();
  const timer = setInterval(() => { refresh(); schedules.refresh(); }, 2000);
  return () => clearInterval(timer);
}

// ---- one run ----------------------------------------------------------------------------

function bars(run) {
  // One bar per execute (RUNNING -> SUCCESS|FAILURE) and per revert (REVERTING -> …), from
  // the recorded history; an unfinished call runs to now.
  const now = Date.now();
  const out = [];
  for (const task of run.tasks) {
    for (const change of task.history) {
      if (change.from !== "RUNNING" && change.from !== "REVERTING") continue;
      const end = Date.parse(change.at);
      // A map's task has a bar per element call, each naming its element.
      out.push({ task: task.name, index: task.index, kind: change.from === "RUNNING" ? "execute" : "revert",
        outcome: change.to, start: end - change.duration_ms, end, element: change.element });
    }
    const last = task.history[task.history.length - 1];
    if (last && (task.state === "RUNNING" || task.state === "REVERTING") && !FINISHED.has(run.state)) {
      out.push({ task: task.name, index: task.index, kind: task.state === "RUNNING" ? "execute" : "revert",
        outcome: task.state, start: Date.parse(last.at), end: Math.max(now, Date.parse(last.at) + 1) });
    }
  }
  return out;
}

function timeline(run) {
  const all = bars(run);
  const origin = all.length ? Math.min(...all.map((b) => b.start)) : 0;
  const span = Math.max(1, (all.length ? Math.max(...all.map((b) => b.end)) : 1) - origin);
  const rows = run.tasks.map((task) => {
    const mine = all.filter((b) => b.index === task.index);
    // An ignored task never ran: its track says why instead of holding a bar.
    const why = task.result && typeof task.result.when === "string" ? `when ${task.result.when} was false`
      : task.result && typeof task.result.ignored_with === "string" ? `${task.result.ignored_with} was ignored` : "";
    const track = task.state === "IGNORE"
      ? el("div", { class: "tl-track ignored", "data-ignored": task.name }, el("span", {}, why ? `ignored: ${why}` : "ignored"))
      : el("div", { class: "tl-track" }, mine.map((b) => el("div", {
      class: `bar ${b.kind} o-${b.outcome}`, "data-task": task.name, "data-kind": b.kind, "data-outcome": b.outcome,
      "data-element": typeof b.element === "number" ? b.element : null,
      title: `${task.name}${typeof b.element === "number" ? ` element ${b.element}` : ""} ${b.kind}: ${b.outcome}, ${(b.end - b.start).toFixed(1)} ms`,
      style: { left: `${((b.start - origin) / span) * 100}%`, width: `${Math.max(0.4, ((b.end - b.start) / span) * 100)}%` },
    })));
    const attempts = task.executions > 1 ? ` ×${task.executions}` : "";
    const took = typeof task.duration_ms === "number" ? `${task.duration_ms.toFixed(1)} ms` : "";
    return el("div", { class: "tl-row", "data-row": task.name },
      el("div", { class: "tl-name", title: task.name }, `${task.index + 1}. ${task.name}`),
      track,
      el("div", { class: "tl-meta" }, badge(task.state), attempts, el("div", {}, took)));
  });
  const legend = el("div", { class: "legend" },
    [["execute: success", "--success"], ["execute: failure", "--failure"], ["revert: reverted", "--reverted"],
      ["revert: failed", "--revert-failure"], ["in progress", "--running"], ["ignored", "--ignored"]].map(([label, color]) =>
      (() => { const span = el("span", {}, label); span.style.setProperty("--c", `var(${color})`); return span; })()));
  return el("div", { class: "timeline", id: "timeline", "data-bars": all.length },
    rows, legend, el("div", { class: "muted", style: { fontSize: ".75rem" } }, `${span.toFixed(1)} ms from the first call to the last`));
}

// The mapped elements panel, or null when the run has no map: each map task's element calls
// by state, and the first of them one by one (a list of thousands shows its counts).
function mapped(run) {
  const elements = run.elements || [];
  if (!elements.length) return null;
  const names = new Map(run.tasks.map((t) => [t.index, t.name]));
  const counts = new Map();
  for (const e of elements) {
    const key = `${names.get(e.index)} ${e.state}`;
    counts.set(key, (counts.get(key) || 0) + 1);
  }
  const shown = elements.slice(0, 200);
  return el("section", { class: "panel", id: "mapped" }, el("h2", {}, "Mapped elements"),
    el("p", { class: "muted" }, [...counts].map(([key, n]) => `${key}: ${n}`).join(" · ")),
    el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "task"), el("th", {}, "element"), el("th", {}, "state"), el("th", {}, "error"))),
      el("tbody", {}, shown.map((e) => el("tr", { "data-element": e.element, "data-task": names.get(e.index) },
        el("td", {}, names.get(e.index)), el("td", {}, String(e.element)), el("td", {}, badge(e.state)),
        el("td", {}, e.error ? `${e.error.code}: ${e.error.message}` : ""))))),
    elements.length > shown.length ? el("p", { class: "muted" }, `and ${elements.length - shown.length} more`) : null);
}

// The failures panel, or null when nothing failed (the caller leaves it out).
function failures(run) {
  const failed = run.tasks.filter((t) => t.error || t.revert_error);
  if (!failed.length) return null;
  return el("section", { class: "panel", id: "failure" }, el("h2", {}, "What went wrong"),
    failed.map((task) => el("div", { class: "error", "data-failed-task": task.name },
      el("strong", {}, `task ${task.name} `), badge(task.state),
      task.error ? el("div", {}, `execute failed — ${task.error.code}: ${task.error.message}`) : null,
      task.error && task.error.details ? json(task.error.details) : null,
      task.revert_error ? el("div", {}, `revert failed — ${task.revert_error.code}: ${task.revert_error.message}`) : null,
      task.revert_error && task.revert_error.details ? json(task.revert_error.details) : null)));
}

// The waits panel of a WAITING run, or null: what each waiting task waits for (a signal, a
// due time) and, for a signal, its data and a button that sends it (`send(name, body)`).
function waits(run, send) {
  const waiting = run.tasks.filter((t) => t.state === "WAITING");
  if (!waiting.length) return null;
  return el("section", { class: "panel", id: "waiting" }, el("h2", {}, "Waiting"),
    waiting.map((task) => {
      const signal = task.result && typeof task.result.signal === "string" ? task.result.signal : null;
      const due = typeof task.retry_at === "number" ? ` until ${new Date(task.retry_at * 1000).toISOString()}` : "";
      const what = signal ? `signal ${signal}${due}` : task.result ? `a timer${due}` : `a signal or a timer${due}`;
      const data = el("textarea", { class: "mono", rows: 2, placeholder: "data, as JSON (empty: null)", "data-signal-data": signal || "" });
      return el("div", { "data-waiting-task": task.name },
        el("strong", {}, `task ${task.name} `), el("span", {}, `waits for ${what}`),
        signal ? el("div", {}, data, el("button", { class: "signal", "data-signal": signal,
          onclick: () => send(signal, data.value) }, `Send signal ${signal}`)) : null);
    }));
}

async function runPage(main, id) {
  let closed = false;
  let source = null;
  let pending = null;
  // What the last Resume / Cancel said; kept across the re-renders the events cause.
  let notice = null;
  const render = (run) => {
    const resume = el("button", { id: "resume", class: "secondary", disabled: FINISHED.has(run.state) || run.lease ? true : null,
      onclick: () => act("resume") }, "Resume");
    const cancel = el("button", { id: "cancel", disabled: FINISHED.has(run.state) ? true : null, onclick: () => act("cancel") }, "Cancel");
    // Suspend a run going on; revert a suspended one; restart a finished or suspended one
    // from a task (a new run, the tasks before it copied).
    const suspend = el("button", { id: "suspend", class: "secondary", disabled: ["PENDING", "RUNNING"].includes(run.state) ? null : true,
      onclick: () => act("suspend") }, "Suspend");
    const revert = el("button", { id: "revert", class: "secondary", disabled: run.state === "SUSPENDED" && !run.lease ? null : true,
      onclick: () => act("revert") }, "Revert");
    const restartable = run.state === "SUCCESS" || run.state === "SUSPENDED";
    const from = el("select", { id: "restart-from", "aria-label": "restart from task", disabled: restartable ? null : true },
      run.tasks.map((t) => el("option", { value: t.name }, t.name)));
    const restart = el("span", { class: "restart-from" }, from, el("button", { id: "restart", class: "secondary", disabled: restartable ? null : true,
      onclick: () => act("restart", { from: from.value }) }, "Restart from"));
    const store = run.redacted
      ? el("p", { class: "muted" }, "Store values are shown only with the token.")
      : run.final_store ? json(run.final_store) : el("p", { class: "muted" }, "No final store yet: the run has not finished.");
    main.replaceChildren(
      el("h1", {}, "Run ", el("span", { class: "mono" }, run.id), badge(run.state),
        el("span", { class: "muted" }, "flow "), link(`/flows/${encodeURIComponent(run.origin && run.origin.flow_path ? run.origin.flow_path.split("/").pop().replace(/\.toml$/, "") : run.flow)}`, run.flow),
        el("span", { class: "actions" }, resume, suspend, revert, cancel, restart)),
      el("div", { id: "action-result" }, notice),
      el("section", { class: "panel" }, el("h2", {}, "Timeline"), timeline(run)),
      failures(run) || "",
      waits(run, signal) || "",
      mapped(run) || "",
      el("div", { class: "grid" },
        el("section", { class: "panel" }, el("h2", {}, "Run"), el("div", { class: "kv" },
          el("span", { class: "muted" }, "created"), el("span", {}, run.created_at),
          el("span", { class: "muted" }, "updated"), el("span", {}, run.updated_at),
          el("span", { class: "muted" }, "finished"), el("span", {}, run.finished_at || "—"),
          el("span", { class: "muted" }, "exit"), el("span", { id: "exit-reason" }, run.exit_reason || "—"),
          el("span", { class: "muted" }, "resumed"), el("span", {}, `${run.resumes} time(s)`),
          el("span", { class: "muted" }, "held by"), el("span", {}, run.lease ? `${run.lease.host} pid ${run.lease.pid}` : "—"),
          run.restarted_from ? [el("span", { class: "muted" }, "restarts"), el("span", { id: "restarted-from" }, link(`/runs/${encodeURIComponent(run.restarted_from)}`, run.restarted_from))] : null,
          run.restarts && run.restarts.length ? [el("span", { class: "muted" }, "restarted as"),
            el("span", { id: "restarts" }, run.restarts.map((r) => link(`/runs/${encodeURIComponent(r)}`, r)))] : null)),
        el("section", { class: "panel" }, el("h2", {}, "Final store"), el("div", { id: "final-store" }, store))));
  };
  const act = async (verb, body) => {
    try {
      const options = body ? { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } } : { method: "POST" };
      const answer = await api(`/v1/runs/${encodeURIComponent(id)}/${verb}`, options);
      const said = {
        cancel: "Cancel requested: the run stops its task in flight and reverts what ran.",
        suspend: "Suspend requested: the tasks in flight finish, nothing new starts.",
        revert: "Reverting what ran.",
        resume: "Resumed.",
      };
      notice = verb === "restart"
        ? el("p", { class: "muted", "data-done": verb }, "Restarted as run ", link(`/runs/${encodeURIComponent(answer.run_id)}`, answer.run_id), ".")
        : el("p", { class: "muted", "data-done": verb }, said[verb]);
      if (verb === "resume" || verb === "revert") follow();
    } catch (error) {
      notice = el("div", {});
      showError(notice, error);
    }
    await load();
  };
  const signal = async (name, body) => {
    try {
      const answer = await api(`/v1/runs/${encodeURIComponent(id)}/signals/${encodeURIComponent(name)}`,
        { method: "POST", body, headers: { "Content-Type": "application/json" } });
      notice = el("p", { class: "muted", "data-done": "signal" }, answer.resumed
        ? `Signal ${name} sent: the run goes on.` : `Signal ${name} sent: the run takes it when it reaches its wait.`);
      follow();
    } catch (error) {
      notice = el("div", {});
      showError(notice, error);
    }
    await load();
  };
  let finished = false;
  const load = async () => {
    try {
      const run = await api(`/v1/runs/${encodeURIComponent(id)}`);
      finished = FINISHED.has(run.state);
      render(run);
    } catch (error) {
      if (closed) return;
      if (error.status === 404) { finished = true; notFound(main, `There is no run ${id}.`); }
      else showError(main, error);
    }
  };
  // Reload the record at most every 150 ms while events stream in.
  const soon = () => {
    if (pending || closed) return;
    pending = setTimeout(() => { pending = null; if (!closed) load(); }, 150);
  };
  const follow = () => {
    if (source) source.close();
    source = new EventSource(`/v1/runs/${encodeURIComponent(id)}/events`);
    source.addEventListener("task", soon);
    source.addEventListener("flow", soon);
    source.addEventListener("end", () => { source.close(); source = null; soon(); });
    // The stream refused (too many open) or cut: the ticker below reloads the record instead.
    source.onerror = () => { if (source) { source.close(); source = null; } };
  };
  await load();
  follow();
  let ticks = 0;
  const ticker = setInterval(() => {
    ticks += 1;
    const timelineNode = document.getElementById("timeline");
    if (timelineNode && document.querySelector(".bar.o-RUNNING, .bar.o-REVERTING")) soon();
    else if (!source && !finished && ticks % 4 === 0) soon();
  }, 500);
  return () => { closed = true; clearInterval(ticker); if (pending) clearTimeout(pending); if (source) source.close(); };
}

// ---- one flow ---------------------------------------------------------------------------

async function flowPage(main, name) {
  let flow;
  try { flow = await api(`/v1/flows/${encodeURIComponent(name)}`); } catch (error) {
    if (error.status === 404) notFound(main, `There is no flow ${name}.`);
    else showError(main, error);
    return () => {};
  }
  const tasks = flow.tasks || [];
  const node = (task, i) => el("div", { class: "node", "data-node": task.name },
    el("h3", {}, `${i + 1}. ${task.name}`),
    task.description ? el("div", { class: "muted", style: { fontSize: ".78rem", marginBottom: ".3rem" } }, task.description) : null,
    task.error ? el("div", { class: "error" }, task.error) : [
      el("div", { class: "io" }, el("b", {}, "requires "), (task.requires || []).join(", ") || "—"),
      (task.optional || []).length ? el("div", { class: "io" }, el("b", {}, "optional "), task.optional.join(", ")) : null,
      el("div", { class: "io" }, el("b", {}, "provides "), (task.provides || []).join(", ") || "—")]);
  // A flow whose every task waits for the one before it (a linear flow, or no `depends_on`
  // known) is drawn as a chain; any other as its dependency graph.
  const chain = tasks.every((task, i) => !task.depends_on ||
    (task.depends_on.length === (i ? 1 : 0) && (!i || task.depends_on[0] === tasks[i - 1].name)));
  let drawing, draw = () => {}, stop = () => {};
  if (chain) {
    // Each step carries the arrow leading into it, so a wrapped chain starts its line with one.
    drawing = el("div", { class: "chain", id: "chain" }, tasks.map((task, i) => el("div", { class: "step" },
      i > 0 ? el("div", { class: "arrow", "aria-hidden": "true" }, "→") : null, node(task, i))));
  } else {
    ({ drawing, draw, stop } = dependencyGraph(tasks, node));
  }
  main.replaceChildren(
    el("h1", {}, "Flow ", el("span", { class: "mono" }, flow.flow || flow.name), el("span", { class: "muted" }, flow.file)),
    flow.error ? el("div", { class: "error" }, flow.error) : el("section", { class: "panel" },
      el("h2", {}, chain ? "Tasks, in order" : "Tasks, each after those it depends on"), drawing),
    el("section", { class: "panel" }, el("h2", {}, "Initial store names"), el("p", { class: "mono" }, (flow.store || []).join(", ") || "—")),
    el("p", {}, link(`/?flow=${encodeURIComponent(flow.flow || flow.name)}`, "Runs of this flow")));
  draw();
  return stop;
}

// Tasks in columns, each one column right of the deepest task it depends on, with an arrow
// from every dependency (`depends_on`) to its dependent. The arrows are drawn over the laid
// out nodes (`draw`, once the drawing is in the page) and again whenever the window resizes.
function dependencyGraph(tasks, node) {
  const index = new Map(tasks.map((task, i) => [task.name, i]));
  const depth = [];
  const depthOf = (i) => {
    if (depth[i] === undefined) {
      depth[i] = 0; // a cycle cannot validate, but must not hang the page
      depth[i] = Math.max(0, ...(tasks[i].depends_on || []).filter((d) => index.has(d)).map((d) => depthOf(index.get(d)) + 1));
    }
    return depth[i];
  };
  const columns = [];
  tasks.forEach((task, i) => (columns[depthOf(i)] ||= []).push(node(task, i)));
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "edges");
  svg.setAttribute("aria-hidden", "true");
  const drawing = el("div", { class: "graph", id: "graph" }, svg,
    columns.map((nodes) => el("div", { class: "layer" }, nodes)));
  const draw = () => {
    const box = drawing.getBoundingClientRect();
    svg.setAttribute("width", drawing.scrollWidth);
    svg.setAttribute("height", drawing.scrollHeight);
    const marker = '<defs><marker id="arrowhead" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z"/></marker></defs>';
    svg.innerHTML = marker;
    for (const task of tasks) {
      const to = drawing.querySelector(`.node[data-node="${CSS.escape(task.name)}"]`).getBoundingClientRect();
      for (const dep of task.depends_on || []) {
        const fromNode = drawing.querySelector(`.node[data-node="${CSS.escape(dep)}"]`);
        if (!fromNode) continue;
        const from = fromNode.getBoundingClientRect();
        const left = box.left - drawing.scrollLeft, top = box.top - drawing.scrollTop;
        const x1 = from.right - left, y1 = from.top + from.height / 2 - top;
        const x2 = to.left - left, y2 = to.top + to.height / 2 - top;
        const bend = Math.max(20, (x2 - x1) / 2);
        const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
        path.setAttribute("d", `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`);
        path.setAttribute("marker-end", "url(#arrowhead)");
        path.setAttribute("data-from", dep);
        path.setAttribute("data-to", task.name);
        svg.append(path);
      }
    }
  };
  window.addEventListener("resize", draw);
  return { drawing, draw, stop: () => window.removeEventListener("resize", draw) };
}

// ---- routing ----------------------------------------------------------------------------

async function route() {
  stopPage();
  stopPage = () => {};
  const main = document.getElementById("main");
  const path = location.pathname;
  const run = path.match(/^\/runs\/([^/]+)$/);
  const flow = path.match(/^\/flows\/([^/]+)$/);
  const name = segment((run || flow || [])[1] || "");
  try {
    if ((run || flow) && name === null) {
      notFound(main, "This address is not a valid run or flow address: its percent-encoding is malformed.");
    } else if (run) {
      document.title = `run ${name} · flowhost`;
      stopPage = await runPage(main, name);
    } else if (flow) {
      document.title = `flow ${name} · flowhost`;
      stopPage = await flowPage(main, name);
    } else if (path === "/") {
      document.title = "runs · flowhost";
      stopPage = await runsPage(main);
    } else {
      notFound(main, "The console has no page at this address.");
    }
  } catch (error) {
    showError(main, error);
  }
}

// Whatever a page did not catch is shown, not left behind "Loading…".
function showUncaught(error) {
  const main = document.getElementById("main");
  if (main) showError(main, error instanceof Error ? error : new Error(String(error)));
}

document.addEventListener("DOMContentLoaded", () => {
  const input = document.getElementById("token");
  input.value = token();
  input.addEventListener("change", () => { localStorage.setItem("flowhost-token", input.value.trim()); route(); });
  window.addEventListener("popstate", route);
  window.addEventListener("unhandledrejection", (event) => { event.preventDefault(); showUncaught(event.reason); });
  window.addEventListener("error", (event) => showUncaught(event.error || event.message));
  route();
});
