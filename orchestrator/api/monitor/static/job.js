// The job page: live state, residual plot, log tail (all from the API's Server-Sent Events), controls,
// history and edits. Uses api/el/row/fill/flash/when/progressPercent from monitor.js.
"use strict";

const PLOT = {width: 720, height: 280, left: 56, right: 12, top: 12, bottom: 28};
const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
const SVG = "http://www.w3.org/2000/svg";
const LOG_KEEP = 200000;   // characters of log kept on the page
const REDRAW_MS = 250;

function startJobPage(jobId) {
  const state = {doc: null, run: null, series: {}, points: 0, log: null, desktopUrl: null};
  const monitored = seriesPanel(jobId);  // series.js

  const set = (id, text) => { document.getElementById(id).textContent = text ?? "-"; };

  async function refresh() {
    // two refreshes in flight can answer out of order: only the newest request may paint the page
    const mine = state.refreshes = (state.refreshes || 0) + 1;
    const doc = await api(`/jobs/${jobId}`);
    if (mine !== state.refreshes) return;
    state.doc = doc;
    const run = doc.runs_detail.find(r => r.id === doc.current_run) || {};
    if (state.run !== null && run.id !== state.run) { state.series = {}; state.points = 0; draw(); }
    state.run = run.id;
    if (run.id && monitored.run !== run.id) monitored.load(run.id).catch(err => flash(err.message, true));
    set("job-name", doc.name); set("job-state", doc.state + queuePlace(doc.queue)); set("job-owner", doc.owner);
    set("job-solver", doc.solver); set("job-nodes", (doc.nodes || []).join(", ") || "none");
    set("run-id", run.id); set("run-state", run.state); set("run-attempt", run.attempt);
    const p = run.progress;
    showProgress(p);
    document.body.dataset.jobState = doc.state;
    document.body.dataset.runState = run.state || "";
    for (const button of document.querySelectorAll("#controls button")) {
      button.disabled = !doc.allowed.includes(button.dataset.action);
    }
    const desktop = doc.desktop || {};
    set("desktop-state", desktop.state || "none");
    if (desktop.state === "ready" && !state.desktopUrl) {
      const info = await api(`/jobs/${jobId}/desktop`);
      state.desktopUrl = info.web_url || info.url;
      const link = document.getElementById("desktop-link");
      link.href = info.url;
      link.hidden = false;
    }
  }

  function showProgress(p) {
    const total = p && p.total ? ` of ${p.total}` : "";
    const pct = progressPercent(p);
    set("run-progress", p ? `${pct ? pct + ", " : ""}step ${p.step ?? "-"}${total}${p.converged ? " (converged)" : ""}`
                          : "-");
  }

  async function history() {
    const h = await api(`/jobs/${jobId}/history`);
    fill("runs", h.runs.map(r => row([r.id, r.state, r.attempt, r.revision, r.mode, when(r.started_at),
                                      when(r.ended_at), r.reason])));
    fill("revisions", h.revisions.map(r => row([r.revision, when(r.at), r.by,
                                               (r.changes || []).map(c => typeof c === "string" ? c : JSON.stringify(c))
                                                 .concat(r.files || []).join("; "), r.message])));
  }

  // -- the residual plot: one polyline per field, log10 of the residual against the step
  function addProgress(data) {
    if (data.run !== state.run || data.step === null || data.step === undefined) return;
    for (const [field, value] of Object.entries(data.residuals || {})) {
      if (!(value > 0)) continue;
      (state.series[field] = state.series[field] || []).push([data.step, Math.log10(value)]);
      state.points += 1;
    }
  }

  function draw() {
    const svg = document.getElementById("plot");
    const all = Object.values(state.series).flat();
    svg.replaceChildren();
    svg.dataset.points = String(state.points);
    if (!all.length) return;
    const xs = all.map(p => p[0]), ys = all.map(p => p[1]);
    const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
    const [y0, y1] = [Math.floor(Math.min(...ys)), Math.ceil(Math.max(...ys))];
    const w = PLOT.width - PLOT.left - PLOT.right, h = PLOT.height - PLOT.top - PLOT.bottom;
    const sx = x => PLOT.left + (x1 > x0 ? (x - x0) / (x1 - x0) : 0) * w;
    const sy = y => PLOT.top + (y1 > y0 ? (y1 - y) / (y1 - y0) : 0.5) * h;
    for (let decade = y0; decade <= y1; decade++) {   // one grid line and label per decade
      svg.appendChild(svgEl("line", {x1: PLOT.left, x2: PLOT.left + w, y1: sy(decade), y2: sy(decade), class: "grid"}));
      svg.appendChild(svgEl("text", {x: 4, y: sy(decade) + 4, class: "tick"}, `1e${decade}`));
    }
    svg.appendChild(svgEl("text", {x: PLOT.left, y: PLOT.height - 6, class: "tick"}, String(x0)));
    svg.appendChild(svgEl("text", {x: PLOT.left + w - 40, y: PLOT.height - 6, class: "tick"}, String(x1)));
    const legend = document.getElementById("plot-legend");
    legend.replaceChildren();
    Object.entries(state.series).forEach(([field, points], i) => {
      const colour = COLOURS[i % COLOURS.length];
      const coords = points.map(p => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
      svg.appendChild(svgEl("polyline", {points: coords, stroke: colour, fill: "none", "data-field": field,
                                         "data-count": points.length}));
      const key = el("span", `\u25a0 ${field}  `);
      key.style.color = colour;   // CSSOM, allowed by the page's style-src 'self'
      legend.appendChild(key);
    });
  }

  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // -- the log tail
  function followLog() {
    if (state.log) state.log.close();
    const pre = document.getElementById("log");
    pre.textContent = "";
    let size = 0;
    state.log = new EventSource(`${API}/jobs/${jobId}/logs/stream`);
    state.log.addEventListener("log", e => {
      const text = JSON.parse(e.data).text;
      const following = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40;
      pre.append(document.createTextNode(text));   // append, never re-set: a chunk costs its own size
      size += text.length;
      while (size > LOG_KEEP && pre.firstChild) {
        size -= pre.firstChild.textContent.length;
        pre.firstChild.remove();
      }
      if (following) pre.scrollTop = pre.scrollHeight;
    });
    state.log.addEventListener("end", () => { state.log.close(); state.log = null; });
    state.log.addEventListener("revoked", signedOut);
  }

  // the token behind the cookie was revoked: the server closed the stream; back to the login page
  function signedOut() { location.href = "/ui/login?next=" + encodeURIComponent(location.pathname); }

  // -- events: the stream drives everything live
  const eventList = document.getElementById("events");
  let pendingDraw = false, pendingSeries = false, pendingRefresh = null;
  function onEvent(event) {
    eventList.prepend(eventItem(event));
    while (eventList.children.length > 200) eventList.lastChild.remove();
    if (event.kind === "run.progress") {
      addProgress(event.data);
      if (event.data.run === state.run) showProgress(event.data);
      // at most a few redraws a second (a timer, not requestAnimationFrame: that one stops in background tabs)
      if (!pendingDraw) { pendingDraw = true; setTimeout(() => { pendingDraw = false; draw(); }, REDRAW_MS); }
      return;
    }
    if (event.kind === "run.series") {
      monitored.onEvent(event.data);
      if (!pendingSeries) { pendingSeries = true; setTimeout(() => { pendingSeries = false; monitored.draw(); }, REDRAW_MS); }
      return;
    }
    if (event.kind === "rule.fired") monitored.onRule(event);
    if (["job.state", "run.state", "run.created", "desktop", "control"].includes(event.kind)) {
      clearTimeout(pendingRefresh);
      pendingRefresh = setTimeout(() => refresh().then(history).catch(err => flash(err.message, true)), 100);
      if (event.kind === "run.state" && event.data.state === "RUNNING" && !state.log) followLog();
    }
  }

  function eventItem(event) {
    return el("li", `${new Date(event.ts * 1000).toLocaleTimeString()} ${event.kind} ${summary(event)}`);
  }

  function summary(event) {
    const d = event.data;
    if (event.kind === "run.progress") return `${d.run} step ${d.step}`;
    return ["run", "rule", "state", "action", "by", "reason", "message"].filter(k => d[k] !== undefined && d[k] !== null)
      .map(k => `${k}=${d[k]}`).join(" ");
  }

  async function start() {
    await refresh();
    await history();
    const past = await api(`/jobs/${jobId}/events.json?limit=10000`);
    // the stream resumes after the last of `past`: a state change that landed between the first snapshot and
    // `past` would otherwise never show (the page said LAUNCHING for a run long RUNNING)
    await refresh();
    past.filter(e => e.kind === "run.progress").forEach(e => addProgress(e.data));
    past.filter(e => e.kind === "rule.fired").forEach(e => monitored.onRule(e));
    past.filter(e => e.kind !== "run.series").slice(-200).forEach(e => eventList.prepend(eventItem(e)));
    draw();
    const after = past.length ? past[past.length - 1].id : "0-0";
    const events = new EventSource(`${API}/jobs/${jobId}/events?after=${encodeURIComponent(after)}`);
    for (const kind of ["job.created", "job.state", "run.created", "run.state", "run.progress", "run.series",
                        "rule.fired", "control",
                        "node.failed", "node.replaced", "desktop", "access.refused", "warning", "error", "sync.file",
                        "sync.conflict", "sync.skip", "sync.stats", "sync.state"]) {
      events.addEventListener(kind, e => onEvent(JSON.parse(e.data)));
    }
    events.addEventListener("end", () => events.close());
    events.addEventListener("revoked", () => { events.close(); signedOut(); });
    followLog();
  }

  for (const button of document.querySelectorAll("#controls button")) {
    button.addEventListener("click", async () => {
      const action = button.dataset.action;
      const question = `Terminate job ${jobId}? The solver stops and the nodes are released.`;
      if (action === "terminate" && !confirm(question)) return;
      try {
        await api(`/jobs/${jobId}/${action}`, {json: {}});
        flash(`${action}: sent`);
        await refresh();
      } catch (err) { flash(`${action}: ${err.message}`, true); }
    });
  }

  document.getElementById("edit-form").addEventListener("submit", async event => {
    event.preventDefault();
    const sets = document.getElementById("edit-sets").value.split("\n").map(s => s.trim()).filter(Boolean);
    try {
      await api(`/jobs/${jobId}/edit`, {json: {set: sets, live: document.getElementById("edit-live").checked,
                                               message: document.getElementById("edit-message").value}});
      flash("edit recorded");
      await history();
    } catch (err) { flash(`edit: ${err.message}`, true); }
  });

  start().catch(err => flash(err.message, true));
}
