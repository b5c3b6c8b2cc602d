"""Live two-way file sync between run directories and the desktop work folder, and the results store.

How the pieces fit:
- service.py   SyncService (entry point `orchestrator.services: sync`): starts one detached process per job
               that has a consumer for it (a desktop; a node with its own disk), restarts it, forwards its
               events to the job's stream, asks it for a final pass on terminate. Controlled through files
               in <job>/.sync/ read and written via the backend.
- daemon.py    that process: inotify (watchdog) reports changed folders, a pass syncs them; every 3 s a
               full rescan is the safety net. runs/<run-id>/ <-> work/<run-id>/, one pair per run.
- engine.py    one pass of one pair: per-path state of both sides, the rules (one side changed -> copy or
               delete across; both -> same content or conflict, the desktop's copy kept beside), the quiet
               period for files still being written.
- tree.py      a side (the transport interface `Side`; `LocalSide` for the filesystem): scans, excludes.
- copy.py      moving bytes: `LocalCopier` (kernel copy, atomic temp+rename, appends in place),
               `RsyncCopier` (rsync deltas / --append-verify; over ssh for nodes with their own disks).
- confine.py   paths stay inside their root.
- results.py   the results store (interface + local folder) with a sha256 manifest, and downloads.
- remote.py    `RemoteSide`: a run directory on an ssh node with its own disk (one `find -printf` per scan,
               NUL-separated; argv-quoted commands for the rest) and `RemoteCopier` (rsync over the
               backend's ssh command with a multiplexed master; SFTP through the backend's file calls
               where rsync is missing).
- nodelink.py  for such nodes the daemon (--node) mirrors each node run directory into the engine's
               runs/<run> every 0.15 s, then the usual runs/ <-> work/ pair reaches the desktop. So the
               engine's copy is always current and a restart's stage_in never pushes a stale one back.

May import: cluster, store, model (and the per-job service contract in model.services).
"""
