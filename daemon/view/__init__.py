"""The read model: what the fronts and the CLI see of the daemon (readmodel), the event log,
the model view, hub downloads and host paths as answers show them.

Never imports the arbiter or the job-life package: it talks to the arbiter through
readmodel.Supervisor, a typed Protocol (tests/test_layers.py).
"""
