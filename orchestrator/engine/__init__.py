"""The engine: what each transition does on the nodes (provision, launch, observe, stop, terminate) and what
drives them: the host's run watcher (rings when a run writes or ends) and the safety net's sweeps.

May import: model, store, cluster, desktop, sync, and the solver plugins through their registry.
Never imported by the faces (cli, api) directly: they go through `orchestrator.control`.
"""
