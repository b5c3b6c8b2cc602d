"""The control surface: every user-facing operation (submit, control commands, edits, render, nodes, files,
desktop info) in one place; the CLI, the REST API and the monitor all call it.

The service (service.py) is the engine side; the HTTP client (remote.py) implements the same Protocol
(protocol.py) over the REST API. Effects on nodes run in workers, as tasks sent by name (worker/names.py).

The service's operations live in one module per concern, as plain functions whose first argument is the
service (the caller: who asks, their scope, the store, the settings, the task sender):

    service.py     ControlService: construction, scoping (resolve), the reads (status, overview, events,
                   follow, logs, history, usage), and one-line delegating methods for all the rest
    submission.py  submit one job or a sweep's members; the sweeps' listings
    steering.py    the control commands (pause, freeze, resume, restart, rerun, terminate) and edits, live
                   edits applied by a worker
    nodes.py       the node listing, drain/undrain, SSH host keys, the dry-run render
    files.py       a job's file manifest and downloads
    desktop.py     desktops (URL, password, tunnel), their access rules, the user's SSH keys
    notify.py      the user's notification targets, signing secret, test send and delivery log

Why functions and delegating methods rather than mixins or helper classes: a mixin would read attributes
another class defines, so no module could be understood alone; helper classes would each hold a copy of the
same few things (store, settings, user, sender) or a back-reference to the service anyway. A function that
takes the service uses only its public members (store, settings, user, admin, scoped, address, send, job,
resolve, status), so each module reads on its own; and ControlService still lists every operation, with
its docstring, in one place, so callers (and the Control protocol) see one object.
"""
