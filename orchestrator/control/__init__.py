"""The control surface: every user-facing operation (submit, control commands, edits, render, nodes, files,
desktop info) in one place; the CLI, the REST API and the monitor all call it.

May import: model, store, and the worker's task names (effects on nodes run as tasks, never here).
"""
