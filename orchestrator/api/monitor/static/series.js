// The job page's series panel: a chooser of the run's monitored series (function-object tables, .sta/.cvg,
// report files) and a small SVG plot of the chosen one, fed by GET /jobs/{id}/series and run.series events;
// and the list of monitor rules that fired (rule.fired events). Uses api/el/flash from monitor.js.
"use strict";

const SERIES_PLOT = {width: 720, height: 240, left: 64, right: 12, top: 12, bottom: 28};
const SERIES_KEEP = 5000;  // points kept per series on the page

// a value in a few characters: 4 significant digits, in exponent form when tiny or huge
function shortNumber(v) {
  if (typeof v !== "number") return String(v);
  const a = Math.abs(v);
  return a && (a < 1e-3 || a >= 1e6) ? v.toExponential(3) : String(Number(v.toPrecision(4)));
}

function seriesPanel(jobId) {
  const state = {run: null, points: {}, chosen: null, full: new Set()};
  const chooser = document.getElementById("series-name");
  const svg = document.getElementById("series-plot");

  function addName(name) {
    if (state.points[name]) return;
    state.points[name] = [];
    const option = el("option", name);
    option.value = name;
    chooser.appendChild(option);
    if (state.chosen === null) { state.chosen = name; chooser.value = name; }
    document.getElementById("series-count").textContent = `${chooser.options.length} series`;
  }

  function add(name, points) {
    addName(name);
    const kept = state.points[name];
    for (const p of points) {  // x only grows: a point the listing and an event both carried is kept once
      if (p[1] === null || !Number.isFinite(p[1]) || (kept.length && p[0] <= kept[kept.length - 1][0])) continue;
      kept.push(p);
    }
    if (kept.length > SERIES_KEEP) kept.splice(0, kept.length - SERIES_KEEP);
  }

  // the names first (with one point each), then only the chosen series in full: a long run with dozens of
  // series would otherwise send them all
  async function load(run) {
    state.run = run; state.points = {}; state.chosen = null; state.full = new Set();
    chooser.replaceChildren();
    const listing = await api(`/jobs/${jobId}/series?run=${encodeURIComponent(run)}&last=1`);
    for (const name of listing.names) addName(name);
    await fetchChosen();
  }

  async function fetchChosen() {
    const name = state.chosen, run = state.run;
    if (name === null || state.full.has(name)) { draw(); return; }
    const page = await api(`/jobs/${jobId}/series?run=${encodeURIComponent(run)}` +
                           `&name=${encodeURIComponent(name)}&last=${SERIES_KEEP}`);
    if (run !== state.run) return;
    state.full.add(name);
    const live = state.points[name] || [];  // what events brought meanwhile comes after the page
    state.points[name] = [];
    add(name, page.series[name] || []);
    add(name, live);
    draw();
  }

  function onEvent(data) {
    if (data.run !== state.run) return;
    for (const batch of data.series || []) add(batch.name, batch.points);
  }

  function draw() {
    svg.replaceChildren();
    const points = state.points[state.chosen] || [];
    svg.dataset.series = state.chosen || "";
    svg.dataset.points = String(points.length);
    if (!points.length) return;
    const xs = points.map(p => p[0]), ys = points.map(p => p[1]);
    const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
    let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
    if (y1 === y0) { y0 -= Math.abs(y0) * 0.01 || 1; y1 += Math.abs(y1) * 0.01 || 1; }
    const P = SERIES_PLOT, w = P.width - P.left - P.right, h = P.height - P.top - P.bottom;
    const sx = x => P.left + (x1 > x0 ? (x - x0) / (x1 - x0) : 0) * w;
    const sy = y => P.top + (y1 - y) / (y1 - y0) * h;
    for (let i = 0; i <= 4; i++) {  // five horizontal grid lines with their values
      const y = y0 + (y1 - y0) * i / 4;
      svg.appendChild(svgNode("line", {x1: P.left, x2: P.left + w, y1: sy(y), y2: sy(y), class: "grid"}));
      svg.appendChild(svgNode("text", {x: 4, y: sy(y) + 4, class: "tick"}, shortNumber(y)));
    }
    svg.appendChild(svgNode("text", {x: P.left, y: P.height - 6, class: "tick"}, String(x0)));
    svg.appendChild(svgNode("text", {x: P.left + w - 60, y: P.height - 6, class: "tick"}, String(x1)));
    const coords = points.map(p => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
    svg.appendChild(svgNode("polyline", {points: coords, stroke: "#1f77b4", fill: "none"}));
    const last = points[points.length - 1];
    document.getElementById("series-last").textContent = `\u2014 latest: x ${last[0]}, ${shortNumber(last[1])}`;
  }

  function svgNode(tag, attrs, text) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function onRule(event) {
    const d = event.data;
    const values = Object.entries(d.values || {}).map(([k, v]) => `${k}=${shortNumber(v)}`).join(" ");
    const item = el("li", `${new Date(event.ts * 1000).toLocaleTimeString()} ${d.run} rule ${d.rule} ` +
                          `(${d.when}) -> ${d.action}: ${d.reason} [${values}]`);
    document.getElementById("rules-fired").prepend(item);
  }

  chooser.addEventListener("change", () => {
    state.chosen = chooser.value;
    fetchChosen().catch(err => flash(err.message, true));
  });
  return {load, onEvent, onRule, draw, get run() { return state.run; }};
}
