"""The vidspool host process: spool, watcher, scheduler, worker supervision, status, API, CLI.

Never imports torch, diffusers or TTS (tests/test_no_torch.py proves it).
"""

__version__ = "0.1.0"
