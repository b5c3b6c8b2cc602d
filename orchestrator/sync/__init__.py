"""Live two-way file sync between run directories and the desktop work folder, and the results store.

How the pieces fit:
- service.py   SyncService (entry point `orchestrator.services: sync`): starts one detached process per job
               on the head node, restarts it, forwards its events to the job's stream, asks it for a final
               pass on terminate. Controlled through files in <job>/.sync/ read and written via the backend.
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

Remote nodes (not built yet; needs the ssh backend): a `Side` whose scan runs on the node (one
`find -printf`/python call over the backend's connection), whose remove/rename/mkdir go through the backend,
and `RsyncCopier(remote_shell=<backend ssh argv>, host=<node address>, remote="src" or "dst")` for bytes.
Change detection for that side is the periodic rescan (or a watcher on the node streaming folder names).
"""
