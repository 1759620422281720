"""A job's life: the inbox scan and staging of a drop (intake), accepting it, the job file,
the checks and the run message before an attempt starts (policy), how an attempt ends, and
recovery after a crash.

Never imports the fronts, the read model, delivery or the outbox (tests/test_layers.py).
"""
