// Browser notifications in the monitor: after the user clicks "Notify me" (browsers allow the permission
// prompt only on a user's gesture), the job page raises a desktop notification for its job's notable events
// (run started/completed/failed, desktop ready, rule fired, limit warning) from its own SSE stream, and the
// jobs page for any listed job whose current run completes or fails. Loaded on every page by base.html.
"use strict";

(function () {
  const API = "/api/v1";
  const page = document.body.dataset.page;
  if (!("Notification" in window) || (page !== "job" && page !== "jobs")) return;

  // the same notable events the engine's webhooks and email carry (orchestrator/model/notify.py)
  function notable(kind, data) {
    const state = data.state || "";
    if (kind === "run.state") return {RUNNING: "run started", COMPLETED: "run completed", FAILED: "run failed"}[state];
    if (kind === "job.state" && state === "FAILED") return "job failed";
    if (kind === "desktop" && state === "ready" && !data.message) return "desktop ready";
    if (kind === "warning" && data.limit) return `${data.limit} warning`;
    if (kind === "rule.fired") return `rule ${data.rule || ""} fired (${data.action || "notify"})`;
    return null;
  }

  function show(title, body, job) {
    const n = new Notification(title, {body: body || "", tag: `e2e-${job}-${title}`});
    n.onclick = () => { window.focus(); location.href = `/ui/jobs/${job}`; };
  }

  function watchJob(job) {
    const after = `${Date.now()}-0`;  // from now on: history is on the page already
    const stream = new EventSource(`${API}/jobs/${job}/events?after=${encodeURIComponent(after)}`);
    for (const kind of ["run.state", "job.state", "desktop", "warning", "rule.fired"]) {
      stream.addEventListener(kind, e => {
        const event = JSON.parse(e.data);
        const what = notable(kind, event.data || {});
        if (what) show(`Job ${job}: ${what}`, event.data.reason || event.data.message || event.data.run || "", job);
      });
    }
    stream.addEventListener("end", () => stream.close());
    stream.addEventListener("revoked", () => stream.close());
  }

  function watchJobs() {
    const seen = new Map();  // job id -> "run-id:STATE" of its current run
    async function poll() {
      try {
        const response = await fetch(`${API}/jobs?limit=100`, {credentials: "same-origin"});
        if (!response.ok) return;
        for (const job of await response.json()) {
          const run = job.run || {};
          const now = `${run.id}:${run.state}`;
          const before = seen.get(job.id);
          seen.set(job.id, now);
          if (before !== undefined && before !== now && (run.state === "COMPLETED" || run.state === "FAILED")) {
            show(`Job ${job.name || job.id}: run ${run.state.toLowerCase()}`, `${job.id} ${run.id}`, job.id);
          }
        }
      } catch (err) { /* the page's own refresh reports a lost connection */ }
    }
    poll();
    setInterval(poll, 5000);
  }

  function start() { if (page === "job") watchJob(document.body.dataset.job); else watchJobs(); }

  const button = document.createElement("button");
  button.id = "notify-me";
  button.type = "button";
  button.textContent = Notification.permission === "granted" ? "Notifications on" : "Notify me";
  button.disabled = Notification.permission !== "default";
  button.title = "desktop notifications for this page's jobs (run completed, failed, desktop ready, rules)";
  button.addEventListener("click", async () => {
    const answer = await Notification.requestPermission();
    button.textContent = answer === "granted" ? "Notifications on" : "Notifications blocked";
    button.disabled = true;
    if (answer === "granted") start();
  });
  const header = document.querySelector("header");
  if (header) header.append(button);
  if (Notification.permission === "granted") start();
})();
