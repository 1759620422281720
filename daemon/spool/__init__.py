"""The spool on disk: its folders and names (layout), the file-system primitives and checks,
the one-rename moves of a drop and a job (transitions), status writing, quarantine, crash
points, host leases, pause files, the folder watcher and the spool's health.

Imports only itself, config and the contract, and knows no HTTP path (tests/test_layers.py).
"""
