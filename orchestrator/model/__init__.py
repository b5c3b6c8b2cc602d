"""The model: the user's contract and the engine's vocabulary (spec and its monitor rules, states, commands,
events, errors, paths, settings, typed records, the template renderer and the per-job service contract).

Pure data and pure functions. May import: nothing of the engine (only the standard library, pydantic,
jinja2 and `solvers.base`, the plugin contract).
"""
