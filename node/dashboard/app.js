// bacnode's dashboard: reads the node's own API (the same one the CLIs use) and renders it.
// No build step and nothing fetched from elsewhere. Text from jobs and nodes (names, logs,
// labels) comes from strangers, so it only ever goes into the page as text, never as HTML.
"use strict";

const API = "/api/v1";
const REFRESH_MS = 3000;
const KEY_STORAGE = "bacnode-api-key";
const EXECUTION_STATES = {
  1: "New", 2: "AskForBid", 5: "BidAccepted", 6: "Running", 7: "Publishing",
  8: "BidRejected", 9: "Completed", 10: "Failed", 11: "Cancelled",
};
const TERMINAL_JOB_STATES = new Set(["Completed", "Failed", "Stopped"]);
const QUEUE_SAMPLES = 60;

let refreshTimer = null;
let logStream = null;
const queueDepth = [];  // queue depth samples (Pending + Queued), one a refresh

// --- DOM and API helpers -----------------------------------------------------------------

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svgEl(tag, attributes) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  return node;
}

class KeyNeeded extends Error {}

async function api(path, options = {}) {
  const headers = {};
  const key = localStorage.getItem(KEY_STORAGE);
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch(API + path, { ...options, headers });
  if (response.status === 401) throw new KeyNeeded();
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).Message || message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return options.raw ? response : response.json();
}

function askForKey() {
  const form = document.getElementById("key-form");
  form.hidden = false;
  form.onsubmit = (event) => {
    event.preventDefault();
    localStorage.setItem(KEY_STORAGE, document.getElementById("key-input").value.trim());
    form.hidden = true;
    route();
  };
}

function stateSpan(state) {
  return el("span", { class: `state state-${state}` }, state);
}

function shortId(id) {
  return id && id.length > 20 ? `${id.slice(0, 8)}…${id.slice(-6)}` : id || "";
}

function nsToDate(ns) { return new Date(Number(ns) / 1e6); }

function when(ns) {
  if (!ns) return "";
  return nsToDate(ns).toLocaleString();
}

