"""The outbox once jobs have ended: a job's results, retention sweeps, the history of past
runs, the estimates drawn from it, and the index of the outbox's statuses.

Imports only itself, the spool package, config, logs and the contract (tests/test_layers.py).
"""
