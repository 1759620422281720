"""Webhooks: the service that sends a job's events (service), one delivery with its retries
(send), the HTTP client that will not reach a private address (http_client), and the check
of a webhook URL (urls).

Imports only itself, the spool package, config, logs and the contract (tests/test_layers.py).
"""