function formatBytes(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = Number(bytes) || 0;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

function jobImage(job) {
  const task = (job.Tasks || [])[0] || {};
  const engine = task.Engine || {};
  const params = engine.Params || {};
  const command = [...(params.Entrypoint || []), ...(params.Parameters || [])].join(" ");
  return engine.Type === "docker" ? `${params.Image} ${command}`.trim() : engine.Type;
}

// --- pages -------------------------------------------------------------------------------

async function overviewPage(main) {
  const [nodes, jobs] = await Promise.all([
    api("/orchestrator/nodes"), api("/orchestrator/jobs?limit=1000"),
  ]);
  const items = jobs.Items || [];
  const waiting = items.filter((job) => ["Pending", "Queued"].includes(job.State.StateType)).length;
  queueDepth.push(waiting);
  if (queueDepth.length > QUEUE_SAMPLES) queueDepth.shift();
  main.replaceChildren(
    activitySection(items, waiting),
    nodesSection(nodes.Nodes || []),
    jobsSection(items.slice(0, 20), "Recent jobs", false),
  );
}

async function jobsPage(main) {
  const jobs = await api("/orchestrator/jobs?limit=1000");
  main.replaceChildren(jobsSection(jobs.Items || [], "Jobs", true));
}

async function nodesPage(main) {
  const nodes = await api("/orchestrator/nodes");
  main.replaceChildren(nodesSection(nodes.Nodes || []));
}

function activitySection(jobs, waiting) {
  // Jobs created in each of the last 30 minutes.
  const minutes = 30;
  const now = Date.now();
  const perMinute = new Array(minutes).fill(0);
  for (const job of jobs) {
    const age = Math.floor((now - nsToDate(job.CreateTime).getTime()) / 60000);
    if (age >= 0 && age < minutes) perMinute[minutes - 1 - age] += 1;
  }
  const running = jobs.filter((job) => job.State.StateType === "Running").length;
  return el("section", { id: "activity" },
    el("h2", {}, "Activity"),
    el("div", { class: "cards" },
      el("div", { class: "card" },
        el("div", { class: "muted" }, "Jobs per minute, last 30 min"),
        el("div", { class: "figure", id: "jobs-last-minute" }, perMinute[minutes - 1]),
        barChart(perMinute)),
      el("div", { class: "card" },
        el("div", { class: "muted" }, "Queue depth (pending and queued)"),
        el("div", { class: "figure", id: "queue-depth" }, waiting),
        lineChart(queueDepth)),
      el("div", { class: "card" },
        el("div", { class: "muted" }, "Running now"),
        el("div", { class: "figure", id: "running-jobs" }, running))));
}

function barChart(values) {
  const svg = svgEl("svg", { class: "chart", viewBox: `0 0 ${values.length * 10} 70`,
                             preserveAspectRatio: "none" });
  const top = Math.max(1, ...values);
  values.forEach((value, index) => {
    const height = (value / top) * 66;
    svg.append(svgEl("rect", { x: index * 10 + 1, y: 70 - height, width: 8, height }));
  });
  return svg;
}

function lineChart(values) {
  const svg = svgEl("svg", { class: "chart", viewBox: `0 0 ${QUEUE_SAMPLES} 70`,
                             preserveAspectRatio: "none" });
  const top = Math.max(1, ...values);
  const points = values.map((value, index) => `${index},${68 - (value / top) * 64}`).join(" ");
  svg.append(svgEl("polyline", { points }));
  return svg;
}

function nodesSection(nodes) {
  const rows = nodes.map((state) => {
    const info = state.Info;
    const compute = info.ComputeNodeInfo || {};
    const free = compute.AvailableCapacity || {};
    const total = compute.MaxCapacity || {};
    const unavailable = compute.UnavailableEngines || {};
    const engines = (compute.ExecutionEngines || []).map((engine) => engine in unavailable
      ? el("span", { class: "state-unavailable", title: unavailable[engine] },
           `${engine} (unavailable: ${unavailable[engine]})`)
      : engine);
    const reputation = state.Reputation;
    const connection = state.ConnectionState || {};
    return el("tr", { "data-node": info.NodeID },
      el("td", { class: "mono", title: info.NodeID }, shortId(info.NodeID)),
      el("td", {}, info.NodeType),
      el("td", {}, stateSpan(state.Connection),
        connection.Transport ? el("span", { class: "muted transport" }, ` ${connection.Transport}`)
          : null),
      el("td", { class: "mono" },
        Object.entries(info.Labels || {}).map(([k, v]) => `${k}=${v}`).join(", ")),
      el("td", {}, compute.MaxCapacity
        ? `${free.CPU} / ${total.CPU} CPU · ${formatBytes(free.Memory)} / ${formatBytes(total.Memory)}`
        : "–"),
      el("td", {}, compute.RunningExecutions ?? "–"),
      el("td", {}, engines.length ? engines.flatMap((e, i) => (i ? [", ", e] : [e])) : "–"),
      el("td", {}, reputation
        ? `${reputation.Agreements}/${reputation.Disagreements}/${reputation.Withheld}/` +
          `${reputation.Failures}/${reputation.Timeouts} (${reputation.Score})`
        : "–"));
  });
  return el("section", { id: "nodes" },
    el("h2", {}, `Nodes (${nodes.length})`),
    el("table", {},
      el("thead", {}, el("tr", {}, ["ID", "Type", "Status", "Labels", "Free / capacity",
        "Running", "Engines", "Reputation A/D/W/F/T"].map((name) => el("th", {}, name)))),
      el("tbody", {}, rows)));
}

function jobsSection(jobs, title, filterable) {
  const body = el("tbody", {});
  const query = el("input", { id: "job-filter", placeholder: "filter: ID, name, image, state" });
  const stateSelect = el("select", { id: "job-state-filter" },
    el("option", { value: "" }, "any state"),
    ["Pending", "Queued", "Running", "Completed", "Failed", "Stopped"].map(
      (state) => el("option", { value: state }, state)));
  const saved = JSON.parse(sessionStorage.getItem("job-filter") || "{}");
  query.value = saved.text || "";
  stateSelect.value = saved.state || "";
  const render = () => {
    const text = query.value.trim().toLowerCase();
    sessionStorage.setItem("job-filter", JSON.stringify({ text: query.value, state: stateSelect.value }));
    body.replaceChildren(...jobs
      .filter((job) => !stateSelect.value || job.State.StateType === stateSelect.value)
      .filter((job) => !text || [job.ID, job.Name, jobImage(job), job.State.StateType]
        .join(" ").toLowerCase().includes(text))
      .map((job) => el("tr", { "data-job": job.ID },
        el("td", { class: "mono" }, el("a", { href: `#/jobs/${job.ID}` }, job.ID)),
        el("td", {}, job.Name || ""),
        el("td", { class: "mono" }, jobImage(job)),
        el("td", {}, stateSpan(job.State.StateType)),
        el("td", {}, (job.State.Verification || {}).State || ""),
        el("td", {}, when(job.CreateTime)))));
  };
  query.addEventListener("input", render);
  stateSelect.addEventListener("change", render);
  render();
  return el("section", { id: "jobs" },
    el("h2", {}, `${title} (${jobs.length})`),
    filterable ? el("div", { class: "filters" }, query, stateSelect) : null,
    el("table", {},
      el("thead", {}, el("tr", {}, ["ID", "Name", "Image / command", "State", "Verified",
        "Created"].map((name) => el("th", {}, name)))),
      body));
}

async function jobPage(main, jobId) {
  const base = `/orchestrator/jobs/${encodeURIComponent(jobId)}`;
  const [{ Job: job }, executions, history] = await Promise.all([
    api(base), api(`${base}/executions`), api(`${base}/history`),
  ]);
  let results = { Items: [] };
  let resultsNote = "";
  try {
    results = await api(`${base}/results`);
  } catch (error) {
    if (error instanceof KeyNeeded) throw error;
    resultsNote = error.message;
  }
  const state = job.State.StateType;
  const verification = job.State.Verification;
  const existing = document.getElementById("job-logs");
  const logs = existing && existing.dataset.job === job.ID ? existing : newLogView(job.ID);
  main.replaceChildren(
    el("section", { id: "job-summary" },
      el("h2", {}, "Job ", el("span", { class: "mono" }, job.ID)),
      el("dl", { class: "summary" },
        el("dt", {}, "State"), el("dd", { id: "job-state" }, stateSpan(state)),
        el("dt", {}, "Message"), el("dd", {}, job.State.Message || ""),
        el("dt", {}, "Name"), el("dd", {}, job.Name || "–"),
        el("dt", {}, "Type / count"), el("dd", {}, `${job.Type} × ${job.Count}`),
        el("dt", {}, "Runs"), el("dd", { class: "mono" }, jobImage(job)),
        el("dt", {}, "Created"), el("dd", {}, when(job.CreateTime)),
        el("dt", {}, "Modified"), el("dd", {}, when(job.ModifyTime)),
        el("dt", {}, "Verification"),
        el("dd", { id: "job-verification" }, verification
          ? [stateSpan(verification.State),
             ` (confidence ${verification.Confidence}${verification.Accepted
               ? `, accepted digest ${verification.Accepted.slice(0, 16)}…` : ""})`]
          : "not verified (a single result, believed as signed)"))),
    executionsSection(executions.Items || []),
    resultsSection(results.Items || [], resultsNote),
    el("section", {}, el("h2", {}, "Timeline"), timeline(history.Items || [], job.CreateTime)),
    el("section", {}, el("h2", {}, "Logs"), logs));
  if (!logs.dataset.started) followLogs(logs, base);
  return !TERMINAL_JOB_STATES.has(state);  // a finished job changes no more
}

function executionsSection(executions) {
  const rows = executions.map((execution) => {
    const state = EXECUTION_STATES[execution.ComputeState.StateType] || execution.ComputeState.StateType;
    const output = execution.RunOutput || {};
    return el("tr", { "data-execution": execution.ID },
      el("td", { class: "mono" }, execution.ID),
      el("td", { class: "mono", title: execution.NodeID }, shortId(execution.NodeID)),
      el("td", {}, stateSpan(state)),
      el("td", {}, execution.ComputeState.Message || ""),
      el("td", {}, output.ExitCode ?? ""),
      el("td", { class: "mono" }, publishedText(execution.PublishedResult)));
  });
  return el("section", { id: "job-executions" },
    el("h2", {}, `Executions (${executions.length})`),
    el("table", {},
      el("thead", {}, el("tr", {}, ["ID", "Node", "State", "Message", "Exit", "Published"]
        .map((name) => el("th", {}, name)))),
      el("tbody", {}, rows)));
}

function publishedText(result) {
  if (!result || !result.Type) return "";
  const params = result.Params || {};
  if (params.CID) return `ipfs://${params.CID}`;
  if (result.Type === "s3") return `s3://${params.Bucket}/${params.Key}`;
  if (params.URL) return params.URL;
  return result.Type;
}

function resultsSection(items, note) {
  return el("section", { id: "job-results" },
    el("h2", {}, "Results"),
    note ? el("p", { class: "muted" }, note) : null,
    items.length ? el("table", {},
      el("thead", {}, el("tr", {}, ["Where", "Execution", "Node", "Exit"]
        .map((name) => el("th", {}, name)))),
      el("tbody", {}, items.map((item) => el("tr", {},
        el("td", { class: "mono result-location" }, publishedText(item)),
        el("td", { class: "mono" }, item.ExecutionID),
        el("td", { class: "mono", title: item.NodeID }, shortId(item.NodeID)),
        el("td", {}, item.ExitCode)))))
      : el("p", { class: "muted" }, note ? "" : "none published yet"));
}

function timeline(events, createdNs) {
  const start = nsToDate(createdNs).getTime();
  return el("ol", { class: "timeline", id: "job-timeline" }, events.map((event) => {
    const at = new Date(event.Time).getTime();
    const change = event.JobState
      ? `job ${event.JobState.Previous} → ${event.JobState.New}`
      : event.ExecutionState
        ? `execution ${shortId(event.ExecutionID)} ${EXECUTION_STATES[event.ExecutionState.Previous] || "–"} → ` +
          `${EXECUTION_STATES[event.ExecutionState.New] || event.ExecutionState.New}`
        : "";
    return el("li", {},
      el("span", { class: "offset" }, `+${((at - start) / 1000).toFixed(3)} s`),
      `${change}: ${(event.Event || {}).Message || ""}`);
  }));
}

function newLogView(jobId) {
  return el("pre", { class: "logs", id: "job-logs", "data-job": jobId });
}

async function followLogs(view, base) {
  // Live: the API streams one JSON object a line as the containers write, until the job
  // ends (the same stream `bacnode logs -f` reads).
  view.dataset.started = "1";
  if (logStream) logStream.abort();
  logStream = new AbortController();
  try {
    const response = await api(`${base}/logs?follow=true`, { raw: true, signal: logStream.signal });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let pending = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pending += decoder.decode(value, { stream: true });
      const lines = pending.split("\n");
      pending = lines.pop();
      for (const line of lines) {
        if (!line.trim()) continue;
        const frame = JSON.parse(line);
        view.append(el("span", { class: frame.Type === 2 ? "stderr" : "stdout" }, frame.Line));
      }
    }
    view.dataset.done = "1";
    if (!view.textContent) view.append(el("span", { class: "muted" }, "(no output)"));
  } catch (error) {
    if (error.name !== "AbortError") view.append(el("span", { class: "stderr" }, `\n${error.message}`));
  }
}

