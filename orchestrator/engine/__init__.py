"""The engine: what each transition does on the nodes (provision, launch, observe, stop, terminate) and the
reconcile pass that drives them.

May import: model, store, cluster, desktop, sync, and the solver plugins through their registry.
Never imported by the faces (cli, api) directly: they go through `orchestrator.control`.
"""
