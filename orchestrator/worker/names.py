"""The Celery task names: the worker registers its tasks under these, and control sends them by these."""

from __future__ import annotations

PROVISION = "e2e.provision"    # (job_id): lease nodes, prepare the job, launch its first run
LAUNCH = "e2e.launch"          # (job_id, run_id): start a run (a restart's next attempt, a rerun)
SIGNALS = "e2e.signals"        # (job_id, run_id): apply a pause, freeze or resume to the run's processes
TERMINATE = "e2e.terminate"    # (job_id): stop the solver, collect results, release the nodes
RECONCILE = "e2e.reconcile"    # (): the safety net's tick: one slice of the due jobs (a full slice sends the next)
OBSERVE = "e2e.observe"        # (job_id): look at one job now (its run's watcher rang: it wrote or ended)
APPLY_LIVE = "e2e.apply_live"  # (job_id, run_id, request, old_spec, new_spec, files, by, deadline): a live edit
INVENTORY = "e2e.inventory"    # (): publish each configured backend's nodes, load and reachability (every 10 s)
NOTIFY = "e2e.notify"          # (task): one delivery of one notification to one target (webhook or email)
