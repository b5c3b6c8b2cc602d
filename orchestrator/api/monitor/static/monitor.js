// The monitor's pages: each reads and steers through the REST API with the session cookie. Data only ever
// reaches the DOM through textContent and attributes, never as HTML.
"use strict";

const API = "/api/v1";

async function api(path, options = {}) {
  const init = {credentials: "same-origin", ...options,
                headers: {"X-Requested-With": "e2e-monitor", ...(options.headers || {})}};
  if (options.json !== undefined) {
    init.method = init.method || "POST";
    init.body = JSON.stringify(options.json);
    init.headers["Content-Type"] = "application/json";
  }
  const reply = await fetch(path.startsWith("/ui/") ? path : API + path, init);
  if (reply.status === 401) { location.href = "/ui/login?next=" + encodeURIComponent(location.pathname); }
  const body = reply.headers.get("content-type")?.includes("json") ? await reply.json() : await reply.text();
  if (!reply.ok) {
    const problems = (body.problems || []).map(p => `${p.field}: ${p.message}`).join("; ");
    const extra = problems && !String(body.error).includes(problems) ? ` (${problems})` : "";
    throw new Error((body.error || reply.statusText) + extra);
  }
  return body;
}

function el(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function row(cells) {
  const tr = el("tr");
  for (const cell of cells) {
    const td = el("td");
    if (cell instanceof Node) td.appendChild(cell); else td.textContent = cell ?? "";
    tr.appendChild(td);
  }
  return tr;
}

function fill(tableId, rows) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren(...rows);
}

function flash(message, error = false) {
  const box = document.getElementById("flash");
  box.textContent = message;
  box.hidden = false;
  box.className = error ? "flash error" : "flash";
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Math.round(seconds), h = Math.floor(s / 3600), m = Math.floor(s % 3600 / 60);
  return `${h}:${String(m).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
}

// A run's progress as a percentage: 100% once the solver reports convergence (it stops before its total),
// else step/total; "" when neither is known. The same rule as Progress.fraction on the engine side.
function progressPercent(p) {
  if (!p) return "";
  if (p.converged) return "100%";
  if (p.step === null || p.step === undefined || !p.total) return "";
  return `${Math.round(100 * Math.max(0, Math.min(1, p.step / p.total)))}%`;
}

function when(epoch) { return epoch ? new Date(epoch * 1000).toLocaleString() : ""; }

function every(seconds, fn) {
  const tick = () => fn().catch(err => flash(err.message, true));
  tick();
  return setInterval(tick, seconds * 1000);
}

// -- jobs: the table of jobs, live (polled), with runtime and core-hours from /usage
let usageByJob = {}, lastJobs = [];

async function loadJobs() {
  lastJobs = await api("/jobs?limit=200");
  renderJobs();
  document.getElementById("jobs-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

// A queued job's place and expected start: " #2, starts ~14:05" (the engine's replay of its FIFO queue).
function queuePlace(place) {
  if (!place) return "";
  const where = place.position === null ? " (site scheduler)" : ` #${place.position}`;
  if (place.expected_start === null) return `${where} (no estimate: ${place.why})`;
  const at = new Date(place.expected_start * 1000).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"});
  return `${where}, starts ~${at}`;
}

function renderJobs() {
  fill("jobs", lastJobs.map(job => {
    const link = el("a", job.id, {href: `/ui/jobs/${job.id}`});
    const progress = job.run?.progress;
    const pct = progressPercent(progress) || (progress?.step ?? "");
    const used = usageByJob[job.id];
    const runtime = used ? used.attempts.reduce((sum, a) => sum + a.seconds, 0) : null;
    const tr = row([link, job.name, job.owner, job.solver, job.state + queuePlace(job.queue),
                    `${job.run?.id || ""} ${job.run?.state || ""}`,
                    pct, (job.nodes || []).length || "", duration(runtime), used ? used.core_hours.toFixed(4) : "",
                    used ? used.desktop_hours.toFixed(4) : ""]);
    tr.dataset.job = job.id;
    tr.dataset.state = job.state;
    tr.dataset.run = job.run?.state || "";
    return tr;
  }));
}

async function loadUsage() {
  const usage = await api("/usage");
  usageByJob = Object.fromEntries(usage.jobs.map(j => [j.id, j]));
  renderJobs();
  fill("usage", Object.entries(usage.users).map(([name, u]) =>
    row([name, u.jobs, u.core_hours.toFixed(4), u.desktop_hours.toFixed(4)])));
}

// -- submit: the spec text goes to /ui/submit (parsed there), then to the job's page
async function submitSpec(event) {
  event.preventDefault();
  const out = document.getElementById("submit-result");
  out.textContent = "submitting...";
  try {
    const reply = await api("/ui/submit", {json: {text: document.getElementById("spec").value}});
    if (reply.id) { location.href = `/ui/jobs/${reply.id}`; return; }
    out.textContent = `sweep ${reply.sweep}: ${reply.jobs.join(", ")}`;
  } catch (err) {
    out.textContent = err.message;
    out.className = "error";
  }
}

// -- nodes: state, job, load; admins drain and undrain
async function loadNodes() {
  const admin = document.body.dataset.admin === "yes";
  const nodes = await api("/nodes");
  fill("nodes", nodes.map(n => {
    const cells = [n.name, n.address, n.cores, n.state, n.job || "", n.load === null ? "" : n.load.toFixed(2),
                   n.reachable ? "yes" : `no: ${n.problem}`, n.drained ? n.drained.reason || "" : ""];
    if (admin) {
      const action = n.state === "drained" ? "undrain" : "drain";
      const button = el("button", action, {"data-node": n.name, "data-action": action});
      button.addEventListener("click", () => nodeAction(n.name, action));
      cells.push(button);
    }
    const tr = row(cells);
    tr.dataset.node = n.name;
    tr.dataset.state = n.state;
    return tr;
  }));
}

async function nodeAction(node, action) {
  try {
    await api(`/nodes/${encodeURIComponent(node)}/${action}`,
              {json: action === "drain" ? {reason: `drained from the monitor by ${document.body.dataset.user}`} : {}});
    flash(`${node}: ${action}ed`);
    await loadNodes();
  } catch (err) { flash(err.message, true); }
}

// -- workers and queues (admins)
async function loadWorkers() {
  const [workers, queues] = await Promise.all([api("/admin/workers"), api("/admin/queues")]);
  fill("workers", workers.workers.map(w =>
    row([w.name, w.pid, w.concurrency, w.processed, w.active.map(t => t.task).join(", ") || "idle"])));
  fill("queues", [row(["jobs waiting for nodes", queues.queued_jobs.length]),
                  ...Object.entries(queues.celery).map(([q, n]) => row([q, n])),
                  row(["unacknowledged (running) tasks", queues.unacked])]);
  fill("tasks", queues.tasks.map(t => row([t.task, t.succeeded, t.failed, t.retried, t.per_minute,
                                           t.failed_recently])));
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "jobs") { every(10, loadUsage); every(2, loadJobs); }
  if (page === "submit") document.getElementById("submit-form").addEventListener("submit", submitSpec);
  if (page === "nodes") every(5, loadNodes);
  if (page === "workers") every(5, loadWorkers);
  if (page === "job") startJobPage(document.body.dataset.job);  // job.js
});
