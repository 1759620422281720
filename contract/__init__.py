"""What the daemon and the workers agree on, importable by both without either's insides:
error codes and spool errnos, the status document, the worker channel's messages, file
hashing and media types, what a job kind declares, which formats a media input may be, and
what a model folder holds.

Nothing here imports torch, aiohttp or the daemon; the daemon imports only this package,
`pipeline.kinds` (to validate jobs) and the worker's entry point (tests/test_layers.py).
"""