// --- routing -----------------------------------------------------------------------------

function stopRefresh() {
  if (refreshTimer) clearTimeout(refreshTimer);
  refreshTimer = null;
}

async function route() {
  stopRefresh();
  const main = document.getElementById("main");
  const hash = location.hash.replace(/^#\/?/, "");
  const jobMatch = hash.match(/^jobs\/(.+)$/);
  if (!jobMatch && logStream) { logStream.abort(); logStream = null; }
  const render = jobMatch ? (m) => jobPage(m, decodeURIComponent(jobMatch[1]))
    : hash === "jobs" ? jobsPage : hash === "nodes" ? nodesPage : overviewPage;
  try {
    if ((await render(main)) !== false) refreshTimer = setTimeout(route, REFRESH_MS);
  } catch (error) {
    if (error instanceof KeyNeeded) { askForKey(); return; }
    main.replaceChildren(el("p", { class: "error" }, error.message));
    refreshTimer = setTimeout(route, REFRESH_MS);
  }
}

async function start() {
  try {
    const node = await api("/agent/node");
    document.getElementById("node-id").textContent = `node ${node.NodeID}`;
  } catch (error) {
    if (error instanceof KeyNeeded) { askForKey(); return; }
  }
  window.addEventListener("hashchange", () => {
    const logs = document.getElementById("job-logs");
    if (logs) logs.remove();
    route();
  });
  route();
}

start();
