"""The admin task monitor: server-rendered pages under /ui over the REST API (no front-end build).

May import: the API's shared dependencies (api.deps, api.jobs), control and model.
"""
