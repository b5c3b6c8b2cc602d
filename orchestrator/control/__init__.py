"""The control surface: every user-facing operation (submit, control commands, edits, render, nodes, files,
desktop info) in one place; the CLI, the REST API and the monitor all call it.

The service (service.py) is the engine side; the HTTP client (remote.py) implements the same Protocol
(protocol.py) over the REST API. Effects on nodes run in workers, as tasks sent by name (worker/names.py).
"""
