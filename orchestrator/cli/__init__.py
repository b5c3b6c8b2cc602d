"""The `e2e` command line: one code path over two transports (the in-process control surface, or the REST
API through `--server`).

May import: model, control, worker (to start the embedded stack), desktop's client side. Never a cluster
backend.
"""
