"""Deliveries: copying a finished job's results into a preset's deliver_to folder (service)
and the files one delivery copies (files).

Imports only itself, the spool package, config, logs and the contract (tests/test_layers.py).
"""
